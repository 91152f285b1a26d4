"""What the live-job benchmarks share (bench_engine.py, bench_rollout.py): a ``stimserver serve``
subprocess pointed at a local fake provider, a job POSTed while its output is paged, and the table.

Not a script of its own: the two import it (``scripts/`` is put on ``sys.path`` by them).
"""
from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.serverproc import free_port  # noqa: E402

KEY = "bench-master-key-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {KEY}", "X-User-Id": "alice"}


@asynccontextmanager
async def serving(data: Path, provider_url: str, **env: str) -> AsyncIterator[str]:
    """``stimserver serve`` on ``data`` (access log off, the OpenAI-compatible ``provider_url``); its URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STIMSERVER_MASTER_KEY": KEY, "STIMSERVER_ACCESS_LOG": "false",
           "OPENAI_BASE_URL": f"{provider_url}/v1", "OPENAI_API_KEY": "", "STIMSERVER_LLM_PROVIDER": "openai", **env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stimserver", "serve", "--data", str(data), "--port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        await proc.wait()


async def wait_up(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(300):
        try:
            async with session.get(url + "/v1/health") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("stimserver did not start")


@dataclass
class Watched:
    """A job run while its output was paged: seconds to its first line and to its end, page times, last page."""

    first: float | None
    total: float
    pages: list[float]
    last: dict[str, Any]


async def run_and_page(session: aiohttp.ClientSession, job_url: str,
                       page_query: Callable[[int, int], str]) -> Watched:
    """POST ``job_url`` and page ``job_url/output?<page_query(pages so far, lines)>`` until the job ends."""
    start = time.perf_counter()

    async def post() -> None:
        async with session.post(job_url) as r:  # waits up to 1 s for the job; pages go on meanwhile
            r.raise_for_status()

    posted = asyncio.create_task(post())
    first: float | None = None
    pages: list[float] = []
    lines = 0
    while True:
        t0 = time.perf_counter()
        async with session.get(f"{job_url}/output?{page_query(len(pages), lines)}") as r:
            body = await r.json()
        pages.append(time.perf_counter() - t0)
        lines = body["lines"] or 0
        if first is None and lines:
            first = time.perf_counter() - start
        if body["status"] in ("complete", "failed"):
            total = time.perf_counter() - start
            await posted
            break
        await asyncio.sleep(0.01)
    if body["status"] != "complete":
        raise RuntimeError(f"the job failed: {body['error']}")
    return Watched(first, total, pages, body)


def latency_summary(pages: list[float]) -> str:
    """``median / p95 / max ms`` of page times in seconds."""
    ms = sorted(p * 1000 for p in pages)
    return f"{statistics.median(ms):.1f} / {ms[max(0, int(len(ms) * 0.95) - 1)]:.1f} / {ms[-1]:.1f} ms"


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")
