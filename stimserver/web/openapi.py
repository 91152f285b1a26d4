"""The OpenAPI 3 document of the API, built from the settings and served at GET /openapi.json.

Built in code rather than kept as a JSON file so the limits it states (page size, body
size) are the ones the server enforces. ``tests/web/test_openapi.py`` keeps it true: every
route of the app's router must be an operation here and every operation must reach a
route, with the same path parameters; schemathesis then checks the answers against it.

Component schemas are generated from the pydantic models in ``schemas/`` (converted to
OpenAPI 3.0.3 by ``to_openapi30``), so the document and the parser cannot disagree.

Conventions: every operation but the public ones (health, this document, metrics)
needs the bearer key and takes the user override (``user_id`` / ``X-User-Id``, master
key only). Errors are ``Error`` objects; 422 adds ``detail``. HEAD mirrors each GET and
is not listed. Bakes, recipes, the repo tree and the signed checkpoint downloads are in
``openapi_bakes.py`` (the download route is public: its link is its permission). The
viewer's pages and its sign-in under ``/ui`` are a browser app, not part of the API, and
are not listed (docs/viewer.md).
"""
from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from .. import __version__
from ..api.keys import OPENAPI
from ..api.paging import MAX_QUERY_INT
from ..config import Settings
from ..schemas.base import NAME_PATTERN
from ..schemas.openapi import component_schemas
from .openapi_bakes import bake_paths, bake_schemas  # issue 26's operations, in a module of their own
from .openapi_estimate import estimate_paths, estimate_schemas  # issue 28's rollout estimate
from .openapi_outputs import output_paths, output_schemas  # issue 11's operations, in a module of their own
from .openapi_parts import (
    INT,
    JSON,
    STR,
    B,
    R,
    T,
    int_query,
    nullable,
    ok,
    operation,
    path_param,
    ref,
)

__all__ = ["NAME_PATTERN", "build_openapi", "openapi_bytes", "routes"]

def _schemas(settings: Settings) -> dict[str, Any]:
    return {**component_schemas(max_page_size=settings.max_page_size), **output_schemas(), **bake_schemas(),
            **estimate_schemas()}


def _paths(settings: Settings) -> dict[str, dict[str, Any]]:
    page_query = [
        int_query("offset", minimum=0, default=0, description="first line of the page"),
        int_query("limit", minimum=1, maximum=settings.max_page_size, default=settings.default_page_size,
                   description="lines per page"),
    ]
    repo_list_query = [
        {"name": "include_metadata", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
         "description": "true: a page of {repo_name, base_model} objects (offset/limit apply)"},
        int_query("offset", minimum=0, default=0, description="with include_metadata: first repo of the page"),
        {**int_query("limit", minimum=1, description=f"with include_metadata: repos per page (at most "
                      f"{settings.max_page_size}; default: all)"),
         "schema": nullable({**INT, "minimum": 1, "maximum": MAX_QUERY_INT})},
    ]
    created = {201: ok("RepoResponse", "Created"), 200: ok("RepoResponse", "Exists already, identical")}
    kind = "stim"
    paths: dict[str, dict[str, Any]] = {
        "/v1/health": {"get": operation("health_check", "Health", "health", {200: ok("Health")}, public=True)},
        "/openapi.json": {"get": operation("openapi", "This OpenAPI document", "operations",
                                            {200: ok({"type": "object"})}, public=True)},
        "/metrics": {"get": operation("metrics", "Prometheus metrics (text exposition format)", "operations",
                                       {200: {"description": "OK", "content": {"text/plain": {"schema": STR}}}},
                                       public=True)},
        "/v1/repo": {
            "get": operation("repo_list", "List repos", "repos",
                              {200: ok({"anyOf": [ref("RepoList"), ref("PaginatedRepoList")]},
                                        "RepoList, or PaginatedRepoList with include_metadata=true")},
                              query=repo_list_query),
            "post": operation("repo_create", "Create a repo", "repos", created, body="RepoCreate", errors=(409,)),
            "put": operation("repo_set", "Create a repo (deprecated)", "repos", {200: ok("RepoResponse")},
                              body="RepoCreate", errors=(409,), deprecated=True),
        },
        R: {"get": operation("repo_get", "Get a repo", "repos", {200: ok("RepoResponse")}, errors=(404,))},
        R + "/prompts": {
            "get": operation("prompts_list", "List prompts", "prompts", {200: ok("PromptList")}, errors=(404,)),
            "post": operation("prompts_create", "Create a prompt", "prompts",
                               {201: ok("PromptResponse", "Created"),
                                200: ok("PromptResponse", "Exists already, identical")},
                               body="PromptCreate", errors=(404, 409)),
        },
        R + "/prompts/batch": {
            "post": operation("prompts_create_batch", "Create prompts", "prompts", {200: ok("BatchResult")},
                               body="PromptBatch", errors=(404,)),
            "put": operation("prompts_batch_set", "Create or replace prompts (deprecated)", "prompts",
                              {200: ok("BatchResult")}, body="PromptBatch", errors=(404,), deprecated=True),
        },
        R + "/prompts/{prompt_name}": {
            "get": operation("prompts_get", "Get a prompt", "prompts", {200: ok("PromptResponse")}, errors=(404,)),
            "put": operation("prompts_set", "Create or replace a prompt (deprecated)", "prompts",
                              {200: ok("PromptResponse")}, body="PromptSet", errors=(404,), deprecated=True),
            "delete": operation("prompts_delete", "Delete a prompt (409 while a target names it)", "prompts",
                                 {200: ok("DeleteResponse")}, errors=(404, 409)),
        },
        R + "/targets": {
            "get": operation("targets_list", "List targets", "targets", {200: ok("TargetList")}, errors=(404,)),
            "post": operation("targets_create", "Create a target", "targets",
                               {201: ok("TargetResponse", "Created"),
                                200: ok("TargetResponse", "Exists already, identical")},
                               body="TargetCreate", errors=(404, 409)),
        },
        R + "/targets/batch": {
            "post": operation("targets_create_batch", "Create targets, in order", "targets",
                               {200: ok("BatchResult")}, body="TargetBatch", errors=(404, 409)),
            "put": operation("targets_batch_set", "Create targets, in order (deprecated)", "targets",
                              {200: ok("BatchResult")}, body="TargetBatch", errors=(404, 409), deprecated=True),
        },
        T: {
            "get": operation("targets_get", "Get a target", "targets", {200: ok("TargetResponse")}, errors=(404,)),
            "put": operation("targets_set", "Create a target (deprecated)", "targets", {200: ok("TargetResponse")},
                              body="TargetSet", errors=(404, 409), deprecated=True),
            "delete": operation("targets_delete", "Delete a target, stopping its job", "targets",
                                 {200: ok("DeleteResponse")}, errors=(404, 409)),
        },
        f"{T}/{kind}": {
            "post": operation(f"{kind}_run", "Run the target's stim job (idempotent; no body)", "stim",
                               {200: ok("JobResponse")}, errors=(404, 409, 507),
                               description="Queues the job and answers its state at once (complete already, when "
                                           "it finishes within about a second). While a job exists, answers its "
                                           "state and starts no other; a failed job resumes from its committed "
                                           "lines (same job_id) unless the target now asks for a different job. "
                                           "400: the target lacks generators or prompts."),
            "get": operation(f"{kind}_get", "Status of the target's stim job", "stim", {200: ok("JobResponse")},
                              errors=(404,)),
        },
        f"{T}/{kind}/output": {
            "get": operation(f"{kind}_get_output", "One page of the stim output", "stim", {200: ok("JobPage")},
                              query=page_query, errors=(404,),
                              description="Lines [offset, offset + limit). has_more is true while lines follow "
                                          "the page; a page past the end is empty."),
            "delete": operation(f"{kind}_delete_output", "Discard the stim job and its output (fresh start)",
                                 "stim", {200: ok("JobResponse")}, errors=(404, 409),
                                 description="Removes a complete or failed job with every line it wrote, so the "
                                             "next POST starts a new job from line 0; answers not_started. 409 "
                                             "while the job is pending or running. Not part of the Bread API."),
        },
        f"{T}/rollout": {
            "post": operation("rollout_run", "Run the target's rollout job (idempotent; no body)", "rollout",
                               {200: ok("RolloutResponse")}, errors=(404, 409, 507),
                               description="Queues one chat request per trajectory (num_traj_per_stimulus per "
                                           "stimulus of the target's complete stim job, whose output it freezes) "
                                           "and answers the job's state at once (complete already, when it finishes "
                                           "within about a second). While a job exists, answers its state: after "
                                           "complete it never mixes in a re-run stim job's stimuli (stim_outdated "
                                           "says so; DELETE …/rollout/output, then POST, for a fresh rollout). A "
                                           "failed job resumes from its committed lines on its own stimuli. 400: "
                                           "the stim job is not complete, or the target has no model_name."),
            "get": operation("rollout_get", "Status of the target's rollout job", "rollout",
                              {200: ok("RolloutResponse")}, errors=(404,)),
        },
        f"{T}/rollout/output": {
            "get": operation("rollout_get_output", "One page of the rollout output", "rollout",
                              {200: ok("RolloutGetOutputResponse")}, query=page_query, errors=(404,),
                              description="Trajectories [offset, offset + limit), in (stimulus_id, trajectory_id) "
                                          "order; has_more is true while lines follow the page."),
            "delete": operation("rollout_delete_output", "Discard the rollout job and its output (fresh start)",
                                 "rollout", {200: ok("RolloutResponse")}, errors=(404, 409),
                                 description="Removes a complete or failed rollout with every line it wrote, so the "
                                             "next POST starts a new one from the target's current stim output; "
                                             "answers not_started. 409 while the job is pending or running."),
        },
    }

    paths |= output_paths(kind) | output_paths("rollout")  # export, search, sample, stats
    paths |= bake_paths()  # bakes, recipes, the tree, downloads
    paths |= estimate_paths()  # the rollout's cost estimate
    for path, item in paths.items():
        names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
        if names and "parameters" not in item:  # the download route declares its own
            item["parameters"] = [path_param(name) for name in names]
    for path in (R + "/prompts/{prompt_name}", T, B):  # deleting is shown on another name than reading
        name = path.rsplit("{", 1)[1][:-1]
        paths[path]["delete"]["parameters"] = [{**path_param(name), "example": "retired"},
                                               *paths[path]["delete"]["parameters"]]
    return paths


# What a created resource is used with next: (the creating operation, the path prefix of the operations it
# links to, the path parameter its answer names, where the answer names it).
CREATED_LINKS = (("repo_create", R, "repo_name", "$response.body#/repo_name"),
                 ("prompts_create", R + "/prompts/{prompt_name}", "prompt_name", "$response.body#/prompt_name"),
                 ("targets_create", T, "target_name", "$response.body#/target_name"),
                 # a BakeResponse does not name its bake: the name is the one the request sent
                 ("bakes_create", B, "bake_name", "$request.body#/bake_name"))


def _operations(path_item: dict[str, Any]) -> list[dict[str, Any]]:
    return [op for method, op in path_item.items() if method in ("get", "put", "post", "delete", "patch")]


def with_links(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """OpenAPI links from each create to the operations on what it created (201 and 200 answers).

    A client generator can follow them, and so does schemathesis's stateful phase, which then runs the
    job, export and search operations on a target that exists instead of on random names (404s).
    """
    creates = {op["operationId"]: (path, op) for path, ops in paths.items() for op in _operations(ops)}
    for op_id, prefix, param, source in CREATED_LINKS:
        create_path, create = creates[op_id]
        links = {}
        for path, ops in paths.items():
            if not path.startswith(prefix) or path.startswith(prefix + "/batch"):
                continue
            names = re.findall(r"\{(\w+)\}", path)
            if param not in names or any(n != param and "{" + n + "}" not in create_path for n in names):
                continue  # the link can fill in only the new name and the create's own path parameters
            for op in _operations(ops):
                if op.get("deprecated"):
                    continue
                values = {n: (source if n == param else f"$request.path.{n}") for n in names}
                links[op["operationId"]] = {"operationId": op["operationId"], "parameters": values}
        for status in ("201", "200"):
            create["responses"][status]["links"] = links
    return paths


def build_openapi(settings: Settings) -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "stimserver",
            "version": __version__,
            "description": "Self-hosted, Bread-compatible stim server: repos, prompts, targets, stim and rollout "
                           "jobs and their paged output, bakes (training) and recipes. The official aibread client "
                           "works against it unchanged.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "tags": [{"name": t} for t in ("health", "repos", "prompts", "targets", "stim", "rollout", "bakes", "recipes",
                                        "operations")],
        "paths": with_links(_paths(settings)),
        "components": {
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "The master key (acts as any user with X-User-Id / user_id) or a user key made "
                               "with `stimserver keys create`"}},
            "schemas": _schemas(settings),
        },
    }


def openapi_bytes(settings: Settings) -> bytes:
    return orjson.dumps(build_openapi(settings))


routes = web.RouteTableDef()


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type=JSON)
