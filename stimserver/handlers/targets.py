"""Targets (API.md §7): a template plus overrides, frozen into a config at creation.

    POST   {R}/targets          201 new, 200 identical, 409 other config (targets are immutable)
    GET    {R}/targets          {"targets": [names]}
    POST   {R}/targets/batch    {"created", "failed"}; items in order, so one may template on another
    PUT    {R}/targets/batch    deprecated: the same
    GET    {T}                  {"target_name", "config"}
    PUT    {T}                  deprecated: body {template, overrides?}; like POST but 200 for new
    DELETE {T}                  stops the target's job, removes the target with its job files

A target record keeps ``template`` and the normalised ``overrides`` beside the
effective ``config``: repeating a request is recognised even after its template was
deleted. Bodies are parsed with ``schemas.targets``; creation then checks what the models
cannot see: that the named prompts and generator template files exist, that a stored
template file follows the generator's template rule, and that each LLM generator has a
model in the effective config (``config_problems``, the rule the job planner runs too).
Creation and deletion hold the repo's reference lock, so a prompt cannot disappear
between the check and the write (prompt deletion takes the same lock).
"""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ..api.errors import ApiError, Conflict, NotFound, ValidationError
from ..api.jsonio import json_response, parse_body, raise_422, read_json_object, same_json, unprocessable
from ..api.keys import JOB_CONTROL
from ..schemas.generators import GeneratorBase, template_files
from ..schemas.targets import (
    DEFAULT_TEMPLATE,
    RUN_SETTINGS,
    TargetBatch,
    TargetConfig,
    TargetCreate,
    TargetSet,
    config_problems,
    effective_config,
    missing_prompts,
    public_config,
)
from ..schemas.validation import Detail, Invalid, parse, problem
from ..store.errors import StoreError
from ..store.paths import TARGET_KINDS, check_name, name_problem, template_file_name
from ..store.records import now_iso
from .context import RepoContext, repo_context, target_context

routes = web.RouteTableDef()

BASE = "/v1/repo/{repo_name}/targets"


def target_response(record: dict[str, Any]) -> dict[str, Any]:
    return {"target_name": record["target_name"], "config": public_config(record.get("config"))}


def parse_target(item: Any, loc: tuple[str | int, ...] = ("body",), *,
                 name: str | None = None) -> tuple[str, str, dict[str, Any]]:
    """(target_name, template, stored overrides) of a create body or batch item; ``name`` comes from the path.

    Raises ``Invalid`` naming every problem.
    """
    body: TargetSet | TargetCreate
    if name is not None:
        body = parse(TargetSet, item, loc)
    else:
        body = parse(TargetCreate, item, loc)
        name = body.target_name
    return name, body.template, body.overrides.stored() if body.overrides is not None else {}


def _template_config(ctx: RepoContext, template: str) -> dict[str, Any]:
    if template == DEFAULT_TEMPLATE:
        return public_config(None)
    record = ctx.records.target(ctx.user, ctx.repo, template) if name_problem(template) is None else None
    if record is None:
        raise NotFound(f"Template '{template}' not found")
    return public_config(record.get("config"))


def _check_references(ctx: RepoContext, template: str, overrides: dict[str, Any],
                      config: dict[str, Any]) -> dict[str, str]:
    """422 for what the effective config needs and lacks; returns the template files to write."""

    def gen_loc(*rest: str | int) -> list[str | int]:  # generators sent, or inherited from the template
        return ["body", "overrides", *rest] if "generators" in overrides else ["body", "template"]

    def exists(prompt: str) -> bool:
        return ctx.records.prompt(ctx.user, ctx.repo, prompt) is not None

    try:
        parsed = parse(TargetConfig, config, ("body", "template"))
    except Invalid as e:  # only a template target stored before today's rules can fail here
        raise ValidationError(f"template '{template}' has a config that cannot be used: {e.message}",
                              detail=e.detail) from None
    detail: list[Detail] = []
    for field, prompt in missing_prompts(config, exists).items():
        if field in overrides:
            detail.append(problem(["body", "overrides", field], f"prompt '{prompt}' does not exist in repo "
                                  f"'{ctx.repo}'", "value_error.prompt_not_found"))
        else:
            detail.append(problem(["body", "template"], f"{field} '{prompt}' inherited from template "
                                  f"'{template}' does not exist in repo '{ctx.repo}'", "value_error.prompt_not_found"))
    for loc, msg in config_problems(parsed):
        detail.append(problem(gen_loc(*loc), msg, "value_error.missing"))
    files, _ = template_files(list(parsed.generators))
    to_write: dict[str, str] = {}
    for name, content in files.items():
        stored = ctx.records.template(ctx.user, ctx.repo, name)
        if content is None and stored is None:
            detail.append(problem(gen_loc("generators"), f"template file templates/{name} does not exist in "
                                  f"repo '{ctx.repo}'; send its template_content", "value_error.template_not_found"))
        elif content is not None and stored is not None and stored != content:
            raise Conflict(f"template file templates/{name} already exists in repo '{ctx.repo}' with other "
                           "content; give this template another template_path")
        elif content is not None and stored is None:
            to_write[name] = content
    for i, gen in enumerate(parsed.generators):
        detail.extend(_stored_template_problems(ctx, gen, gen_loc("generators", i, "template_path")))
    raise_422(detail)
    return to_write


def _stored_template_problems(ctx: RepoContext, gen: GeneratorBase, loc: list[str | int]) -> list[Detail]:
    """A template file named without content is checked by the generator's own template rule."""
    if gen.template_content is not None or gen.template_path is None:
        return []
    text = ctx.records.template(ctx.user, ctx.repo, template_file_name(gen.template_path))
    if text is None:
        return []  # reported above
    try:
        gen.check_template_text(text)
    except ValueError as e:
        return [problem(loc, f"{gen.template_path}: {e}", "value_error.template")]
    return []


def save_target(ctx: RepoContext, name: str, template: str,
                overrides: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create a target (caller holds the repo's reference lock); (record, created). 404/409/422 as ApiError."""
    existing = ctx.records.target(ctx.user, ctx.repo, name)
    if existing is not None and existing.get("template") == template \
            and same_json(existing.get("overrides"), overrides):
        return existing, False  # the same request again: answer even if its template is gone since
    config = effective_config(_template_config(ctx, template), overrides)
    if existing is not None:
        if same_json(public_config(existing.get("config")), config):
            return existing, False
        if same_json(_identity(public_config(existing.get("config"))), _identity(config)):
            return _update_run_settings(ctx, existing, template, overrides, config), False
        raise Conflict(f"target '{name}' already exists with another config; targets are immutable "
                       "(create one with a new name, or delete this one first)")
    for file, content in _check_references(ctx, template, overrides, config).items():
        ctx.records.write_template(ctx.user, ctx.repo, file, content)
    record = {"target_name": name, "template": template, "overrides": overrides, "config": config,
              "created_at": now_iso()}
    stored, created = ctx.records.create_target(ctx.user, ctx.repo, record)
    if not created and not same_json(public_config(stored.get("config")), config):
        raise Conflict(f"target '{name}' already exists with another config; targets are immutable")
    return stored, created


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """What a target produces: its config without the run settings (``schemas.targets.RUN_SETTINGS``)."""
    return {k: v for k, v in config.items() if k not in RUN_SETTINGS}


def _update_run_settings(ctx: RepoContext, existing: dict[str, Any], template: str, overrides: dict[str, Any],
                         config: dict[str, Any]) -> dict[str, Any]:
    """The target with new run settings (batch, budget): a job reads them when it is next run or resumed."""
    record = {**existing, "template": template, "overrides": overrides, "config": config, "updated_at": now_iso()}
    ctx.records.write(ctx.records.paths.target(ctx.user, ctx.repo, existing["target_name"]) / "target.json", record)
    return record


async def _create_one(request: web.Request, *, name: str | None, new_status: int) -> web.Response:
    ctx = repo_context(request)
    try:
        name, template, overrides = parse_target(await read_json_object(request), name=name)
    except Invalid as e:
        raise unprocessable(e.detail) from None
    async with ctx.records.references_locked(ctx.user, ctx.repo):
        record, created = save_target(ctx, name, template, overrides)
    return json_response(target_response(record), new_status if created else 200)


async def _batch(request: web.Request) -> web.Response:
    ctx = repo_context(request)
    items = parse_body(TargetBatch, await read_json_object(request)).targets
    created: list[str] = []
    failed: dict[str, str] = {}
    async with ctx.records.references_locked(ctx.user, ctx.repo):
        for i, item in enumerate(items):
            given = item.get("target_name") if isinstance(item, dict) else None
            key = given if isinstance(given, str) and given else f"targets[{i}]"
            try:
                name, template, overrides = parse_target(item, ("body", "targets", i))
                save_target(ctx, name, template, overrides)
            except Invalid as e:
                failed[key] = e.message
                continue
            except (ApiError, StoreError) as e:
                failed[key] = e.message
                continue
            failed.pop(key, None)
            if name not in created:
                created.append(name)
    return json_response({"created": created, "failed": failed})


# The literal batch routes come before {target_name}: PUT …/targets/batch matches both (API.md §1).
@routes.post(BASE + "/batch")
async def create_batch(request: web.Request) -> web.Response:
    return await _batch(request)


@routes.put(BASE + "/batch")
async def set_batch(request: web.Request) -> web.Response:
    return await _batch(request)


@routes.post(BASE)
async def create_target(request: web.Request) -> web.Response:
    return await _create_one(request, name=None, new_status=201)


@routes.get(BASE)
async def list_targets(request: web.Request) -> web.Response:
    ctx = repo_context(request)
    return json_response({"targets": ctx.records.target_names(ctx.user, ctx.repo)})


@routes.get(BASE + "/{target_name}")
async def get_target(request: web.Request) -> web.Response:
    _, _, record = target_context(request)
    return json_response(target_response(record))


@routes.put(BASE + "/{target_name}")
async def set_target(request: web.Request) -> web.Response:
    name = check_name(request.match_info["target_name"], "target_name")
    if name == DEFAULT_TEMPLATE:
        raise unprocessable([problem(["path", "target_name"], f"'{DEFAULT_TEMPLATE}' names the built-in template; "
                                     "choose another target name", "value_error.name")])
    return await _create_one(request, name=name, new_status=200)


@routes.delete(BASE + "/{target_name}")
async def delete_target(request: web.Request) -> web.Response:
    ctx, name, _ = target_context(request)
    control = request.app.get(JOB_CONTROL)
    async with ctx.records.references_locked(ctx.user, ctx.repo):
        if ctx.records.target(ctx.user, ctx.repo, name) is None:
            raise NotFound(f"target '{name}' not found in repo '{ctx.repo}'")
        if control is not None:  # the job engine stops the target's jobs and waits for their writers
            await control.stop(ctx.user, ctx.repo, name)
        locks = ctx.records.lock_target_jobs(ctx.user, ctx.repo, name)
        if locks is None:
            kinds = "/".join(TARGET_KINDS)
            raise Conflict(f"a {kinds} job of target '{name}' is still writing its output; "
                           "stop it, then delete the target again")
        try:
            ctx.records.trash_target(ctx.user, ctx.repo, name)
        finally:
            for lock in locks:
                lock.release()
    await asyncio.to_thread(ctx.records.purge_trash, ctx.user, ctx.repo)
    return json_response({"message": f"Target '{name}' deleted successfully"})
