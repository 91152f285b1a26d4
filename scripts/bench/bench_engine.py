#!/usr/bin/env python3
"""The LLM engine under load: a big oneshot_qs job against a slow local fake provider.

    PYTHONPATH=$PWD python3 scripts/bench/bench_engine.py [--numq 10000] [--latency 0.2] [--concurrency 50]

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
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from livebench import HEADERS, latency_summary, print_table, run_and_page, serving, wait_up  # noqa: E402

from stimserver.store.paths import DataPaths  # noqa: E402
from tests.jobs.conftest import numbered_answer, seed_target  # noqa: E402
from tests.llm.fake_providers import FakeOpenAI  # noqa: E402

CHUNK = 50


async def bench(numq: int, latency: float, concurrency: int) -> list[tuple[str, str]]:
    fake = FakeOpenAI(api_key=None)
    fake.latency = latency
    fake.default = lambda body: numbered_answer(body["messages"][-1]["content"])
    await fake.start()
    data = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    seed_target(DataPaths(data), [{"type": "custom", "model": "bench-model", "numq": numq,
                                   "template_content": "Write exactly ${numq} questions for ${prompt_u}"}],
                max_concurrency=concurrency)
    try:
        async with serving(data, fake.url) as url, aiohttp.ClientSession(headers=HEADERS) as session:
            await wait_up(session, url)
            stim = f"{url}/v1/repo/r1/targets/t1/stim"
            run = await run_and_page(session, stim, lambda n, lines: "offset=0&limit=100")
    finally:
        await fake.close()
    requests = math.ceil(numq / CHUNK)
    ideal = requests * latency / concurrency
    return [
        ("questions / requests", f"{numq} / {requests} (provider saw {len(fake.received)})"),
        ("latency × concurrency",
         f"{latency * 1000:.0f} ms × {concurrency} (max in flight seen: {fake.max_in_flight})"),
        ("time to first committed line", f"{run.first:.2f} s" if run.first is not None else "n/a"),
        ("total time", f"{run.total:.2f} s"),
        ("ideal (requests × latency / concurrency)", f"{ideal:.2f} s"),
        ("total / ideal", f"{run.total / ideal:.2f}"),
        ("page reads while running", str(len(run.pages))),
        ("page latency median / p95 / max", latency_summary(run.pages)),
        ("usage", str(run.last["usage"])),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--numq", type=int, default=10_000)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=50)
    args = ap.parse_args()
    print_table(asyncio.run(bench(args.numq, args.latency, args.concurrency)))


if __name__ == "__main__":
    main()
