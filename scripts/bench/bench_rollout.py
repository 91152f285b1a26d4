#!/usr/bin/env python3
"""A rollout under load: stimuli × trajectories against a slow local fake provider.

    PYTHONPATH=$PWD python3 scripts/bench/bench_rollout.py [--stimuli 2000] [--trajectories 4] [--latency 0.3]
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
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from livebench import HEADERS, latency_summary, print_table, run_and_page, serving, wait_up  # noqa: E402

from stimserver.store.paths import DataPaths  # noqa: E402
from tests.jobs.conftest import hardcoded, seed_target  # noqa: E402
from tests.llm.fake_providers import FakeOpenAI, ProviderThread, Reply  # noqa: E402


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
    try:
        async with serving(data, fake.url, STIMSERVER_LLM_MAX_CONCURRENT=str(max(64, concurrency))) as url, \
                aiohttp.ClientSession(headers=HEADERS) as session:
            await wait_up(session, url)
            target = f"{url}/v1/repo/r1/targets/t1"
            async with session.post(target + "/stim") as r:
                r.raise_for_status()
            await until_complete(session, target + "/stim")
            # offset 0 and the newest 100 lines, alternately
            run = await run_and_page(session, target + "/rollout",
                                     lambda n, lines: f"offset={0 if n % 2 == 0 else max(0, lines - 100)}&limit=100")
    finally:
        provider.stop()
    requests = stimuli * trajectories
    ideal = requests * latency / concurrency
    body = run.last
    return [
        ("stimuli × trajectories", f"{stimuli} × {trajectories} = {requests} requests "
                                   f"(provider saw {len(fake.received)})"),
        ("latency × concurrency",
         f"{latency * 1000:.0f} ms × {concurrency} (max in flight seen: {fake.max_in_flight})"),
        ("time to first committed trajectory", f"{run.first:.2f} s" if run.first is not None else "n/a"),
        ("total time", f"{run.total:.2f} s"),
        ("ideal (requests × latency / concurrency)", f"{ideal:.2f} s"),
        ("total / ideal", f"{run.total / ideal:.2f}"),
        ("lines committed / expected", f"{body['lines']} / {body['total_expected']}"),
        ("page reads while running (limit 100)", str(len(run.pages))),
        ("page latency median / p95 / max", latency_summary(run.pages)),
        ("usage", str(body["usage"])),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stimuli", type=int, default=2000)
    ap.add_argument("--trajectories", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args()
    print_table(asyncio.run(bench(args.stimuli, args.trajectories, args.latency, args.concurrency)))


if __name__ == "__main__":
    main()
