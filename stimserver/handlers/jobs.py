"""Job runs, status and paged output, for every job kind (API.md §9, §11).

    POST /v1/repo/{repo}/targets/{target}/{kind}         run (idempotent); answers the status
    GET  /v1/repo/{repo}/targets/{target}/{kind}          status only
    GET  /v1/repo/{repo}/targets/{target}/{kind}/output   status + one page

A status read of a pending or running job checks that some runner is behind it
(``JobRunner.observe``), so no job reports progress forever after its runner died.

The page's lines are spliced from the stored bytes; the rest of the envelope is
serialised with orjson. Every field is always present.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiofiles
import orjson
from aiohttp import web

from ..errors import NotFound
from ..jsonio import json_response, raw_json_response
from ..jobs import JobRef
from ..keys import IDENTITY, JOB_CONTROL, RECORDS, SETTINGS
from ..paging import page_params
from ..store import output
from .context import target_context

routes = web.RouteTableDef()

# Pages larger than this are read through aiofiles (a worker thread) so that one big
# read never stalls the event loop; smaller ones are a direct pread (cheaper than the
# thread hop: see scripts/bench_pageread.py for the measurement behind the number).
INLINE_READ_BYTES = 1 << 20

IN_PROGRESS = ("pending", "running")

# A run request waits this long for its job to finish, so a quick job answers "complete"
# at once and the official client skips its 30 s poll (API.md §10.1).
POST_WAIT_SECONDS = 1.0


def status_fields(job: dict | None, lines: int) -> dict[str, Any]:
    """The StimResponse fields for a job record (None: never run) and its committed lines."""
    if job is None:
        return {"status": "not_started", "lines": None, "config": None, "error": None,
                "job_id": None, "progress_percent": None}
    status = job.get("status", "failed")
    expected = job.get("expected_lines")
    if status == "complete":
        progress: float | None = 100.0
    elif expected:
        progress = round(min(lines / expected, 1.0) * 100, 2)
    else:
        progress = 0.0 if status in IN_PROGRESS else None
    return {"status": status, "lines": lines, "config": job.get("config"), "error": job.get("error"),
            "job_id": job.get("job_id"), "progress_percent": progress}


def _load(request: web.Request, kind: str) -> tuple[Path, dict | None]:
    """The job folder and record; 404 unless the repo and target exist.

    A job record can only exist inside its target's folder, so when it is there the
    repo and target checks are skipped: one ``stat`` instead of three on the hot path.
    """
    records = request.app[RECORDS]
    job_file = records.paths.job_file(request[IDENTITY].user, request.match_info["repo_name"],
                                      request.match_info["target_name"], kind)
    job = records.cache.read(job_file)
    if job is None:
        target_context(request)  # raises the right 404
    return job_file.parent, job


def _ref(request: web.Request, kind: str) -> JobRef:
    return JobRef(request[IDENTITY].user, request.match_info["repo_name"], request.match_info["target_name"], kind)


async def _live(request: web.Request, kind: str, job: dict | None) -> dict | None:
    if job is None or job.get("status") not in IN_PROGRESS:
        return job
    return await request.app[JOB_CONTROL].observe(_ref(request, kind), job)


async def run_job(request: web.Request, kind: str) -> web.Response:
    ctx, target, record = target_context(request)
    control = request.app[JOB_CONTROL]
    ref = JobRef(ctx.user, ctx.repo, target, kind)
    job = await control.submit(ref, record)
    job = await control.settle(ref, job, POST_WAIT_SECONDS)
    lines = output.line_count(ctx.records.paths.job_dir(ctx.user, ctx.repo, target, kind))
    return json_response(status_fields(job, lines))


async def get_status(request: web.Request, kind: str) -> web.Response:
    jdir, job = _load(request, kind)
    job = await _live(request, kind, job)
    lines = output.line_count(jdir) if job is not None else 0
    return json_response(status_fields(job, lines))


async def get_output(request: web.Request, kind: str) -> web.Response:
    settings = request.app[SETTINGS]
    offset, limit = page_params(request.query, settings.default_page_size, settings.max_page_size)
    jdir, job = _load(request, kind)
    job = await _live(request, kind, job)
    if job is None:
        page = output.EMPTY
    else:
        page = output.read_page(jdir, offset, limit, INLINE_READ_BYTES, repair=False)
        if page.needs_repair:  # rare (after a crash): the repair scans, so not on the event loop
            page = await asyncio.to_thread(output.read_page, jdir, offset, limit, INLINE_READ_BYTES)
        if page.body is None:
            page.body = output.splice(await _read_off_loop(jdir, *page.span))
    fields = status_fields(job, page.total)
    meta = orjson.dumps({
        "offset": offset, "limit": limit, "has_more": offset + page.count < page.total,
        **fields,
    })
    return raw_json_response(b"".join((b'{"output":', page.body, b",", memoryview(meta)[1:])))


async def _read_off_loop(jdir, begin: int, end: int) -> bytes:
    try:
        async with aiofiles.open(jdir / output.DATA_NAME, "rb") as f:
            await f.seek(begin)
            return await f.read(end - begin)
    except FileNotFoundError:
        raise NotFound("the job's output was removed while it was being read") from None


def _add_kind(kind: str) -> None:
    base = "/v1/repo/{repo_name}/targets/{target_name}/" + kind

    async def status(request: web.Request) -> web.Response:
        return await get_status(request, kind)

    async def page(request: web.Request) -> web.Response:
        return await get_output(request, kind)

    async def run(request: web.Request) -> web.Response:
        return await run_job(request, kind)

    routes.post(base)(run)
    routes.get(base)(status)
    routes.get(base + "/output")(page)


_add_kind("stim")
