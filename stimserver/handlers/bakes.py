"""Bakes (API.md §14): a template plus overrides, merged into a config at creation; runs, status, metrics, links.

    POST   {R}/bakes              201 new, 200 identical, 409 other config (bakes are immutable)
    GET    {R}/bakes              {"bakes": [names]}
    POST   {R}/bakes/batch        {"created", "failed"}; items in order, so one may template on another
    PUT    {R}/bakes/batch        deprecated: the same
    GET    {B}                    BakeResponse (status, config, loss, model_name, progress_percent, ...)
    PUT    {B}                    deprecated: body {template, overrides?}; like POST but 200 for new
    POST   {B}                    run (idempotent; no body): the job's state at once
    DELETE {B}                    stops the bake's trainer, removes the bake with its job folder
    GET    {B}/metrics            the logged rows, a JSON array
    GET    {B}/download           {bake_name, checkpoint, expires_in, url}: a signed link (handlers/downloads.py)
    POST   {B}/checkpoints/{N}/evaluation   ask for checkpoint N's evaluation: 202 (queued or running), 200 (done)
    GET    {B}/checkpoints/{N}/evaluation   where it stands, with the result once complete

A bake record keeps ``template`` and the normalised ``overrides`` beside the merged ``config``
(``schemas.bakes``), so the same request is recognised even after its template bake was deleted.
Creation checks what the models cannot see: that the template bake, each ``datasets[].target``
and a parent bake of this repo named by ``model.parent_model_name`` exist. Creation and deletion
hold the repo's reference lock, as for targets. The status is read from the job record and the
job folder's files (``store.bakes``); a status read of an active job goes through
``JobRunner.observe``, as for stim and rollout, so no bake reports progress after its runner died.

A checkpoint's evaluation on request is a file in the bake's folder (``store.bakefiles``:
``evals/<N>.request.json``) that a job runner's scan picks up and hands to an evaluator process
(``jobs.bake.run_evaluation``); this side only validates, writes the request once (an exclusive
create: a request already open, or an evaluation done, starts nothing) and reads the files. The
final checkpoint's evaluation is the bake's own ``eval.json``.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from ..api.errors import ApiError, BadRequest, Conflict, NotFound, ValidationError
from ..api.jsonio import (
    json_response,
    parse_body,
    raise_422,
    raw_json_response,
    read_json_object,
    same_json,
    unprocessable,
)
from ..api.keys import JOB_CONTROL
from ..api.paging import MAX_QUERY_INT, int_param
from ..jobs import ACTIVE, ConfigProblem, JobBusy, JobRef, JobStatus
from ..schemas.bakes import (
    DEFAULT_EXPIRES_IN,
    DEFAULT_TEMPLATE,
    MAX_EXPIRES_IN,
    BakeBatch,
    BakeConfigBase,
    BakeCreate,
    BakeSet,
    bake_config,
    model_name,
    parent_bake,
)
from ..schemas.validation import Detail, Invalid, parse, problem
from ..store import bakefiles
from ..store.bakes import BakeFiles, BakeStore
from ..store.errors import StoreError
from ..store.paths import BAKE_KIND, check_name, name_problem
from ..store.presence import live_runners
from ..store.records import now_iso
from .context import RepoContext, repo_context
from .downloads import signed_url

__all__ = ["routes", "bake_context", "bake_fields", "bake_status", "observed_job", "POST_WAIT_SECONDS",
           "checkpoint_param", "evaluated_checkpoint", "evaluation_answer", "ask_evaluation", "NO_RUNNER"]

routes = web.RouteTableDef()

BASE = "/v1/repo/{repo_name}/bakes"
# A run request waits this long for its job (API.md §10.1): a bake never finishes that fast, but a
# run that fails at once (a trainer that cannot start) answers "failed" without the client's 30 s poll.
POST_WAIT_SECONDS = 1.0
# The trainer's counts (trainer-plan.json) a status shows under "data".
PLAN_COUNTS = ("train_examples", "eval_examples", "skipped_too_long", "truncated", "train_tokens",
               "steps_per_epoch", "world_size")

Record = dict[str, Any]


def bake_context(request: web.Request) -> tuple[RepoContext, BakeStore, str, Record]:
    """Repo context, the bake store, the bake named in the path and its record; 404 if absent."""
    ctx = repo_context(request)
    name = check_name(request.match_info["bake_name"], "bake_name")
    store = BakeStore(ctx.records)
    record = store.bake(ctx.user, ctx.repo, name)
    if record is None:
        raise NotFound(f"bake '{name}' not found in repo '{ctx.repo}'")
    return ctx, store, name, record


# -- creation --------------------------------------------------------------------------------------------------
def parse_bake(item: Any, loc: tuple[str | int, ...] = ("body",), *,
               name: str | None = None) -> tuple[str, str, dict[str, Any]]:
    """(bake_name, template, stored overrides) of a create body or batch item; ``name`` comes from the path."""
    body: BakeSet | BakeCreate
    if name is not None:
        body = parse(BakeSet, item, loc)
    else:
        body = parse(BakeCreate, item, loc)
        name = body.bake_name
    return name, body.template, body.overrides.stored() if body.overrides is not None else {}


def _template_config(ctx: RepoContext, store: BakeStore, template: str) -> dict[str, Any] | None:
    """The template's merged config (None: the default); 404 for a template bake that does not exist."""
    if template == DEFAULT_TEMPLATE:
        return None
    record = store.bake(ctx.user, ctx.repo, template) if name_problem(template) is None else None
    config = None if record is None else record.get("config")
    if not isinstance(config, dict):
        raise NotFound(f"Template '{template}' not found")
    return config


def _check_references(ctx: RepoContext, store: BakeStore, name: str, template: str, overrides: dict[str, Any],
                      config: dict[str, Any]) -> None:
    """422 for what the merged config names and the repo lacks: dataset targets, a parent bake of this repo."""
    try:
        parse(BakeConfigBase, config, ("body", "template"))
    except Invalid as e:  # only a template bake stored before today's rules can fail here
        raise ValidationError(f"template '{template}' has a config that cannot be used: {e.message}",
                              detail=e.detail) from None
    detail: list[Detail] = []
    for i, item in enumerate(config.get("datasets") or []):
        target = item.get("target") if isinstance(item, dict) else None
        if not isinstance(target, str) or ctx.records.target(ctx.user, ctx.repo, target) is not None:
            continue
        if "datasets" in overrides:
            detail.append(problem(["body", "overrides", "datasets", i, "target"], f"target '{target}' does not exist "
                                  f"in repo '{ctx.repo}'", "value_error.target_not_found"))
        else:
            detail.append(problem(["body", "template"], f"datasets[{i}].target '{target}' inherited from template "
                                  f"'{template}' does not exist in repo '{ctx.repo}'", "value_error.target_not_found"))
    parent = parent_bake(config, ctx.user, ctx.repo)
    if parent is not None and (parent == name or store.bake(ctx.user, ctx.repo, parent) is None):
        given = "parent_model_name" in (overrides.get("model") or {})
        loc = ["body", "overrides", "model", "parent_model_name"] if given else ["body", "template"]
        why = "names this bake's own checkpoint" if parent == name else f"names bake '{parent}', which does not " \
                                                                        f"exist in repo '{ctx.repo}'"
        detail.append(problem(loc, f"model.parent_model_name {why}", "value_error.bake_not_found"))
    raise_422(detail)


def _immutable(name: str) -> Conflict:
    return Conflict(f"Bakes are immutable: bake '{name}' already exists with another config (create one with a new "
                    "name, or delete this one first)")


def save_bake(ctx: RepoContext, store: BakeStore, name: str, template: str,
              overrides: dict[str, Any]) -> tuple[Record, bool]:
    """Create a bake (caller holds the repo's reference lock); (record, created). 404/409/422 as ApiError."""
    existing = store.bake(ctx.user, ctx.repo, name)
    if existing is not None and existing.get("template") == template \
            and same_json(existing.get("overrides"), overrides):
        return existing, False  # the same request again: answer even if its template is gone since
    config = bake_config(_template_config(ctx, store, template), overrides)
    if existing is not None:
        if same_json(existing.get("config"), config):
            return existing, False
        raise _immutable(name)
    _check_references(ctx, store, name, template, overrides, config)
    record = {"bake_name": name, "template": template, "overrides": overrides, "config": config,
              "created_at": now_iso()}
    stored, created = store.create(ctx.user, ctx.repo, record)
    if not created and not same_json(stored.get("config"), config):
        raise _immutable(name)
    return stored, created


async def _create_one(request: web.Request, *, name: str | None, new_status: int) -> web.Response:
    ctx = repo_context(request)
    store = BakeStore(ctx.records)
    try:
        name, template, overrides = parse_bake(await read_json_object(request), name=name)
    except Invalid as e:
        raise unprocessable(e.detail) from None
    async with ctx.records.references_locked(ctx.user, ctx.repo):
        record, created = save_bake(ctx, store, name, template, overrides)
    status = await bake_status(request, ctx, name, record)
    return json_response(status, new_status if created else 200)


async def _batch(request: web.Request) -> web.Response:
    ctx = repo_context(request)
    store = BakeStore(ctx.records)
    items = parse_body(BakeBatch, await read_json_object(request)).bakes
    created: list[str] = []
    failed: dict[str, str] = {}
    async with ctx.records.references_locked(ctx.user, ctx.repo):
        for i, item in enumerate(items):
            given = item.get("bake_name") if isinstance(item, dict) else None
            key = given if isinstance(given, str) and given else f"bakes[{i}]"
            try:
                name, template, overrides = parse_bake(item, ("body", "bakes", i))
                save_bake(ctx, store, name, template, overrides)
            except (Invalid, ApiError, StoreError) as e:
                failed[key] = e.message
                continue
            failed.pop(key, None)
            if name not in created:
                created.append(name)
    return json_response({"created": created, "failed": failed})


# -- status ----------------------------------------------------------------------------------------------------
def bake_fields(user: str, repo: str, name: str, config: Any, job: Record | None, files: BakeFiles) -> dict[str, Any]:
    """The BakeResponse of a bake: its config, its job record (None: never run) and its job folder's files."""
    if job is None:
        return {"status": JobStatus.NOT_STARTED.value, "config": config, "error": None, "job_id": None, "lines": None,
                "loss": None, "model_name": None, "progress_percent": None, "checkpoints": [], "total_steps": None,
                "steps_done": None, "evaluation": None, "data": None}
    status = job.get("status", JobStatus.FAILED.value)
    rows = files.rows
    loss: dict[str, float] | None = None
    if rows.latest_loss is not None and rows.min_loss is not None and rows.max_loss is not None:
        loss = {"latest_loss": rows.latest_loss, "min_loss": rows.min_loss, "max_loss": rows.max_loss}
        if status == JobStatus.COMPLETE:
            loss["final_loss"] = rows.latest_loss
    plan = files.plan or {}
    total = plan.get("total_steps")
    total = total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None
    steps = files.checkpoints
    done = max(rows.last_train_iter, steps[-1] if steps else 0, 0)
    if status == JobStatus.COMPLETE:
        progress: float | None = 100.0
    elif total:
        progress = round(min(done / total, 1.0) * 100, 2)
    else:
        progress = 0.0 if status in ACTIVE else None
    error = job.get("error")
    if error is None and status == JobStatus.FAILED and files.failure is not None:
        error = files.failure.get("error")
    evaluation = None
    if files.evaluation is not None:
        evaluation = {k: files.evaluation[k] for k in ("checkpoint", "heldout", "behaviour", "reason")
                      if k in files.evaluation}
    spec = job.get("spec")
    datasets = spec.get("datasets") if isinstance(spec, dict) else None
    datasets = datasets if isinstance(datasets, list) else None
    counts = {k: plan[k] for k in PLAN_COUNTS if k in plan}
    data = None if datasets is None and not counts else {"datasets": datasets or [], **counts}
    return {"status": status, "config": config, "error": error if isinstance(error, str) else None,
            "job_id": job.get("job_id"), "lines": None, "loss": loss,
            "model_name": [model_name(user, repo, name, s) for s in reversed(steps)] or None,
            "progress_percent": progress, "checkpoints": steps, "total_steps": total, "steps_done": done,
            "evaluation": evaluation, "data": data}


async def observed_job(request: web.Request, ref: JobRef, job: Record | None) -> Record | None:
    """The job record a status read reports: an active one checked for a live runner (``JobRunner.observe``)."""
    if job is None or job.get("status") not in ACTIVE:
        return job
    return await request.app[JOB_CONTROL].observe(ref, job)


async def bake_status(request: web.Request, ctx: RepoContext, name: str, record: Record,
                      job: Record | None = None, *, observe: bool = True) -> dict[str, Any]:
    """The BakeResponse of a bake; ``job`` as just read or settled (else read here, and observed if active)."""
    store = BakeStore(ctx.records)
    if job is None:
        job = store.job(ctx.user, ctx.repo, name)
        if observe:
            job = await observed_job(request, JobRef(ctx.user, ctx.repo, name, BAKE_KIND), job)
    files = BakeFiles() if job is None else await asyncio.to_thread(store.files, ctx.user, ctx.repo, name)
    return bake_fields(ctx.user, ctx.repo, name, record.get("config"), job, files)


# -- routes ----------------------------------------------------------------------------------------------------
# The literal batch routes come before {bake_name}: POST …/bakes/batch matches both (API.md §1).
@routes.post(BASE + "/batch")
async def create_batch(request: web.Request) -> web.Response:
    return await _batch(request)


@routes.put(BASE + "/batch")
async def set_batch(request: web.Request) -> web.Response:
    return await _batch(request)


@routes.post(BASE)
async def create_bake(request: web.Request) -> web.Response:
    return await _create_one(request, name=None, new_status=201)


@routes.get(BASE)
async def list_bakes(request: web.Request) -> web.Response:
    ctx = repo_context(request)
    return json_response({"bakes": BakeStore(ctx.records).names(ctx.user, ctx.repo)})


@routes.get(BASE + "/{bake_name}")
async def get_bake(request: web.Request) -> web.Response:
    ctx, _, name, record = bake_context(request)
    return json_response(await bake_status(request, ctx, name, record))


@routes.put(BASE + "/{bake_name}")
async def set_bake(request: web.Request) -> web.Response:
    name = check_name(request.match_info["bake_name"], "bake_name")
    if name == DEFAULT_TEMPLATE:
        raise unprocessable([problem(["path", "bake_name"], f"'{DEFAULT_TEMPLATE}' names the built-in template; "
                                     "choose another bake name", "value_error.name")])
    return await _create_one(request, name=name, new_status=200)


@routes.post(BASE + "/{bake_name}")
async def run_bake(request: web.Request) -> web.Response:
    ctx, _, name, record = bake_context(request)
    control = request.app[JOB_CONTROL]
    ref = JobRef(ctx.user, ctx.repo, name, BAKE_KIND)
    try:
        job = await control.submit(ref, record)
    except ConfigProblem as e:  # the bake cannot run as configured (a target without a complete rollout, ...)
        raise BadRequest(str(e)) from None
    except JobBusy as e:  # the previous trainer has not let go yet
        raise Conflict(str(e)) from None
    job = await control.settle(ref, job, POST_WAIT_SECONDS)
    return json_response(await bake_status(request, ctx, name, record, job))


@routes.delete(BASE + "/{bake_name}")
async def delete_bake(request: web.Request) -> web.Response:
    ctx, store, name, _ = bake_context(request)
    control = request.app.get(JOB_CONTROL)
    async with ctx.records.references_locked(ctx.user, ctx.repo):
        if store.bake(ctx.user, ctx.repo, name) is None:
            raise NotFound(f"bake '{name}' not found in repo '{ctx.repo}'")
        children = [b for b in store.names(ctx.user, ctx.repo)
                    if b != name and parent_bake((store.bake(ctx.user, ctx.repo, b) or {}).get("config"),
                                                 ctx.user, ctx.repo) == name]
        if children:
            raise Conflict(f"bake '{name}' is the parent model of bake(s) {', '.join(children)} "
                           "(their model.parent_model_name); delete those first")
        stop = getattr(control, "stop_bake", None)  # JobRunner.stop_bake: the trainer stopped, its lock free
        if stop is not None:
            try:
                await stop(ctx.user, ctx.repo, name)
            except JobBusy as e:
                raise Conflict(str(e)) from None
        lock = store.lock_job(ctx.user, ctx.repo, name)
        if lock is None:
            raise Conflict(f"the trainer of bake '{name}' is still running; try the delete again in a moment")
        try:
            store.trash(ctx.user, ctx.repo, name)
        finally:
            lock.release()
    await asyncio.to_thread(store.purge_trash, ctx.user, ctx.repo)
    return json_response({"message": f"Bake '{name}' deleted successfully"})


@routes.get(BASE + "/{bake_name}/metrics")
async def get_metrics(request: web.Request) -> web.Response:
    ctx, store, name, _ = bake_context(request)
    return raw_json_response(await asyncio.to_thread(store.rows_json, ctx.user, ctx.repo, name))


@routes.get(BASE + "/{bake_name}/download")
async def download_link(request: web.Request) -> web.Response:
    query = request.query
    checkpoint = int_param(query, "checkpoint", None, 0)
    expires_in = int_param(query, "expires_in", DEFAULT_EXPIRES_IN, 1, MAX_EXPIRES_IN)
    assert expires_in is not None
    ctx, store, name, _ = bake_context(request)
    job = store.job(ctx.user, ctx.repo, name)
    steps = store.checkpoints(ctx.user, ctx.repo, name) if job is not None else []
    job_id = None if job is None else job.get("job_id")
    if not steps or not isinstance(job_id, int):
        raise NotFound(f"bake '{name}' has no checkpoint yet: run it (POST …/bakes/{name}) and wait for one")
    step = steps[-1] if checkpoint is None else checkpoint
    if step not in steps:
        raise NotFound(f"bake '{name}' has no checkpoint {step}; its checkpoints: {', '.join(map(str, steps))}")
    url = signed_url(request, store.download_secret(), ctx.user, ctx.repo, name, step, job_id, expires_in)
    return json_response({"bake_name": name, "checkpoint": step, "expires_in": expires_in, "url": url})



# -- a checkpoint's evaluation, on request ----------------------------------------------------------------------
NO_RUNNER = ("no job runner is running on this data directory: the evaluation waits until stimserver serve "
             "(with jobs enabled) or stimserver worker runs on it")


def checkpoint_param(raw: str, loc: str = "path") -> int:
    """A checkpoint step from the path (or a query): a non-negative integer; a 422 naming it otherwise."""
    text = raw.strip()
    if not (text.isdigit() and text.isascii()) or len(text.lstrip("0")) > len(str(MAX_QUERY_INT)) \
            or int(text) > MAX_QUERY_INT:
        shown = raw if len(raw) <= 40 else raw[:40] + "…"
        raise ValidationError(f"{loc} parameter checkpoint must be a checkpoint step, a non-negative integer "
                              f"(got {shown!r})", detail=[problem([loc, "checkpoint"], "must be a non-negative integer",
                                                                   "type_error.integer")])
    return int(text)


def evaluated_checkpoint(ctx: RepoContext, store: BakeStore, name: str, step: int) -> tuple[Path, Record]:
    """(the bake's job folder, its job record) when ``step`` is one of its published checkpoints; else 404."""
    job = store.job(ctx.user, ctx.repo, name)
    steps = store.checkpoints(ctx.user, ctx.repo, name) if job is not None else []
    if step not in steps:
        listed = f"its checkpoints: {', '.join(map(str, steps))}" if steps else "it has none yet"
        raise NotFound(f"bake '{name}' has no checkpoint {step}; {listed}")
    return store.job_dir(ctx.user, ctx.repo, name), job or {}


def evaluation_answer(ctx: RepoContext, name: str, step: int, state: bakefiles.EvaluationState) -> dict[str, Any]:
    """What the evaluation routes answer: the state and, once complete, the evaluation (the shape of eval.json)."""
    note = NO_RUNNER if state.status == "pending" and live_runners(ctx.records.paths) == 0 else None
    return {"bake_name": name, "checkpoint": step, "status": state.status, "error": state.error, "note": note,
            "requested_at": state.requested_at, "finished_at": state.finished_at, "evaluation": state.evaluation}


async def ask_evaluation(request: web.Request, ctx: RepoContext, name: str, step: int) -> web.Response:
    """Ask for checkpoint ``step``'s evaluation: 200 when it is done, else 202 (queued now, or already)."""
    store = BakeStore(ctx.records)
    job_dir, job = evaluated_checkpoint(ctx, store, name, step)
    state = await asyncio.to_thread(bakefiles.evaluation_state, job_dir, step)
    if state.status in ("not_started", "failed"):
        await asyncio.to_thread(bakefiles.request_evaluation, job_dir, step, job.get("job_id"))
        control = request.app.get(JOB_CONTROL)
        if control is not None:
            control.wake()  # this process's runner scans now
        state = await asyncio.to_thread(bakefiles.evaluation_state, job_dir, step)
    return json_response(evaluation_answer(ctx, name, step, state), 200 if state.status == "complete" else 202)


@routes.post(BASE + "/{bake_name}/checkpoints/{checkpoint}/evaluation")
async def request_checkpoint_evaluation(request: web.Request) -> web.Response:
    step = checkpoint_param(request.match_info["checkpoint"])
    ctx, _, name, _ = bake_context(request)
    return await ask_evaluation(request, ctx, name, step)


@routes.get(BASE + "/{bake_name}/checkpoints/{checkpoint}/evaluation")
async def get_checkpoint_evaluation(request: web.Request) -> web.Response:
    step = checkpoint_param(request.match_info["checkpoint"])
    ctx, store, name, _ = bake_context(request)
    job_dir, _ = evaluated_checkpoint(ctx, store, name, step)
    state = await asyncio.to_thread(bakefiles.evaluation_state, job_dir, step)
    return json_response(evaluation_answer(ctx, name, step, state))
