#!/usr/bin/env python3
"""A rollout under load: stimuli × trajectories against a slow local fake provider.

    PYTHONPATH=$PWD python3 scripts/bench_rollout.py [--stimuli 2000] [--trajectories 4] [--latency 0.3]
                                                      [--concurrency 64]

Starts a local fake OpenAI-compatible provider (tests/llm/fake_providers.py) on its own
thread, answering every request after ``--latency`` seconds, and ``stimserver serve`` as a
subprocess on a fresh data directory pointed at it. It writes a target with one
``hardcoded`` generator of ``--stimuli`` questions, runs its stim job, then POSTs the
rollout and pages ``…/rollout/output`` (offset 0 and the newest 100 lines, alternately) in
a loop while it runs. Prints a table: time to the first committed trajectory, total time
against the ideal (requests × latency / concurrency), and the page latency (median, p95,
max) while the rollout runs.
"""
from __future__ import annotations

import argparse
import asyncio
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
from tests.jobs.conftest import hardcoded, seed_target  # noqa: E402
from tests.llm.fake_providers import FakeOpenAI, ProviderThread, Reply  # noqa: E402

KEY = "bench-master-key-0123456789abcdef"


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


async def until_complete(session: aiohttp.ClientSession, url: str) -> dict:
    while True:
        async with session.get(url) as r:
            body = await r.json()
        if body["status"] == "complete":
            return body
        if body["status"] == "failed":
            raise RuntimeError(f"the job failed: {body['error']}")
        await asyncio.sleep(0.05)


async def bench(stimuli: int, trajectories: int, latency: float, concurrency: int) -> list[tuple[str, str]]:
    provider = ProviderThread(FakeOpenAI(api_key=None))
    fake = provider.start()
    fake.latency = latency
    fake.default = lambda body: Reply(f"An answer to {body['messages'][-1]['content']} in a few words.")
    data = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    seed_target(DataPaths(data), [hardcoded(stimuli)], model_name="bench-model", num_traj_per_stimulus=trajectories,
                max_concurrency=concurrency)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STIMSERVER_MASTER_KEY": KEY, "STIMSERVER_ACCESS_LOG": "false",
           "OPENAI_BASE_URL": f"{fake.url}/v1", "OPENAI_API_KEY": "", "STIMSERVER_LLM_PROVIDER": "openai",
           "STIMSERVER_LLM_MAX_CONCURRENT": str(max(64, concurrency))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stimserver", "serve", "--data", str(data), "--port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {KEY}", "X-User-Id": "alice"}
    target = f"{url}/v1/repo/r1/targets/t1"
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            await wait_up(session, url)
            async with session.post(target + "/stim") as r:
                r.raise_for_status()
            await until_complete(session, target + "/stim")
            start = time.perf_counter()

            async def run() -> None:
                async with session.post(target + "/rollout") as r:  # waits up to 1 s; pages go on meanwhile
                    r.raise_for_status()

            posted = asyncio.create_task(run())
            first: float | None = None
            pages: list[float] = []
            lines = 0
            while True:
                offset = 0 if len(pages) % 2 == 0 else max(0, lines - 100)
                t0 = time.perf_counter()
                async with session.get(f"{target}/rollout/output?offset={offset}&limit=100") as r:
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
                raise RuntimeError(f"the rollout failed: {body['error']}")
    finally:
        proc.terminate()
        await proc.wait()
        provider.stop()
    requests = stimuli * trajectories
    ideal = requests * latency / concurrency
    ms = sorted(p * 1000 for p in pages)
    return [
        ("stimuli × trajectories", f"{stimuli} × {trajectories} = {requests} requests "
                                   f"(provider saw {len(fake.received)})"),
        ("latency × concurrency",
         f"{latency * 1000:.0f} ms × {concurrency} (max in flight seen: {fake.max_in_flight})"),
        ("time to first committed trajectory", f"{first:.2f} s" if first is not None else "n/a"),
        ("total time", f"{total:.2f} s"),
        ("ideal (requests × latency / concurrency)", f"{ideal:.2f} s"),
        ("total / ideal", f"{total / ideal:.2f}"),
        ("lines committed / expected", f"{body['lines']} / {body['total_expected']}"),
        ("page reads while running (limit 100)", str(len(ms))),
        ("page latency median / p95 / max", f"{statistics.median(ms):.1f} / {ms[max(0, int(len(ms) * 0.95) - 1)]:.1f}"
                                             f" / {ms[-1]:.1f} ms"),
        ("usage", str(body["usage"])),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stimuli", type=int, default=2000)
    ap.add_argument("--trajectories", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    rows = asyncio.run(bench(args.stimuli, args.trajectories, args.latency, args.concurrency))
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")


if __name__ == "__main__":
    main()
