"""Job runs, status and paged output (API.md §9, §11). One literal route per endpoint.

    POST /v1/repo/{repo}/targets/{target}/stim          run (idempotent); answers the status
    GET  /v1/repo/{repo}/targets/{target}/stim          status only
    GET  /v1/repo/{repo}/targets/{target}/stim/output   status + one page
    DELETE /v1/repo/{repo}/targets/{target}/stim/output discard a finished job (the explicit fresh start)

and the same four for ``rollout``, whose answers add ``total_expected``,
``failed_trajectories`` and ``stim_outdated`` (``rollout_fields``).

A page is parameters → job record (cached) → page (``Records.job_page``, the store's
async reader) → envelope: this module never builds a path or opens a file. A status
read of a pending or running job checks that some runner is behind it
(``JobRunner.observe``), so no job reports progress forever after its runner died.
The page's lines are spliced from the stored bytes; the rest of the envelope is
serialised with orjson. Every field is always present.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from ..api.errors import BadRequest, Conflict
from ..api.jsonio import json_response, raw_json_response
from ..api.keys import IDENTITY, JOB_CONTROL, RECORDS, SETTINGS
from ..api.paging import page_params
from ..jobs import ACTIVE, ConfigProblem, JobBusy, JobRef, JobStatus
from ..jobs.batches import batch_progress
from ..llm.limiter import USAGE_COUNTS, Usage
from ..store.cache import Identity
from ..store.records import Records
from .context import target_context

routes = web.RouteTableDef()

# A run request waits this long for its job to finish, so a quick job answers "complete"
# at once and the official client skips its 30 s poll (API.md §10.1).
POST_WAIT_SECONDS = 1.0

Record = dict[str, Any]




def usage_fields(usage: Record | None) -> dict[str, Any]:
    """The status's ``usage`` from a job's usage file (None: the job asked no model yet).

    ``cost_usd`` is null, with ``cost_unknown`` saying why, when some answer had no price
    (``llm.prices``) or the file predates costs; a sum of only the priced answers is never shown.
    """
    counts = Usage.from_dict(usage or {})
    fields: dict[str, Any] = {k: getattr(counts, k) for k in USAGE_COUNTS}
    unknown = counts.cost_unknown
    fields.update(cost_usd=None if unknown else round(counts.cost_usd, 9), price_table=counts.price_table,
                  cost_unknown=unknown)
    return fields


def status_fields(job: Record | None, lines: int, usage: Record | None = None) -> dict[str, Any]:
    """The StimResponse fields for a job record (None: never run), its committed lines and LLM usage.

    ``usage`` is the job's usage file (``Records.job_usage``); a job that asked no model shows zeros.
    """
    if job is None:
        return {"status": JobStatus.NOT_STARTED.value, "lines": None, "config": None, "error": None,
                "job_id": None, "progress_percent": None, "usage": None}
    status = job.get("status", JobStatus.FAILED.value)
    expected = job.get("expected_lines")
    if status == JobStatus.COMPLETE:
        progress: float | None = 100.0
    elif expected:
        progress = round(min(lines / expected, 1.0) * 100, 2)
    else:
        progress = 0.0 if status in ACTIVE else None
    return {"status": status, "lines": lines, "config": job.get("config"), "error": job.get("error"),
            "job_id": job.get("job_id"), "progress_percent": progress,
            "usage": usage_fields(usage)}


def rollout_fields(records: Records, ref: JobRef, job: Record | None, lines: int) -> dict[str, Any]:
    """What a RolloutResponse adds to the status fields.

    ``failed_trajectories`` counts the committed lines whose request the provider rejected;
    ``stim_outdated`` is true when the target's stim job is no longer the one this rollout
    read (re-run or deleted since): the rollout's lines still come from the stimuli it froze.
    ``duplicate_stimuli`` counts the committed stimuli with two identical trajectories, and
    ``warning`` says when every stimulus compared had them at a temperature above 0: the model
    server decoded greedily and half the requests were paid for nothing.
    """
    if job is None:
        return {"total_expected": None, "failed_trajectories": None, "stim_outdated": None,
                "duplicate_stimuli": None, "warning": None}
    failed = records.job_failed(ref.user, ref.repo, ref.target, ref.kind)
    stim = records.job(ref.user, ref.repo, ref.target, "stim")
    config = job.get("config") or {}
    read = config.get("stim_job_id")
    k = config.get("num_traj_per_stimulus")
    k = k if isinstance(k, int) and k > 0 else 1
    compared, stimuli = records.job_duplicates(ref.user, ref.repo, ref.target, ref.kind)
    whole = lines // k  # stimuli whose trajectories are all committed
    duplicated = bisect.bisect_left(stimuli, whole)
    fields = {"total_expected": job.get("expected_lines"), "failed_trajectories": bisect.bisect_left(failed, lines),
              "stim_outdated": stim is None or stim.get("job_id") != read, "duplicate_stimuli": duplicated,
              "warning": duplicates_warning(duplicated, min(compared, whole), config.get("temperature"))}
    if config.get("batch"):
        fields.update(batch_fields(records, ref, job, lines))
    return fields


def batch_fields(records: Records, ref: JobRef, job: Record, lines: int) -> dict[str, Any]:
    """A batch-mode job's ``batches`` (``jobs.batches.batch_progress``) and its progress, which counts
    the requests its running batches have finished as well as the committed lines."""
    batches = batch_progress(records.paths.job_dir(ref.user, ref.repo, ref.target, ref.kind))
    fields: dict[str, Any] = {"batches": batches}
    expected = job.get("expected_lines")
    if batches and expected and job.get("status") in ACTIVE:
        fields["progress_percent"] = round(min((lines + batches["done"]) / expected, 1.0) * 100, 2)
    return fields


def duplicates_warning(duplicated: int, compared: int, temperature: Any) -> str | None:
    """The status's warning when every compared stimulus got identical trajectories at a temperature above 0."""
    if not compared or duplicated < compared or not isinstance(temperature, (int, float)) or temperature <= 0:
        return None
    return (f"all {compared} stimuli compared got identical trajectories at temperature {temperature}: the model "
            "server is not sampling (it decodes greedily or fixes a seed), so every trajectory after the first "
            "repeats it; see docs/rollout.md, 'Sampling' (for transformers serve set "
            "STIMSERVER_OPENAI_SERVER=transformers)")


# The fields a kind adds to the status fields (a RolloutResponse's), by kind.
KIND_FIELDS: dict[str, Callable[[Records, JobRef, Record | None, int], dict[str, Any]]] = {"rollout": rollout_fields}


def kind_fields(records: Records, ref: JobRef, job: Record | None, lines: int) -> dict[str, Any]:
    fields = KIND_FIELDS.get(ref.kind)
    return {} if fields is None else fields(records, ref, job, lines)


def _ref(request: web.Request, kind: str) -> JobRef:
    return JobRef(request[IDENTITY].user, request.match_info["repo_name"], request.match_info["target_name"], kind)


def _load(request: web.Request, ref: JobRef) -> Record | None:
    """The job record; 404 unless the repo and target exist.

    A job record can only exist inside its target's folder, so when it is there the
    repo and target checks are skipped: one cached ``stat`` instead of three on the hot path.
    """
    job = request.app[RECORDS].job(ref.user, ref.repo, ref.target, ref.kind)
    if job is None:
        target_context(request)  # raises the right 404 (or the 422 of a bad name)
    return job


async def _live(request: web.Request, ref: JobRef, job: Record | None) -> Record | None:
    if job is None or job.get("status") not in ACTIVE:
        return job
    return await request.app[JOB_CONTROL].observe(ref, job)


async def run_job(request: web.Request, kind: str) -> web.Response:
    ctx, target, record = target_context(request)
    control = request.app[JOB_CONTROL]
    ref = JobRef(ctx.user, ctx.repo, target, kind)
    try:
        job = await control.submit(ref, record)
    except ConfigProblem as e:  # the target cannot run as configured
        raise BadRequest(str(e)) from None
    except JobBusy as e:  # the previous job's writer has not let go yet
        raise Conflict(str(e)) from None
    job = await control.settle(ref, job, POST_WAIT_SECONDS)
    lines = ctx.records.job_lines(ctx.user, ctx.repo, target, kind)
    return json_response({**status_fields(job, lines, ctx.records.job_usage(ctx.user, ctx.repo, target, kind)),
                          **kind_fields(ctx.records, ref, job, lines)})


async def get_status(request: web.Request, kind: str) -> web.Response:
    ref = _ref(request, kind)
    job = await _live(request, ref, _load(request, ref))
    records = request.app[RECORDS]
    lines = records.job_lines(ref.user, ref.repo, ref.target, kind) if job is not None else 0
    usage = records.job_usage(ref.user, ref.repo, ref.target, kind) if job is not None else None
    return json_response({**status_fields(job, lines, usage), **kind_fields(records, ref, job, lines)})


def _envelope(items: bytes | memoryview, job: Record | None, offset: int, limit: int, count: int,
              total: int, usage: Record | None = None, extra: dict[str, Any] | None = None) -> web.Response:
    """The page answer, built in one buffer: prefix, the stored lines, the rest of the fields."""
    meta = orjson.dumps({
        "offset": offset, "limit": limit, "has_more": offset + count < total,
        **status_fields(job, total, usage), **(extra or {}),
    })
    return raw_json_response(b"".join((b'{"output":[', items, b"],", memoryview(meta)[1:])))


# The status part of complete jobs' pages, serialised once per record version and line
# count (it holds the config, the costliest part to serialise); bounded, keyed by the folder.
_STATUS_BYTES: dict[tuple[Any, ...], bytes] = {}
_STATUS_BYTES_SIZE = 256


def _complete_envelope(key: tuple[Any, ...], items: memoryview, job: Record, offset: int, limit: int, count: int,
                       total: int, usage: Callable[[], Record | None],
                       extra: dict[str, Any] | None = None) -> web.Response:
    """``_envelope`` for a complete job, its status fields taken from ``_STATUS_BYTES``.

    A complete job's usage is final (saved before its record says complete), so it is read
    only when the status bytes are made, not on every page.
    """
    status = _STATUS_BYTES.get(key)
    if status is None:
        if len(_STATUS_BYTES) >= _STATUS_BYTES_SIZE:
            _STATUS_BYTES.clear()
        status = _STATUS_BYTES[key] = orjson.dumps(status_fields(job, total, usage()))[1:]
    head = b'],"offset":%d,"limit":%d,"has_more":%s,' % (offset, limit, b"true" if offset + count < total else b"false")
    if extra:  # fields that may change while the record does not (a rollout's stim_outdated): never cached
        status = b"".join((status[:-1], b",", memoryview(orjson.dumps(extra))[1:]))
    return raw_json_response(b"".join((b'{"output":[', items, head, status)))


def complete_page(records: Records, ref: JobRef, job: Record, version: Identity, offset: int,
                  limit: int) -> web.Response | None:
    """The page of a job whose record (of identity ``version``) says complete, read from files kept open.

    None when the open files cannot answer it (``Records.complete_lines``): then the caller
    reads the page the ordinary way. Shared by ``get_output`` and the page path before the
    router (``fastpage.py``), so both answer the very same bytes.
    """
    lines = records.complete_lines(ref.user, ref.repo, ref.target, ref.kind, version, offset, limit)
    if lines is None:
        return None
    key = (records.paths.root, ref, version, lines.total)
    return _complete_envelope(key, lines.items, job, offset, limit, lines.count, lines.total,
                              lambda: records.job_usage(ref.user, ref.repo, ref.target, ref.kind),
                              kind_fields(records, ref, job, lines.total))


async def get_output(request: web.Request, kind: str) -> web.Response:
    settings = request.app[SETTINGS]
    offset, limit = page_params(request.query, settings.default_page_size, settings.max_page_size)
    ref = _ref(request, kind)
    records = request.app[RECORDS]
    job, version = records.job_versioned(ref.user, ref.repo, ref.target, kind)
    if job is None:
        target_context(request)  # raises the right 404 (or the 422 of a bad name)
        return _envelope(b"", None, offset, limit, 0, 0, extra=kind_fields(records, ref, None, 0))
    if job.get("status") == JobStatus.COMPLETE and version is not None:
        answer = complete_page(records, ref, job, version, offset, limit)
        if answer is not None:
            return answer
    job = await _live(request, ref, job)
    page = await records.job_page(ref.user, ref.repo, ref.target, kind, offset, limit)
    body = page.body if page.body is not None else b"[]"
    usage = None if job is None else records.job_usage(ref.user, ref.repo, ref.target, kind)
    return _envelope(memoryview(body)[1:-1], job, offset, limit, page.count, page.total, usage,
                     kind_fields(records, ref, job, page.total))


@routes.post("/v1/repo/{repo_name}/targets/{target_name}/stim")
async def run_stim(request: web.Request) -> web.Response:
    return await run_job(request, "stim")


@routes.get("/v1/repo/{repo_name}/targets/{target_name}/stim")
async def stim_status(request: web.Request) -> web.Response:
    return await get_status(request, "stim")


@routes.get("/v1/repo/{repo_name}/targets/{target_name}/stim/output")
async def stim_output(request: web.Request) -> web.Response:
    return await get_output(request, "stim")


async def discard_job(request: web.Request, kind: str) -> web.Response:
    """Start over only when asked: POST resumes a failed job, this throws its lines away."""
    ctx, target, _ = target_context(request)
    ref = JobRef(ctx.user, ctx.repo, target, kind)
    try:
        await request.app[JOB_CONTROL].discard(ref)
    except JobBusy as e:
        raise Conflict(str(e)) from None
    return json_response({**status_fields(None, 0), **kind_fields(ctx.records, ref, None, 0)})


@routes.delete("/v1/repo/{repo_name}/targets/{target_name}/stim/output")
async def stim_discard(request: web.Request) -> web.Response:
    return await discard_job(request, "stim")


@routes.post("/v1/repo/{repo_name}/targets/{target_name}/rollout")
async def run_rollout(request: web.Request) -> web.Response:
    return await run_job(request, "rollout")


@routes.get("/v1/repo/{repo_name}/targets/{target_name}/rollout")
async def rollout_status(request: web.Request) -> web.Response:
    return await get_status(request, "rollout")


@routes.get("/v1/repo/{repo_name}/targets/{target_name}/rollout/output")
async def rollout_output(request: web.Request) -> web.Response:
    return await get_output(request, "rollout")


@routes.delete("/v1/repo/{repo_name}/targets/{target_name}/rollout/output")
async def rollout_discard(request: web.Request) -> web.Response:
    return await discard_job(request, "rollout")


# The page handlers by job kind: each is ``get_output(request, kind)`` on its literal route
# ``/v1/repo/{repo_name}/targets/{target_name}/<kind>/output``, which lets the page path
# before the router (``fastpage.py``) answer a complete job's page of that kind itself.
PAGE_HANDLERS: dict[str, object] = {"stim": stim_output, "rollout": rollout_output}
