"""Questions about a job's whole output (issue 11), for any job kind:

    GET …/{kind}/output/search?q=TEXT | regex=PATTERN [&field=a.b] [&offset=N] [&limit=N]
    GET …/{kind}/output/sample?n=N&seed=S
    GET …/{kind}/output/stats

Each reads the committed lines through the store (``store.scan``, ``store.sample``,
``store.stats``) in a small pool of its own threads, so a long scan never blocks the
event loop nor takes the threads large page reads use. Answers splice the stored lines
into the JSON as they are, like pages do. A target that exists but never ran answers
empty with status ``not_started``; an unknown repo or target is a 404, as for pages.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiohttp import web

from ..api.errors import ValidationError
from ..api.jsonio import raw_json_response
from ..api.keys import PATHS, SETTINGS
from ..api.paging import int_param
from ..store import sample as sampling
from ..store import scan
from ..store import stats as output_stats
from .context import target_context

__all__ = ["routes", "search", "sample", "stats", "MAX_MATCHES", "MAX_SAMPLE"]

routes = web.RouteTableDef()

MAX_MATCHES = 1000
MAX_SAMPLE = 1000
MAX_FIELD = 200  # characters of a dotted field path
SCAN_THREADS = 2  # scans at once per process; more wait (the machine's disks and cores are the limit)

_pool: ThreadPoolExecutor | None = None
T = TypeVar("T")


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(SCAN_THREADS, thread_name_prefix="stimserver-scan")
    return await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)


def _job(request: web.Request, kind: str) -> tuple[Path, dict[str, Any] | None]:
    """The job folder and its record (None: never run); 404 for an unknown repo or target."""
    ctx, target, _ = target_context(request)
    job = ctx.records.job(ctx.user, ctx.repo, target, kind)
    return request.app[PATHS].job_dir(ctx.user, ctx.repo, target, kind), job


def _status(job: dict[str, Any] | None) -> str:
    return "not_started" if job is None else str(job.get("status", "failed"))


def _bad(name: str, msg: str, type_: str = "value_error") -> ValidationError:
    return ValidationError(f"query parameter {name} {msg}", detail=[{"loc": ["query", name], "msg": msg,
                                                                        "type": type_}])


def _lines_json(rows: list[tuple[int, bytes]]) -> bytes:
    parts = [b'{"line":%d,"record":%s}' % (line, raw) for line, raw in rows]
    return b"[" + b",".join(parts) + b"]"


def _answer(key: str, rows: list[tuple[int, bytes]], meta: dict[str, Any]) -> web.Response:
    tail = orjson.dumps(meta)
    return raw_json_response(b"".join((b'{"', key.encode(), b'":', _lines_json(rows), b",", tail[1:])))


def _field(raw: str | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    parts = tuple(raw.split("."))
    if not raw or len(raw) > MAX_FIELD or not all(parts):
        raise _bad("field", f"must be a dotted path such as question or response.content (at most {MAX_FIELD} "
                            f"characters), not {raw[:40]!r}")
    return parts


def _pattern(request: web.Request) -> scan.Pattern:
    """``q`` (a substring), ``regex``, both (a line must match both) or neither (every line matches)."""
    try:
        return scan.compile_pattern(request.query.get("q"), request.query.get("regex"))
    except scan.BadPattern as e:  # it names the parameter that failed
        shown = e.text if len(e.text) <= 60 else e.text[:60] + "…"
        raise _bad(e.param, f"{shown!r} is not a usable pattern: {e}", "value_error.pattern") from None


async def search(request: web.Request, kind: str) -> web.Response:
    pattern = _pattern(request)
    path = _field(request.query.get("field"))
    offset = int_param(request.query, "offset", 0, 0) or 0
    limit = int_param(request.query, "limit", 100, 1, MAX_MATCHES) or 100
    job_dir, job = _job(request, kind)
    budget = request.app[SETTINGS].search_scan_bytes
    found = scan.SearchResult()
    if job is not None:
        found = await _off_loop(scan.search, job_dir, pattern, path, offset, limit, budget)
    return _answer("matches", [(m.line, m.raw) for m in found.matches], {
        "next_offset": found.next_offset, "scanned_lines": found.scanned_lines,
        "scanned_bytes": found.scanned_bytes, "lines": found.lines, "status": _status(job)})


async def sample(request: web.Request, kind: str) -> web.Response:
    n = int_param(request.query, "n", 10, 1, MAX_SAMPLE) or 10
    seed = int_param(request.query, "seed", 0, 0, 2**63 - 1) or 0
    job_dir, job = _job(request, kind)
    drawn = sampling.Sample()
    if job is not None:
        drawn = await _off_loop(sampling.sample, job_dir, seed, n)
    return _answer("samples", drawn.rows, {"seed": seed, "n": n, "lines": drawn.lines, "status": _status(job)})


async def stats(request: web.Request, kind: str) -> web.Response:
    job_dir, job = _job(request, kind)
    if job is None:
        answer = output_stats.summary(output_stats.empty(""))
    else:
        answer = await _off_loop(output_stats.stats, job_dir, f"job-{job.get('job_id')}")
    return raw_json_response(orjson.dumps({**answer, "status": _status(job)}))


# One literal route per job kind and question.
@routes.get("/v1/repo/{repo_name}/targets/{target_name}/stim/output/search")
async def stim_search(request: web.Request) -> web.Response:
    return await search(request, "stim")


@routes.get("/v1/repo/{repo_name}/targets/{target_name}/stim/output/sample")
async def stim_sample(request: web.Request) -> web.Response:
    return await sample(request, "stim")


@routes.get("/v1/repo/{repo_name}/targets/{target_name}/stim/output/stats")
async def stim_stats(request: web.Request) -> web.Response:
    return await stats(request, "stim")


@routes.get("/v1/repo/{repo_name}/targets/{target_name}/rollout/output/search")
async def rollout_search(request: web.Request) -> web.Response:
    return await search(request, "rollout")


@routes.get("/v1/repo/{repo_name}/targets/{target_name}/rollout/output/sample")
async def rollout_sample(request: web.Request) -> web.Response:
    return await sample(request, "rollout")


@routes.get("/v1/repo/{repo_name}/targets/{target_name}/rollout/output/stats")
async def rollout_stats(request: web.Request) -> web.Response:
    return await stats(request, "rollout")
