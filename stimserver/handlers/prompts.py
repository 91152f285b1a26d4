"""Prompts (API.md §6): named message lists, stored and returned verbatim.

    POST   {R}/prompts               201 new, 200 identical, 409 other content (prompts are immutable)
    GET    {R}/prompts               {"prompts": [names]}
    POST   {R}/prompts/batch         {"created": [...], "failed": {name: message}}; no overwrite
    PUT    {R}/prompts/batch         deprecated: the same, but create or update
    GET    {R}/prompts/{name}        PromptResponse
    PUT    {R}/prompts/{name}        deprecated: create or update → 200
    DELETE {R}/prompts/{name}        200 {"message"}; 409 while a target of the repo names it

Bodies are checked with ``schemas.prompts`` and stored as sent (messages verbatim).
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from ..api.errors import Conflict, NotFound
from ..api.jsonio import json_response, parse_body, read_json_object, same_json
from ..schemas.prompts import PromptBatch, PromptCreate, PromptSet
from ..schemas.targets import prompt_refs
from ..schemas.validation import Invalid, parse
from ..store.paths import check_name
from ..store.records import Records, now_iso
from .context import RepoContext, repo_context

routes = web.RouteTableDef()

BASE = "/v1/repo/{repo_name}/prompts"


def prompt_response(record: dict[str, Any]) -> dict[str, Any]:
    return {"prompt_name": record["prompt_name"], "messages": record["messages"], "tools": record.get("tools")}


def _new_record(name: str, messages: list[Any], tools: list[Any] | None) -> dict[str, Any]:
    return {"prompt_name": name, "messages": messages, "tools": tools, "created_at": now_iso()}


def _same(record: dict[str, Any], messages: list[Any], tools: list[Any] | None) -> bool:
    return same_json(record["messages"], messages) and same_json(record.get("tools"), tools)


def _save(ctx: RepoContext, name: str, messages: list[Any], tools: list[Any] | None, *, update: bool) -> bool:
    """Store a prompt; True if it was new. Raises Conflict when it differs and ``update`` is off."""
    record, created = ctx.records.create_prompt(ctx.user, ctx.repo, _new_record(name, messages, tools))
    if created or _same(record, messages, tools):
        return created
    if not update:
        raise Conflict(f"prompt '{name}' already exists with other content; prompts are immutable "
                       "(create one with a new name)")
    ctx.records.write_prompt(ctx.user, ctx.repo, {**_new_record(name, messages, tools),
                                                  "created_at": record.get("created_at"), "updated_at": now_iso()})
    return False


def _body(body: dict[str, Any], *, with_name: bool) -> tuple[str, list[Any], list[Any] | None]:
    """(name, messages, tools) as sent, after checking them; the name is '' for ``PUT …/{name}``."""
    if with_name:
        parse_body(PromptCreate, body)
    else:
        parse_body(PromptSet, body)
    return body.get("prompt_name") or "", body["messages"], body.get("tools")


async def _batch(request: web.Request, *, update: bool) -> web.Response:
    ctx = repo_context(request)
    prompts = parse_body(PromptBatch, await read_json_object(request)).prompts
    created: list[str] = []
    failed: dict[str, str] = {}
    for name, messages in prompts.items():
        try:
            parse(PromptCreate, {"prompt_name": name, "messages": messages}, ("body", "prompts", name))
        except Invalid as e:
            failed[name] = e.message
            continue
        try:
            _save(ctx, name, messages, None, update=update)
        except Conflict as e:
            failed[name] = e.message
        else:
            created.append(name)
    return json_response({"created": created, "failed": failed})


# The literal batch routes come before {prompt_name}: PUT …/prompts/batch matches both (API.md §1).
@routes.post(BASE + "/batch")
async def create_batch(request: web.Request) -> web.Response:
    return await _batch(request, update=False)


@routes.put(BASE + "/batch")
async def set_batch(request: web.Request) -> web.Response:
    return await _batch(request, update=True)


@routes.post(BASE)
async def create_prompt(request: web.Request) -> web.Response:
    ctx = repo_context(request)
    name, messages, tools = _body(await read_json_object(request), with_name=True)
    created = _save(ctx, name, messages, tools, update=False)
    return json_response(prompt_response(_load(ctx, name)), 201 if created else 200)


@routes.get(BASE)
async def list_prompts(request: web.Request) -> web.Response:
    ctx = repo_context(request)
    return json_response({"prompts": ctx.records.prompt_names(ctx.user, ctx.repo)})


def _load(ctx: RepoContext, name: str) -> dict[str, Any]:
    record = ctx.records.prompt(ctx.user, ctx.repo, name)
    if record is None:
        raise NotFound(f"prompt '{name}' not found in repo '{ctx.repo}'")
    return record


@routes.get(BASE + "/{prompt_name}")
async def get_prompt(request: web.Request) -> web.Response:
    ctx = repo_context(request)
    return json_response(prompt_response(_load(ctx, check_name(request.match_info["prompt_name"], "prompt_name"))))


@routes.put(BASE + "/{prompt_name}")
async def set_prompt(request: web.Request) -> web.Response:
    ctx = repo_context(request)
    name = check_name(request.match_info["prompt_name"], "prompt_name")
    _, messages, tools = _body(await read_json_object(request), with_name=False)
    _save(ctx, name, messages, tools, update=True)
    return json_response(prompt_response(_load(ctx, name)))


def targets_using(records: Records, user: str, repo: str, prompt: str) -> list[str]:
    users = []
    for target in records.target_names(user, repo):
        record = records.target(user, repo, target)
        if record is not None and prompt in prompt_refs(record.get("config") or {}).values():
            users.append(target)
    return users


@routes.delete(BASE + "/{prompt_name}")
async def delete_prompt(request: web.Request) -> web.Response:
    ctx = repo_context(request)
    name = check_name(request.match_info["prompt_name"], "prompt_name")
    async with ctx.records.references_locked(ctx.user, ctx.repo):
        _load(ctx, name)
        users = targets_using(ctx.records, ctx.user, ctx.repo, name)
        if users:
            raise Conflict(f"prompt '{name}' is used by target(s) {', '.join(users)}; delete them first")
        if not ctx.records.delete_prompt(ctx.user, ctx.repo, name):
            raise NotFound(f"prompt '{name}' not found in repo '{ctx.repo}'")
    return json_response({"message": f"Prompt '{name}' deleted successfully"})
