"""Repositories (API.md §5): create, list, get, and the bake tree.

    POST /v1/repo                  201 new, 200 existing (same or no base_model), 409 other base_model
    PUT  /v1/repo                  deprecated: the same, but 200 for a new repo too
    GET  /v1/repo                  {"repos": [names]}; include_metadata=true → a page with total
    GET  /v1/repo/{repo}           RepoResponse
    GET  /v1/repo/{repo}/tree      {"base_model", "bakes": {name: {status, config, checkpoints, model_name}},
                                   "edges": [["bake", child, "bake", parent], ...]} (handlers/recipes.py)

Every repo lives under the caller's user; another user's repo is simply absent (404).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ..api.errors import Conflict, NotFound
from ..api.jsonio import json_response, parse_body, read_json_object, unprocessable
from ..api.keys import IDENTITY, RECORDS, SETTINGS
from ..api.paging import int_param
from ..schemas.repos import RepoCreate
from ..schemas.targets import DEFAULT_BASE_MODEL
from ..schemas.validation import problem
from .context import repo_context
from .recipes import repo_tree

routes = web.RouteTableDef()

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def repo_response(record: dict[str, Any]) -> dict[str, Any]:
    return {"repo_name": record["repo_name"], "base_model": record["base_model"]}


async def _create(request: web.Request, *, new_status: int) -> web.Response:
    body = parse_body(RepoCreate, await read_json_object(request))
    name, base_model = body.repo_name, body.base_model
    user = request[IDENTITY].user
    record, created = request.app[RECORDS].create_repo(user, name, base_model or DEFAULT_BASE_MODEL)
    if not created and base_model is not None and record["base_model"] != base_model:
        raise Conflict(f"repo '{name}' already exists with base_model '{record['base_model']}'; "
                       "a repo's base_model cannot change (create a repo with another name)")
    return json_response(repo_response(record), new_status if created else 200)


@routes.post("/v1/repo")
async def create_repo(request: web.Request) -> web.Response:
    return await _create(request, new_status=201)


@routes.put("/v1/repo")
async def set_repo(request: web.Request) -> web.Response:
    return await _create(request, new_status=200)


def _bool_param(query: Mapping[str, str], name: str, default: bool) -> bool:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise unprocessable([problem(["query", name], f"must be true or false (got {raw[:40]!r})", "type_error.bool")])


@routes.get("/v1/repo")
async def list_repos(request: web.Request) -> web.Response:
    query = request.query
    with_metadata = _bool_param(query, "include_metadata", False)
    offset = int_param(query, "offset", 0, 0)
    limit = int_param(query, "limit", None, 1)  # no limit: every repo from offset on
    user = request[IDENTITY].user
    records = request.app[RECORDS]
    names = records.repo_names(user)
    if not with_metadata:
        return json_response({"repos": names})
    assert offset is not None
    if limit is not None:
        limit = min(limit, request.app[SETTINGS].max_page_size)
    page = names[offset:] if limit is None else names[offset:offset + limit]
    items = []
    for name in page:
        record = records.repo(user, name)
        if record is not None:
            items.append(repo_response(record))
    return json_response({
        "repos": items, "offset": offset, "limit": limit if limit is not None else max(len(page), 1),
        "has_more": offset + len(page) < len(names), "total": len(names),
    })


def _repo_record(request: web.Request) -> dict[str, Any]:
    ctx = repo_context(request)
    record = ctx.records.repo(ctx.user, ctx.repo)
    if record is None:  # repo_context saw it a moment ago; repos are never deleted, but be exact
        raise NotFound(f"repo '{ctx.repo}' not found")
    return record


@routes.get("/v1/repo/{repo_name}")
async def get_repo(request: web.Request) -> web.Response:
    return json_response(repo_response(_repo_record(request)))


@routes.get("/v1/repo/{repo_name}/tree")
async def get_tree(request: web.Request) -> web.Response:
    record = _repo_record(request)
    return json_response(await repo_tree(request, repo_context(request), record["base_model"]))
