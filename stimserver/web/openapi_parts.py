"""The building blocks of the OpenAPI document: path prefixes, common schemas, the error
answers and one operation's shape. ``openapi.py`` assembles the document from them and
``openapi_outputs.py`` adds the output operations (export, search, samples, stats).
"""
from __future__ import annotations

from typing import Any

from ..api.paging import MAX_QUERY_INT
from ..schemas.base import NAME_PATTERN
from ..schemas.openapi import REF_TEMPLATE

R = "/v1/repo/{repo_name}"
T = R + "/targets/{target_name}"
B = R + "/bakes/{bake_name}"

JSON = "application/json"

def ref(name: str) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=name)}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


STR = {"type": "string"}
INT = {"type": "integer"}
NAME = {"type": "string", "pattern": NAME_PATTERN, "maxLength": 128,
        "description": "letters, digits, '.', '_', '-'; starts with a letter or digit, does not end with '.'; "
                       "not 'batch'"}



ERRORS = {
    400: "Bad request: unparseable JSON, or a job that cannot run",
    401: "Missing, malformed, unknown or revoked API key",
    403: "A key other than the master key asked to act as another user",
    404: "No such repo / prompt / target / bake / checkpoint",
    409: "Conflicts with what exists (resources are immutable; a job is still writing)",
    413: "Request body larger than the limit (max_body_bytes)",
    422: "Invalid input: each bad field is named in detail",
    500: "Unexpected server error",
    507: "The disk is full: nothing was stored (x-should-retry: false; free space, then try again)",
}


def error(status: int, description: str | None = None) -> dict[str, Any]:
    return {"description": description or ERRORS[status], "content": {JSON: {"schema": ref("Error")}}}


def ok(schema: dict[str, Any] | str, description: str = "OK") -> dict[str, Any]:
    body = ref(schema) if isinstance(schema, str) else schema
    return {"description": description, "content": {JSON: {"schema": body}}}


EXAMPLES = {"repo_name": "demo", "target_name": "geo", "prompt_name": "teacher", "bake_name": "bake1"}


def path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": NAME, "example": EXAMPLES[name]}


NAME_OR_EMPTY = {"anyOf": [NAME, {"type": "string", "enum": [""]}]}  # empty: no override
USER_OVERRIDE = [
    {"name": "user_id", "in": "query", "required": False, "example": "admin", "schema": nullable(NAME_OR_EMPTY),
     "description": "act as this user (master key only); empty: no override. X-User-Id wins when both are sent"},
    {"name": "X-User-Id", "in": "header", "required": False, "schema": NAME_OR_EMPTY, "example": "admin",
     "description": "act as this user (master key only); empty: no override; wins over user_id"},
]


def int_query(name: str, *, minimum: int, maximum: int | None = None, default: int | None = None,
               description: str) -> dict[str, Any]:
    schema: dict[str, Any] = {**INT, "minimum": minimum, "maximum": MAX_QUERY_INT if maximum is None else maximum}
    if default is not None:
        schema["default"] = default
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def operation(op_id: str, summary: str, tag: str, responses: dict[int, dict[str, Any]], *,
               body: str | None = None, query: list[dict[str, Any]] | None = None, errors: tuple[int, ...] = (),
               public: bool = False, deprecated: bool = False, description: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    params = list(query or [])
    if not public:
        params += USER_OVERRIDE
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": ref(body)}}}
    all_responses = {str(status): resp for status, resp in responses.items()}
    if not public:
        for status in sorted({400, 401, 403, 422, 500, *errors, *((413, 507) if body else ())}):
            all_responses.setdefault(str(status), error(status))
    op["responses"] = dict(sorted(all_responses.items()))
    if public:
        op["security"] = []
    if deprecated:
        op["deprecated"] = True
    return op

