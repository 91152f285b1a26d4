"""`stimserver worker` processes: killed mid-job and restarted, racing, stopped cleanly."""
from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

from stimserver.jobs import JobRef, transitions
from stimserver.store import output
from stimserver.store.locks import is_locked
from stimserver.store.presence import live_runners
from tests.llm.fake_providers import Slow

from .conftest import hardcoded, lines_of, numbered_answer, record_of, seed_target, wait_until

LOCAL = "llama3.1:8b"


class Worker:
    def __init__(self, data: Path, env: dict[str, str], log: Path) -> None:
        self.data, self.env, self.log = data, env, log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Worker:
        self._out = open(self.log, "ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "stimserver", "worker", "--data", str(self.data),
            env={**os.environ, **self.env}, stdout=self._out, stderr=self._out)
        return self

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await self.proc.wait()
        self._out.close()
        return code


@pytest.fixture
async def workers(paths, tmp_path):
    started: list[Worker] = []

    async def start(env: dict[str, str] | None = None) -> Worker:
        w = await Worker(paths.root, env or {}, tmp_path / f"worker-{len(started)}.log").start()
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc is not None and w.proc.returncode is None:
            await w.stop(signal.SIGKILL)


def ids(paths, ref):
    return [line["stimulus_id"] for line in lines_of(paths, ref)]


def ended(paths, ref):
    record = record_of(paths, ref)
    return record if record and record["status"] in ("complete", "failed") else None


async def submit(paths, ref, generators):
    from stimserver.jobs.stim import StimKind
    from stimserver.store.datasets import Datasets

    record = seed_target(paths, generators, target=ref.target)
    return await asyncio.to_thread(transitions.submit, paths, StimKind(), ref, record, Datasets(paths.root))


def blocking_llm(server, blocked: set[str]):
    """Answers every request, except that the first one of a template marked in ``blocked`` hangs."""
    def decide(body):
        prompt = body["messages"][-1]["content"]
        tag = prompt.split(" ", 1)[0]
        if tag in blocked:
            blocked.discard(tag)
            return Slow(120)
        return numbered_answer(prompt)
    server.script(*[decide] * 50)


async def test_a_killed_worker_is_resumed_without_duplicates(paths, workers, openai_server):
    ref = JobRef("alice", "r1", "t1", "stim")
    gens = [hardcoded(120),
            {"type": "custom", "model": LOCAL, "numq": 60,
             "template_content": "A: write exactly ${numq} for ${prompt_u}"},
            {"type": "custom", "model": LOCAL, "numq": 40,
             "template_content": "B: write exactly ${numq} for ${prompt_u}"}]
    await submit(paths, ref, gens)
    blocking_llm(openai_server, {"B:"})
    env = {**openai_server.env(), "STIMSERVER_LLM_MAX_RETRIES": "0", "STIMSERVER_LLM_TIMEOUT": "100"}
    first = await workers(env)
    jdir = ref.job_dir(paths)
    await wait_until(lambda: output.line_count(jdir) == 180 and len(openai_server.received) == 3,
                     "the worker to commit 180 lines and wait on the model", timeout=60)
    assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert record_of(paths, ref)["status"] == "running" and not is_locked(output.lock_path(jdir))
    asked_before = Counter(r.body["messages"][-1]["content"][:2] for r in openai_server.received)
    assert asked_before == {"A:": 2, "B:": 1}

    await workers(env)
    record = await wait_until(lambda: ended(paths, ref), "the restarted worker to finish", timeout=60)
    assert record["status"] == "complete", record["error"]
    assert ids(paths, ref) == list(range(220))  # each stimulus exactly once, in order
    asked = Counter(r.body["messages"][-1]["content"][:2] for r in openai_server.received)
    assert asked == {"A:": 2, "B:": 2}  # generator A's questions came from its checkpoint
    assert record["attempt"] == 2 and record["interruptions"] == 1 and record["resumed_from_line"] == 180


async def test_two_workers_racing_run_each_job_once(paths, workers):
    refs = [JobRef("alice", "r1", f"t{i}", "stim") for i in range(5)]
    pair = [await workers(), await workers()]
    await wait_until(lambda: live_runners(paths) == 2, "both workers to be up")
    for ref in refs:  # both scan for these every two seconds
        await submit(paths, ref, [hardcoded(400), {"type": "from_dataset", "dataset": "arithmetic", "numq": 150}])
    for ref in refs:
        record = await wait_until(lambda ref=ref: ended(paths, ref), f"{ref} to finish", timeout=60)
        assert record["status"] == "complete" and record["attempt"] == 1  # claimed exactly once
        assert ids(paths, ref) == list(range(550))
    assert all(w.proc.returncode is None for w in pair)
    assert [await w.stop() for w in pair] == [0, 0]
    assert live_runners(paths) == 0


async def test_sigterm_hands_the_job_back(paths, workers, openai_server):
    ref = JobRef("alice", "r1", "t1", "stim")
    await submit(paths, ref, [hardcoded(10), {"type": "custom", "model": LOCAL, "numq": 5,
                                              "template_content": "C: exactly ${numq} for ${prompt_u}"}])
    blocking_llm(openai_server, {"C:"})
    env = {**openai_server.env(), "STIMSERVER_LLM_MAX_RETRIES": "0"}
    w = await workers(env)
    await wait_until(lambda: len(openai_server.received) == 1 and output.line_count(ref.job_dir(paths)) == 10,
                     "the worker to wait on the model")
    assert await w.stop(signal.SIGTERM) == 0
    record = record_of(paths, ref)
    assert record["status"] == "pending" and record["worker"] is None
    assert "job runner" in (Path(w.log).read_text())
    await workers(env)
    record = await wait_until(lambda: ended(paths, ref), "the next worker to finish")
    assert record["status"] == "complete" and ids(paths, ref) == list(range(15)) and record["interruptions"] == 0


def test_a_broken_price_table_stops_the_worker_with_one_line(tmp_path, capsys):
    from stimserver.config import Settings
    from stimserver.worker import run_worker

    (tmp_path / "prices.json").write_text("{")
    assert run_worker(Settings.build(data_dir=tmp_path, master_key="k" * 20, access_log=False)) == 2
    err = capsys.readouterr().err
    assert err.startswith("stimserver: price table:") and "not valid JSON" in err and "Traceback" not in err
