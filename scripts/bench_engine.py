#!/usr/bin/env python3
"""The LLM engine under load: a big oneshot_qs job against a slow local fake provider.

    PYTHONPATH=$PWD python3 scripts/bench_engine.py [--numq 10000] [--latency 0.2] [--concurrency 50]

Starts a local fake OpenAI-compatible provider (tests/llm/fake_providers.py) in this process,
answering every request after ``--latency`` seconds with as many distinct questions as asked,
and ``stimserver serve`` as a subprocess on a fresh data directory pointed at it. It writes a
target with one ``oneshot_qs`` generator, POSTs its stim job, then pages ``…/stim/output``
(offset 0, 100 lines) in a loop while the job runs. Prints a table: time to the first
committed line, total time against the ideal (requests × latency / concurrency), and the
page latency (median, p95, max) while the job runs.
"""
from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stimserver.store.paths import DataPaths  # noqa: E402
from tests.jobs.conftest import numbered_answer, seed_target  # noqa: E402
from tests.llm.fake_providers import FakeOpenAI  # noqa: E402

KEY = "bench-master-key-0123456789abcdef"
CHUNK = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


async def bench(numq: int, latency: float, concurrency: int) -> list[tuple[str, str]]:
    fake = FakeOpenAI(api_key=None)
    fake.latency = latency
    fake.default = lambda body: numbered_answer(body["messages"][-1]["content"])
    await fake.start()
    data = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    seed_target(DataPaths(data), [{"type": "custom", "model": "bench-model", "numq": numq,
                                   "template_content": "Write exactly ${numq} questions for ${prompt_u}"}],
                max_concurrency=concurrency)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STIMSERVER_MASTER_KEY": KEY, "STIMSERVER_ACCESS_LOG": "false",
           "OPENAI_BASE_URL": f"{fake.url}/v1", "OPENAI_API_KEY": "", "STIMSERVER_LLM_PROVIDER": "openai"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stimserver", "serve", "--data", str(data), "--port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {KEY}", "X-User-Id": "alice"}
    stim = f"{url}/v1/repo/r1/targets/t1/stim"
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            await wait_up(session, url)
            start = time.perf_counter()

            async def run() -> None:
                async with session.post(stim) as r:  # waits up to 1 s for the job; pages go on meanwhile
                    r.raise_for_status()

            posted = asyncio.create_task(run())
            first: float | None = None
            pages: list[float] = []
            while True:
                t0 = time.perf_counter()
                async with session.get(stim + "/output?offset=0&limit=100") as r:
                    body = await r.json()
                pages.append(time.perf_counter() - t0)
                if first is None and body["lines"]:
                    first = time.perf_counter() - start
                if body["status"] in ("complete", "failed"):
                    total = time.perf_counter() - start
                    await posted
                    break
                await asyncio.sleep(0.01)
            if body["status"] != "complete":
                raise RuntimeError(f"the job failed: {body['error']}")
    finally:
        proc.terminate()
        await proc.wait()
        await fake.close()
    requests = math.ceil(numq / CHUNK)
    ideal = requests * latency / concurrency
    pages.sort()
    ms = [p * 1000 for p in pages]
    return [
        ("questions / requests", f"{numq} / {requests} (provider saw {len(fake.received)})"),
        ("latency × concurrency",
         f"{latency * 1000:.0f} ms × {concurrency} (max in flight seen: {fake.max_in_flight})"),
        ("time to first committed line", f"{first:.2f} s"),
        ("total time", f"{total:.2f} s"),
        ("ideal (requests × latency / concurrency)", f"{ideal:.2f} s"),
        ("total / ideal", f"{total / ideal:.2f}"),
        ("page reads while running", str(len(ms))),
        ("page latency median / p95 / max", f"{statistics.median(ms):.1f} / {ms[int(len(ms) * 0.95) - 1]:.1f} / "
                                             f"{ms[-1]:.1f} ms"),
        ("usage", str(body["usage"])),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--numq", type=int, default=10_000)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=50)
    args = ap.parse_args()
    rows = asyncio.run(bench(args.numq, args.latency, args.concurrency))
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")


if __name__ == "__main__":
    main()
