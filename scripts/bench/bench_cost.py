#!/usr/bin/env python3
"""What a rollout costs with and without prompt caching and batches, and how close the estimate was.

    PYTHONPATH=$PWD python3 scripts/bench/bench_cost.py [--stimuli 1000] [--trajectories 2]
                                                      [--prompt-tokens 3000] [--max-tokens 100]
                                                      [--model claude-sonnet-4-5]

A local fake of the Anthropic API (tests/llm/fake_providers.py, on its own thread) answers the
Messages API, Message Batches and count_tokens, and keeps a prompt cache the way the real one
does: a request reads a prefix only when a byte-identical one, marked with ``cache_control``,
was written before (``auto_cache``). Its token counts are words. Every answer is as long as the
model "wants" (``--answer-words``, 60 to 300 words by default, seeded per request) cut at
``max_tokens``, as a real model's are: with the default 100, most answers are cut.

Two ``stimserver serve`` processes run one after the other on fresh data directories: one with
``STIMSERVER_ANTHROPIC_CACHE=off``, one with ``5m``; each runs a target sent one by one and a
target with ``batch: true``, every target the same rollout (``--stimuli`` questions ×
``--trajectories``, the same ``--prompt-tokens``-word teacher prompt), each on a cold cache.
Before each rollout the estimate endpoint is asked for its figure, and again while it runs once a
quarter of the requests are answered (its ``run.projected_usd``); after, the status's
``usage.cost_usd`` (the answers priced by the shipped price table) is read. Prints the costs,
their ratio to the baseline (no cache, one by one) and both estimates against the final cost.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from livebench import HEADERS, print_table, serving, wait_up  # noqa: E402

from stimserver.store.paths import DataPaths  # noqa: E402
from tests.jobs.conftest import hardcoded, seed_target  # noqa: E402
from tests.llm.fake_providers import FakeAnthropic, ProviderThread, Reply  # noqa: E402

WORDS = ("the of and to in is that for it as with was on be by this are from or at an which have not but "
         "all were when we there can had their if will one each about how up out them then she many some so "
         "these would other into has more her two like him see time could no make than first been its who now "
         "people my made over did down only way find use may water long little very after words called just "
         "where most know get through back much before go good new write our used me man too any day same").split()


QUESTION = "In a few sentences, what should a beginner know about topic "


def teacher_prompt(words: int) -> str:
    rng = random.Random(7)
    return " ".join(rng.choice(WORDS) for _ in range(words))


class Model:
    """Answers of ``low``–``high`` words, seeded by the request, cut at max_tokens (a word is a token here)."""

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high
        self.asked: dict[str, int] = {}

    def __call__(self, body: dict[str, Any]) -> Reply:
        # Seeded by the question and how often it was asked in this server's run: every mode gets the same
        # answers, so their costs differ by the price of the tokens alone.
        last = body["messages"][-1]["content"]
        text = last if isinstance(last, str) else last[0]["text"]
        seen = self.asked[text] = self.asked.get(text, 0) + 1
        rng = random.Random(zlib.crc32(f"{text}|{seen}".encode()))
        wanted = rng.randint(self.low, self.high)
        n = min(wanted, int(body["max_tokens"]))
        return Reply(" ".join(rng.choice(WORDS) for _ in range(n)), stop="max_tokens" if n < wanted else None)


async def status_of(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as r:
        return await r.json()  # type: ignore[no-any-return]


async def until_done(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    while True:
        body = await status_of(session, url)
        if body["status"] == "complete":
            return body
        if body["status"] == "failed":
            raise RuntimeError(f"the job failed: {body['error']}")
        await asyncio.sleep(0.2)


async def run_target(session: aiohttp.ClientSession, url: str, target: str) -> dict[str, Any]:
    base = f"{url}/v1/repo/r1/targets/{target}"
    async with session.post(base + "/stim") as r:
        r.raise_for_status()
    await until_done(session, base + "/stim")
    async with session.get(base + "/rollout/estimate") as r:
        estimate = await r.json()
        if r.status != 200:
            raise RuntimeError(f"estimate: {estimate}")
    started = time.monotonic()
    async with session.post(base + "/rollout") as r:
        r.raise_for_status()
    projected = None
    while True:
        status = await status_of(session, base + "/rollout")
        if status["status"] in ("complete", "failed"):
            break
        usage = status.get("usage") or {}
        if projected is None and usage.get("requests", 0) >= estimate["requests"] // 4:
            async with session.get(base + "/rollout/estimate") as r:
                during = await r.json()
            projected = (during.get("run") or {}).get("projected_usd"), usage["requests"]
        await asyncio.sleep(0.05)
    done = await until_done(session, base + "/rollout")
    return {"estimate": estimate, "status": done, "projected": projected, "seconds": time.monotonic() - started}


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    provider = ProviderThread(FakeAnthropic())
    fake = provider.start()
    fake.auto_cache = True
    fake.default = Model(*args.answer_words)
    fake.batch_step_seconds = 0.02
    fake.batch_requests_per_step = 500
    system = [{"role": "system", "content": teacher_prompt(args.prompt_tokens)}]
    results = []
    try:
        for cache in ("off", "5m"):
            data = Path(tempfile.mkdtemp(prefix=f"bench-cost-{cache}-"))
            paths = DataPaths(data)
            for target, batch in (("one-by-one", False), ("batched", True)):
                seed_target(paths, [hardcoded(args.stimuli, prefix=QUESTION)], target=target, teacher_messages=system,
                            model_name=args.model, num_traj_per_stimulus=args.trajectories,
                            max_tokens=args.max_tokens, max_concurrency=32, batch=batch)
            env = {**fake.env(), "STIMSERVER_LLM_PROVIDER": "anthropic", "STIMSERVER_ANTHROPIC_CACHE": cache,
                   "STIMSERVER_BATCH_POLL_SECONDS": "0.2", "STIMSERVER_BATCH_SIZE": "500"}
            async with serving(data, fake.url, **env) as url, aiohttp.ClientSession(headers=HEADERS) as session:
                await wait_up(session, url)
                for target, batch in (("one-by-one", False), ("batched", True)):
                    provider.call(fake.prompt_cache.clear)  # each target starts on a cold cache
                    provider.call(fake.default.asked.clear)  # and is asked the same questions afresh
                    run = await run_target(session, url, target)
                    results.append({"cache": cache, "batch": batch, **run})
    finally:
        provider.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stimuli", type=int, default=1000)
    parser.add_argument("--trajectories", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=3000)
    parser.add_argument("--max-tokens", type=int, default=100)
    parser.add_argument("--model", default="claude-sonnet-4-5")
    parser.add_argument("--answer-words", type=int, nargs=2, default=(60, 300), metavar=("LOW", "HIGH"))
    args = parser.parse_args()
    results = asyncio.run(bench(args))
    base = next(r for r in results if r["cache"] == "off" and not r["batch"])["status"]["usage"]["cost_usd"]
    names = {("off", False): "no caching, one by one (baseline)", ("5m", False): "prompt caching",
             ("off", True): "batch", ("5m", True): "prompt caching + batch"}
    asked = {("5m", False): "≤ 0.25", ("off", True): "≤ 0.5"}
    rows = []
    print(f"{args.stimuli} stimuli × {args.trajectories} trajectories, a {args.prompt_tokens}-token teacher prompt, "
          f"max_tokens {args.max_tokens}, {args.model} at the shipped price table "
          f"({results[0]['status']['usage']['price_table']})\n")
    for r in results:
        usage, est = r["status"]["usage"], r["estimate"]
        cost = usage["cost_usd"]
        parts = [f"${cost:.4f} · {cost / base:.3f}× (asked {asked.get((r['cache'], r['batch']), '–')})",
                 f"estimate ${est['estimate_usd']:.4f} ({est['estimate_usd'] / cost - 1:+.1%}), range "
                 f"${est['cost'][est['mode']]['low_usd']:.2f}–${est['high_usd']:.2f}"]
        if r["projected"] and r["projected"][0]:
            parts.append(f"projected at {r['projected'][1]} answers ${r['projected'][0]:.4f} "
                         f"({r['projected'][0] / cost - 1:+.1%})")
        parts.append(f"{usage['requests']} answers, {usage['input_tokens']:,} in ({usage['cached_input_tokens']:,} "
                     f"cached, {usage['cache_write_tokens']:,} written), {usage['output_tokens']:,} out")
        parts.append(f"{r['seconds']:.0f} s")
        rows.append((names[(r["cache"], r["batch"])], " · ".join(parts)))
    print_table(rows)
    first = results[0]["estimate"]["tokens"]
    print(f"\nestimate counted by {first['counted_by']}: prefix {first['prefix']} tokens, stimulus mean "
          f"{first['stimulus_mean']}, output {first['output_per_request']} per request ({first['output_source']})")


if __name__ == "__main__":
    main()
