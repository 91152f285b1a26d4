"""GET /openapi.json describes exactly the routes the app serves."""
from __future__ import annotations

import re

import orjson
import pytest
import schemathesis
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_urldispatcher import SystemRoute

from stimserver.web.app import create_app
from stimserver.web.openapi import NAME_PATTERN, build_openapi

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")
PUBLIC = {("GET", "/v1/health"), ("GET", "/openapi.json"), ("GET", "/metrics"),
          ("GET", "/v1/downloads/bakes/{user}/{repo_name}/{bake_name}/{checkpoint}")}  # a signed link


def operations(doc: dict):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method.upper(), path, op, item


def concrete(path: str) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: f"x-{m.group(1).replace('_', '-')}", path)


async def test_served_without_a_key_and_valid(client):
    r = await client.get("/openapi.json")
    assert r.status == 200 and r.content_type == "application/json"
    doc = orjson.loads(await r.read())
    assert doc["openapi"].startswith("3.")
    schemathesis.openapi.from_dict(doc).validate()  # against the OpenAPI meta-schema


async def test_every_route_is_an_operation_and_every_operation_a_route(settings):
    """Fails when a route is added without documenting it, or the document names a route that is gone."""
    app = create_app(settings)
    doc = build_openapi(settings)
    reached = set()
    for method, path, _op, item in operations(doc):
        match = await app.router.resolve(make_mocked_request(method, concrete(path), app=app))
        assert not isinstance(match.route, SystemRoute), f"{method} {path} is documented but not routed"
        route = match.route
        reached.add(route)
        declared = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"\{([^}]+)\}", path)), f"{method} {path}: path parameters"
        if route.method != "*":  # a real endpoint: same template, same path parameters
            assert route.resource.canonical == path
            assert set(match) == declared
    # HEAD mirrors GET: not listed; the viewer's pages and sign-in (/ui) are a browser app, not the API
    missing = sorted(f"{r.method} {r.resource.canonical}" for r in app.router.routes()
                     if r.method != "HEAD" and r not in reached and not r.resource.canonical.startswith("/ui"))
    assert not missing, f"routes missing from the OpenAPI document: {missing}"


def test_operations_declare_auth_errors_and_json(settings):
    doc = build_openapi(settings)
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        **doc["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearerAuth": []}]
    ids = set()
    for method, path, op, _ in operations(doc):
        assert op["operationId"] not in ids
        ids.add(op["operationId"])
        if (method, path) in PUBLIC:
            assert op["security"] == []
            continue
        assert "security" not in op  # the document-wide bearer requirement applies
        for status in ("401", "403", "422", "500"):
            assert op["responses"][status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}, (method, path, status)
        names = {(p["name"], p["in"]) for p in op["parameters"]}
        assert {("user_id", "query"), ("X-User-Id", "header")} <= names
        if "requestBody" in op:
            assert "413" in op["responses"]


def test_limits_come_from_the_settings(settings):
    from stimserver.config import Settings

    small = Settings.build(data_dir=settings.data_dir, master_key="k" * 20, max_page_size=50, default_page_size=10)
    op = build_openapi(small)["paths"]["/v1/repo/{repo_name}/targets/{target_name}/stim/output"]["get"]
    limit = next(p for p in op["parameters"] if p["name"] == "limit")["schema"]
    assert (limit["maximum"], limit["default"]) == (50, 10)


@pytest.mark.parametrize("name, ok", [("geo-1.v2_x", True), ("a", True), ("-a", False), ("a/b", False),
                                      ("x" * 129, False), ("x" * 128, True), ("a.", False), ("a.b", True),
                                      ("a..", False), ("a_", True)])
def test_name_pattern_matches_the_server_rule(name, ok):
    from stimserver.store.paths import name_problem

    assert bool(re.fullmatch(NAME_PATTERN.strip("^$"), name)) is ok
    assert (name_problem(name) is None) is ok


async def test_documented_answers_match_real_ones(client, make_job, master_headers):
    """A few answers checked by hand against their schemas (schemathesis checks many more)."""
    make_job(lines=3, user="admin", repo="demo", target="geo")
    doc = orjson.loads(await (await client.get("/openapi.json")).read())
    schema = schemathesis.openapi.from_dict(doc)
    for method, path, status in [("GET", "/v1/repo/demo/targets/geo/stim/output?limit=2", 200),
                                 ("GET", "/v1/repo/demo/targets/geo/stim", 200),
                                 ("GET", "/v1/repo/demo/targets/nope/stim", 404),
                                 ("GET", "/v1/repo/demo/targets/geo/stim/output?limit=0", 422),
                                 ("GET", "/v1/health", 200)]:
        r = await client.request(method, path, headers=master_headers)
        assert r.status == status
        template = "/v1/health" if path == "/v1/health" else "/v1/repo/{repo_name}/targets/{target_name}/stim" + (
            "/output" if "/output" in path else "")
        operation = schema[template][method]
        response_schema = operation.responses.find_by_status_code(status)
        assert response_schema is not None, (method, path, status)
        body = orjson.loads(await r.read())
        ref = doc["paths"][template][method.lower()]["responses"][str(status)]["content"]["application/json"]
        name = ref["schema"]["$ref"].rsplit("/", 1)[1]
        _check(doc, doc["components"]["schemas"][name], body)


def _check(doc: dict, schema: dict, value) -> None:
    """A small structural check: required fields present, types right (enough for these shapes)."""
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if value is None:
        assert schema.get("nullable"), schema
        return
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}
    if kind:
        assert isinstance(value, types[kind]), (schema, value)
    if kind == "object":
        for field in schema.get("required", []):
            assert field in value, (field, value)
        for field, sub in schema.get("properties", {}).items():
            if field in value:
                _check(doc, sub, value[field])


def test_config_and_generator_schemas_come_from_the_models(settings):
    from stimserver.schemas.generators import GENERATOR_FIELDS, GENERATOR_TYPES
    from stimserver.schemas.targets import ALIASES, CONFIG_FIELDS

    schemas = build_openapi(settings)["components"]["schemas"]
    assert tuple(schemas["TargetConfig"]["properties"]) == CONFIG_FIELDS
    assert set(schemas["TargetConfig"]["required"]) == set(CONFIG_FIELDS)  # answers always carry every field
    assert set(schemas["TargetOverrides"]["properties"]) == {*CONFIG_FIELDS, *ALIASES}
    union = schemas["TargetOverrides"]["properties"]["generators"]["items"]
    assert union["discriminator"]["propertyName"] == "type"
    assert set(union["discriminator"]["mapping"]) == set(GENERATOR_TYPES)
    for target in union["discriminator"]["mapping"].values():
        variant = schemas[target.rsplit("/", 1)[1]]
        assert set(variant["properties"]) == set(GENERATOR_FIELDS)
        assert variant["additionalProperties"] is False and "numq" in variant["properties"]
    assert schemas["OneshotQsGenerator"]["required"] == ["type", "numq"]
    assert schemas["HardcodedGenerator"]["required"] == ["type", "questions"]


def test_no_openapi_3_1_leftovers(settings):
    """pydantic writes JSON Schema 2020-12; the document must be 3.0.3 (nullable, no const, no null type)."""
    text = orjson.dumps(build_openapi(settings)).decode()
    assert '"const"' not in text and '{"type":"null"}' not in text and "$defs" not in text
    assert '"ge":' not in text and '"le":' not in text  # constraints pydantic could not place


def test_writes_document_507_and_the_fresh_start(settings):
    """A full disk answers 507 on every operation that stores something; DELETE …/stim/output is documented."""
    doc = build_openapi(settings)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("post", "put") and "requestBody" in op:
                assert "507" in op["responses"], (method, path)
    stim = doc["paths"]["/v1/repo/{repo_name}/targets/{target_name}/stim"]
    assert "507" in stim["post"]["responses"] and "resumes" in stim["post"]["description"]
    discard = doc["paths"]["/v1/repo/{repo_name}/targets/{target_name}/stim/output"]["delete"]
    assert set(discard["responses"]) >= {"200", "404", "409"} and "line 0" in discard["description"]
    assert doc["paths"]["/v1/repo"]["post"]["responses"]["507"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"}


def test_the_document_states_the_non_blank_and_integer_rules():
    """Fuzzer finding: '' was allowed by the document for base_model, a message role and a target template,
    and no integer had a maximum: each rule is now stated where the server keeps it."""
    from stimserver.api.paging import MAX_QUERY_INT
    from stimserver.config import Settings
    from stimserver.web.openapi import build_openapi

    doc = build_openapi(Settings())
    schemas = doc["components"]["schemas"]
    for model, field in (("RepoCreate", "base_model"), ("Message", "role"), ("TargetCreate", "template")):
        prop = schemas[model]["properties"][field]
        prop = next((s for s in prop.get("anyOf", [prop]) if s.get("type") == "string"), prop)
        assert prop.get("minLength") == 1 and prop.get("pattern") == r"\S", (model, field, prop)
    for path, item in doc["paths"].items():
        for op in (v for k, v in item.items() if k in ("get", "post", "put", "delete")):
            for param in op.get("parameters", []):
                if param["schema"].get("type") == "integer":
                    assert param["schema"].get("maximum", 0) <= MAX_QUERY_INT and "maximum" in param["schema"], (
                        path, param["name"])
