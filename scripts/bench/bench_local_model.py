#!/usr/bin/env python3
"""Who is the bottleneck of a rollout against a real local model: stimserver, or the model server?

    scripts/local-model --port 8001 &      # the model server first (~90 s to load)
    PYTHONPATH=$PWD python3 scripts/bench/bench_local_model.py [--model-url http://127.0.0.1:8001/v1]
        [--model smollm2-135m-instruct] [--concurrency C] [--stimuli 32] [--trajectories 2]
        [--max-tokens 32] [--rounds 4] [--skip-sweep] [--openai-server transformers] [--time-limit 1800]

Why: a rollout is as fast as the model server lets it be, and stimserver should cost it nothing;
against a fake provider (bench_rollout.py) that cannot be told. Here the same chat requests
(system "Answer in French only.", user: one of the first ``--stimuli`` questions of
data/datasets/everyday.jsonl; the model, temperature 1.0, ``--max-tokens``) go to the real model
server two ways: A, a bare aiohttp client with an asyncio.Semaphore(C); B, ``stimserver serve``
(a subprocess on a fresh data directory) running the rollout of a target with a ``hardcoded``
generator of those questions, ``--trajectories`` per stimulus, max_concurrency C.

First, unless ``--skip-sweep``, the bare client alone at concurrency 4, 8, 16 and 32 (2 × C
requests each, at least 16) finds the model server's best completion tokens/s; C is that (or
``--concurrency``). Then ``--rounds`` rounds of each, in ABBA order so that a drift of the machine
hits both alike, each of stimuli × trajectories requests; B gets a fresh target per round (t-r1,
t-r2, …) so nothing is reused, its stim job run beforehand. The measure is completion tokens per
wall second (sampling makes answer lengths vary): for A from the first request to the last answer,
for B from ``POST …/rollout`` to the status ``complete``, its tokens summed from the committed
lines' ``response.usage``. Printed: the sweep, every round (with stimserver's CPU seconds in B),
and the medians and their ratio stimserver / bare (the goal: at least 0.95).

Loopback model URLs only; every request has a timeout and the whole run ``--time-limit`` seconds.
``--openai-server transformers`` (the default, for scripts/local-model) makes both clients ask
transformers serve to sample, as STIMSERVER_OPENAI_SERVER=transformers does; ``openai`` for others.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rollout import until_complete  # noqa: E402
from livebench import HEADERS, ROOT, print_table, serving, wait_up  # noqa: E402

from stimserver.llm.wire import SAMPLING_BODY  # noqa: E402

SYSTEM = "Answer in French only."
TEMPERATURE = 1.0
SWEEP = (4, 8, 16, 32)
DEFAULT_CONCURRENCY = 16  # the model server's usual best on the 2-core machine, when the sweep is skipped
REQUEST_TIMEOUT = 180.0
REPO, PROMPT = "bench", "french"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Round:
    """One round: ``requests`` sent, ``failed`` of them without an answer, completion tokens, wall seconds."""

    client: str
    requests: int
    failed: int
    tokens: int
    seconds: float
    cpu: float | None = None  # stimserver's CPU seconds in the round (B only)

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def load_questions(n: int) -> list[str]:
    path = ROOT / "data" / "datasets" / "everyday.jsonl"
    questions = []
    with path.open() as f:
        for line in f:
            if len(questions) == n:
                break
            if line.strip():
                questions.append(json.loads(line)["question"])
    if len(questions) < n:
        raise SystemExit(f"{path} has only {len(questions)} questions; asked for --stimuli {n}")
    return questions


def chat_body(model: str, question: str, max_tokens: int, server: str) -> dict[str, Any]:
    """The request stimserver sends for a trajectory, extra body included."""
    return {"model": model, "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
            "temperature": TEMPERATURE, "max_tokens": max_tokens, **SAMPLING_BODY.get(server, {})}


async def bare_round(session: aiohttp.ClientSession, model_url: str, bodies: list[dict[str, Any]],
                     concurrency: int) -> Round:
    """A: ``bodies`` sent with at most ``concurrency`` in flight."""
    gate = asyncio.Semaphore(concurrency)
    failed = 0

    async def one(body: dict[str, Any]) -> int:
        nonlocal failed
        async with gate:
            try:
                async with session.post(f"{model_url}/chat/completions", json=body) as r:
                    answer = await r.json(content_type=None)
                    if r.status != 200:
                        failed += 1
                        return 0
            except (aiohttp.ClientError, TimeoutError, ValueError):
                failed += 1
                return 0
        return int(((answer or {}).get("usage") or {}).get("completion_tokens") or 0)

    start = time.perf_counter()
    tokens = await asyncio.gather(*(one(b) for b in bodies))
    return Round("bare", len(bodies), failed, sum(tokens), time.perf_counter() - start)


def child_pids() -> list[int]:
    """This process's children (the ``stimserver serve`` subprocess among them)."""
    pids = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return pids


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of ``pid`` (and its waited-for children), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def find_server_pid(before: set[int]) -> int | None:
    for pid in set(child_pids()) - before:
        try:
            if b"stimserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            pass
    return None


async def post_ok(session: aiohttp.ClientSession, url: str, body: dict[str, Any] | None = None) -> None:
    async with session.post(url, json=body) as r:
        if r.status >= 400:
            raise RuntimeError(f"POST {url}: {r.status} {await r.text()}")


async def prepare_targets(session: aiohttp.ClientSession, url: str, names: list[str], questions: list[str],
                          args: argparse.Namespace, concurrency: int) -> None:
    """The repo, the French prompt and one target per B round, each with its stim job complete."""
    base = f"{url}/v1/repo/{REPO}"
    await post_ok(session, f"{url}/v1/repo", {"repo_name": REPO})
    await post_ok(session, f"{base}/prompts", {"prompt_name": PROMPT, "messages": [{"role": "system",
                                                                                    "content": SYSTEM}]})
    for name in names:
        await post_ok(session, f"{base}/targets", {"target_name": name, "template": "default", "overrides": {
            "teacher_prompt": PROMPT, "student_prompt": "", "generators": [{"type": "hardcoded",
                                                                           "questions": questions}],
            "model_name": args.model, "num_traj_per_stimulus": args.trajectories, "temperature": TEMPERATURE,
            "max_tokens": args.max_tokens, "max_concurrency": concurrency}})
        await post_ok(session, f"{base}/targets/{name}/stim")
        await until_complete(session, f"{base}/targets/{name}/stim")


async def rollout_round(session: aiohttp.ClientSession, url: str, name: str, pid: int | None) -> Round:
    """B: the rollout of target ``name``, timed from its POST to its status complete; tokens from its lines."""
    job = f"{url}/v1/repo/{REPO}/targets/{name}/rollout"
    cpu0 = cpu_seconds(pid)
    start = time.perf_counter()
    await post_ok(session, job)
    status = await until_complete(session, job)
    seconds = time.perf_counter() - start
    cpu1 = cpu_seconds(pid)
    tokens = lines = 0
    while lines < status["lines"]:
        async with session.get(f"{job}/output?offset={lines}&limit=1000") as r:
            page = await r.json()
        if not page["output"]:
            break
        for line in page["output"]:
            tokens += int((((line.get("response") or {}).get("usage")) or {}).get("completion_tokens") or 0)
        lines += len(page["output"])
    failed = (status.get("failed_trajectories") or 0) + status["total_expected"] - lines
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return Round("stimserver", status["total_expected"], failed, tokens, seconds, cpu)


def sweep_table(rounds: dict[int, Round]) -> None:
    print("| concurrency | requests | failed | completion tokens | seconds | tokens/s |\n"
          "|------------:|---------:|-------:|------------------:|--------:|---------:|")
    for c, r in rounds.items():
        print(f"| {c} | {r.requests} | {r.failed} | {r.tokens} | {r.seconds:.2f} | {r.rate:.1f} |")


def rounds_table(rounds: list[Round]) -> None:
    print("| round | client | requests | failed | completion tokens | seconds | tokens/s | stimserver CPU s |\n"
          "|------:|--------|---------:|-------:|------------------:|--------:|---------:|-----------------:|")
    for i, r in enumerate(rounds, 1):
        cpu = "" if r.cpu is None else f"{r.cpu:.2f}"
        print(f"| {i} | {r.client} | {r.requests} | {r.failed} | {r.tokens} | {r.seconds:.2f} | {r.rate:.1f} | {cpu} |")


async def bench(args: argparse.Namespace) -> None:
    model_url = args.model_url.rstrip("/")
    questions = load_questions(args.stimuli)
    bodies = [chat_body(args.model, q, args.max_tokens, args.openai_server)
              for q in questions for _ in range(args.trajectories)]
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector,
                                     headers={"Authorization": "Bearer local"}) as model:
        warm = await bare_round(model, model_url, bodies[:1], 1)
        if warm.failed:
            raise SystemExit(f"the model server at {model_url} does not answer {args.model!r}")
        best: int | None = None
        if not args.skip_sweep:
            swept: dict[int, Round] = {}
            for c in SWEEP:
                n = max(16, 2 * c)
                swept[c] = await bare_round(model, model_url, [bodies[i % len(bodies)] for i in range(n)], c)
            best = max(swept, key=lambda c: swept[c].rate)
            print(f"## The bare client alone (max_tokens {args.max_tokens})\n")
            sweep_table(swept)
            print()
        concurrency = args.concurrency or best or DEFAULT_CONCURRENCY
        names = [f"t-r{i}" for i in range(1, args.rounds + 1)]
        rounds: list[Round] = []
        with tempfile.TemporaryDirectory(prefix="bench-local-model-") as data:
            before = set(child_pids())
            async with serving(Path(data), model_url, OPENAI_BASE_URL=model_url,
                               STIMSERVER_OPENAI_SERVER=args.openai_server,
                               STIMSERVER_LLM_TIMEOUT=str(REQUEST_TIMEOUT),
                               STIMSERVER_LLM_MAX_CONCURRENT=str(max(64, concurrency))) as url, \
                    aiohttp.ClientSession(headers=HEADERS, timeout=timeout) as stim:
                await wait_up(stim, url)
                pid = find_server_pid(before)
                await prepare_targets(stim, url, names, questions, args, concurrency)
                for i, name in enumerate(names):  # AB BA AB BA …
                    order = "AB" if i % 2 == 0 else "BA"
                    for client in order:
                        if client == "A":
                            rounds.append(await bare_round(model, model_url, bodies, concurrency))
                        else:
                            rounds.append(await rollout_round(stim, url, name, pid))
    bare = statistics.median(r.rate for r in rounds if r.client == "bare")
    served = statistics.median(r.rate for r in rounds if r.client == "stimserver")
    print(f"## Rounds in ABBA order (concurrency {concurrency})\n")
    rounds_table(rounds)
    print()
    print_table([
        ("concurrency used", f"{concurrency}" + (" (--concurrency)" if args.concurrency else "")),
        ("model server's best concurrency (sweep)", "not measured (--skip-sweep)" if best is None else str(best)),
        ("requests per round", f"{args.stimuli} stimuli × {args.trajectories} trajectories = {len(bodies)} "
                               f"(max_tokens {args.max_tokens}, temperature {TEMPERATURE})"),
        ("bare client tokens/s per round", ", ".join(f"{r.rate:.1f}" for r in rounds if r.client == "bare")),
        ("stimserver tokens/s per round", ", ".join(f"{r.rate:.1f}" for r in rounds if r.client == "stimserver")),
        ("median bare client tokens/s", f"{bare:.1f}"),
        ("median stimserver tokens/s", f"{served:.1f}"),
        ("ratio stimserver / bare (goal >= 0.95)", f"{served / bare:.3f}" if bare else "n/a"),
    ])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-url", default="http://127.0.0.1:8001/v1", help="an OpenAI-compatible base URL (loopback)")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--concurrency", type=int, help="default: the sweep's best (16 with --skip-sweep)")
    ap.add_argument("--stimuli", type=int, default=32)
    ap.add_argument("--trajectories", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4, help="rounds of each client")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--openai-server", default="transformers", choices=("openai", "transformers"))
    ap.add_argument("--time-limit", type=float, default=1800.0, help="seconds for the whole run")
    args = ap.parse_args()
    if urlparse(args.model_url).hostname not in LOOPBACK:
        ap.error("--model-url must be a loopback address")
    for name in ("concurrency", "stimuli", "trajectories", "max_tokens", "rounds"):
        value = getattr(args, name)
        if value is not None and not 1 <= value <= 10_000:
            ap.error(f"--{name.replace('_', '-')} must be between 1 and 10000")

    async def bounded() -> None:
        try:
            async with asyncio.timeout(args.time_limit):
                await bench(args)
        except TimeoutError:
            raise SystemExit(f"stopped: the run took over --time-limit {args.time_limit:.0f} s") from None

    asyncio.run(bounded())


if __name__ == "__main__":
    main()
