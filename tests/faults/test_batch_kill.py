"""SIGKILL a real ``stimserver serve`` while a batch-mode rollout's provider batches run, start it again.

The fake provider (Anthropic Message Batches or OpenAI Files + Batch) runs in this process on
its own thread, so it outlives every server and counts every batch it was asked to create and
every request it answered. Whatever the moment of the kill, the job must complete with every
line, in order, each answer its question's; every batch created exactly once, every request
batched (and paid for) exactly once, and the job's usage counting each answer exactly once at
the batch price. Lines served before a kill stay byte for byte what they were.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from stimserver.jobs import JobRef
from stimserver.jobs.batches import read_batches
from stimserver.llm.prices import shipped_prices
from stimserver.store import output
from stimserver.store.answers import answer_log_path
from stimserver.store.paths import DataPaths
from tests.jobs.conftest import hardcoded, lines_of, seed_target
from tests.llm.fake_providers import FakeAnthropic, FakeOpenAI, FakeProvider, ProviderThread, Reply
from tests.serverproc import ServerProcess, free_port, request

ROLLOUT = JobRef("alice", "r1", "t1", "rollout")
BASE = "/v1/repo/r1/targets/t1"
NOTHING_MOVES = 3600.0  # batch_step_seconds: a batch moves only when a hook says so


@dataclass(frozen=True)
class Provider:
    fake: Callable[[], FakeProvider]
    model: str
    create: str        # the call that creates (and bills) a batch
    sync: tuple[str, ...]  # the one-by-one endpoints, never used in batch mode

    def paid_tokens(self, fake: FakeProvider) -> tuple[int, int]:
        """(prompt, completion) tokens the provider billed, summed over every answered batched request."""
        prompt = completion = 0
        for job in fake.batches.values():
            for item in job.items:
                if item.outcome is None or not item.outcome.ok:
                    continue
                usage = item.outcome.body["usage"]
                if self.model.startswith("claude"):
                    prompt += (usage["input_tokens"] + usage.get("cache_read_input_tokens", 0)
                               + usage.get("cache_creation_input_tokens", 0))
                    completion += usage["output_tokens"]
                else:
                    prompt += usage["prompt_tokens"]
                    completion += usage["completion_tokens"]
        return prompt, completion


PROVIDERS = {
    "anthropic": Provider(FakeAnthropic, "claude-sonnet-4-5", "POST /v1/messages/batches", ("POST /v1/messages",)),
    "openai": Provider(FakeOpenAI, "gpt-4o-mini", "POST /v1/batches", ("POST /v1/chat/completions",)),
}


def question_of(body: dict[str, Any]) -> str:
    last = body["messages"][-1]["content"]
    return last if isinstance(last, str) else last[0]["text"]


def echo(body: dict[str, Any]) -> Reply:
    return Reply(f"Answer to {question_of(body)}")


def status(server: ServerProcess) -> dict:
    return server.get_json(f"{BASE}/rollout")


def wait(server: ServerProcess, done: Callable[[dict], Any], what: str, kind: str = "rollout") -> dict:
    return server.wait_for_job(f"{BASE}/{kind}", done, what, timeout=60)


def until(check: Callable[[], Any], what: str, timeout: float = 60, pause: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(pause)
    return value


def served(server: ServerProcess) -> bytes:
    """The committed lines as ``GET …/rollout/output`` serves them: the raw bytes of its ``output`` array."""
    code, _, body = request(server.port, "GET", f"{BASE}/rollout/output?offset=0&limit=1000",
                            headers=server.headers("alice"))
    assert code == 200, body
    head, tail = b'{"output":[', b'],"offset":'
    assert body.startswith(head), body[:200]
    return body[len(head):body.index(tail)]


def committed(paths: DataPaths) -> list[bytes]:
    """The committed lines on disk, byte for byte (after a kill, or once the job is complete)."""
    job_dir = ROLLOUT.job_dir(paths)
    n = output.line_count(job_dir)
    return (job_dir / output.DATA_NAME).read_bytes().splitlines()[:n] if n else []


def is_prefix(before: bytes, after: bytes) -> bool:
    """A served array of lines is the start of a later one: whole lines only."""
    return not before or after == before or after.startswith(before + b",")


class Run:
    """One data directory, one fake provider (on its thread), and the server processes started on them."""

    def __init__(self, tmp_path, provider: str, stimuli: int, k: int, batch_size: int) -> None:
        self.spec = PROVIDERS[provider]
        self.tmp_path, self.stimuli, self.k = tmp_path, stimuli, k
        self.total = stimuli * k
        self.thread = ProviderThread(self.spec.fake())
        self.fake = self.thread.start()
        self.fake.default = echo
        self.fake.batch_step_seconds = NOTHING_MOVES
        self.paths = DataPaths(tmp_path / "data")
        seed_target(self.paths, [hardcoded(stimuli)], model_name=self.spec.model, num_traj_per_stimulus=k,
                    batch=True)
        self.env = {**self.fake.env(), "STIMSERVER_LLM_PROVIDER": "auto", "STIMSERVER_LLM_MAX_RETRIES": "1",
                    "STIMSERVER_BATCH_SIZE": str(batch_size), "STIMSERVER_BATCH_POLL_SECONDS": "0.05"}
        self.starts = 0
        self.server: ServerProcess | None = None
        self.job_dir = ROLLOUT.job_dir(self.paths)

    def start(self) -> ServerProcess:
        self.starts += 1
        self.server = ServerProcess(self.paths.root, free_port(), self.tmp_path, env=self.env,
                                    name=f"stimserver-{self.starts}").start()
        return self.server

    def kill(self) -> None:
        if self.server is not None:
            self.server.kill()  # SIGKILL to its process group

    def close(self) -> None:
        try:
            if self.server is not None and self.server.proc is not None and self.server.proc.poll() is None:
                self.server.terminate()
        finally:
            self.kill()
            self.thread.stop()

    def begin(self) -> str:
        """Start a server, run the stim job, POST the rollout; its job id."""
        server = self.start()
        code, _, body = request(server.port, "POST", f"{BASE}/stim", headers=server.headers("alice"))
        assert code == 200, body
        wait(server, lambda s: s["status"] == "complete", "the stim job", kind="stim")
        code, _, body = request(server.port, "POST", f"{BASE}/rollout", headers=server.headers("alice"))
        assert code == 200, body
        return orjson.loads(body)["job_id"]

    def batch_ids(self) -> list[str]:
        return self.thread.call(lambda: list(self.fake.batches))

    def check_complete(self, done: dict, job_id: str, batches: int, note: object = None) -> None:
        """Every invariant of a finished job, whatever the kills did (``note`` goes into the usage failures)."""
        total, k, fake, spec = self.total, self.k, self.fake, self.spec
        assert done["status"] == "complete" and done["job_id"] == job_id
        assert done["lines"] == done["total_expected"] == total
        # every line, in order, each answer its own question's
        lines = lines_of(self.paths, ROLLOUT)
        assert [(line["stimulus_id"], line["trajectory_id"]) for line in lines] == [
            (s, t) for s in range(self.stimuli) for t in range(k)]
        assert all(line["response"]["content"] == f"Answer to {line['question']}" for line in lines)
        assert [line["question"] for line in lines] == [f"Q{n // k}?" for n in range(total)]
        # one batch-create per batch the job recorded, never one again after a restart
        calls = list(fake.calls)
        record = read_batches(self.job_dir)["batches"]
        assert calls.count(spec.create) == len(fake.batches) == len(record) == batches, Counter(calls)
        assert [b["id"] for b in record] == list(fake.batches)
        assert all(b["collected"] for b in record)
        assert done["batches"]["running"] == 0 and done["batches"]["submitted"] == batches
        if spec.create == "POST /v1/batches":
            assert calls.count("POST /v1/files") == batches  # one input file uploaded per batch
        assert not [c for c in calls if c in spec.sync]  # nothing sent one by one
        # every request batched, answered and paid for exactly once
        custom_ids = [item.custom_id for job in fake.batches.values() for item in job.items]
        assert len(custom_ids) == len(set(custom_ids)) == total
        assert sorted(int(c.split("-r")[1].split("-a")[0]) for c in custom_ids) == list(range(total))
        assert len(fake.batch_received) == total
        assert Counter(question_of(r.body) for r in fake.batch_received) == {f"Q{s}?": k for s in range(self.stimuli)}
        # the job's usage: each answer counted once, at the batch price of what the provider billed
        usage = orjson.loads((self.job_dir / "usage.json").read_bytes())
        prompt, completion = spec.paid_tokens(fake)
        assert (usage["requests"], usage["input_tokens"], usage["output_tokens"]) == (total, prompt, completion), (
            "the job's usage must count every answer the provider billed exactly once, even when a kill came "
            "between logging a batch's answers and saving the usage", usage, note)
        price = shipped_prices().lookup(spec.model)
        assert price is not None and price.batch_discount is not None
        billed = (prompt * price.input + completion * price.output) / 1e6 * price.batch_discount
        assert usage["cost_usd"] == pytest.approx(billed, rel=1e-9) and usage["cost_unknown"] is None
        shown = done["usage"]
        assert shown["requests"] == total and shown["cost_usd"] == pytest.approx(billed, rel=1e-6), (shown, note)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_a_kill_between_submit_and_results_polls_the_same_batches(tmp_path, provider):
    stimuli, k, size = 30, 2, 20
    run = Run(tmp_path, provider, stimuli, k, size)
    fake = run.fake
    try:
        job_id = run.begin()
        server = run.server
        assert server is not None
        # submitted, with their ids on record, and nothing answered
        now = wait(server, lambda s: s["batches"] is not None and len(s["batches"]["ids"]) == 3,
                   "the three batches to be submitted")
        ids = now["batches"]["ids"]
        assert ids == run.batch_ids()
        for batch_id in ids:
            fake.hold(batch_id)
        fake.batch_step_seconds = 0.02  # a released batch finishes in a few polls
        record = read_batches(run.job_dir)["batches"]
        assert [b["id"] for b in record] == ids and not any(b["collected"] for b in record)
        assert [b["requests"] for b in record] == [list(range(i, min(i + size, run.total)))
                                                  for i in range(0, run.total, size)]
        assert now["batches"]["requests"] == run.total and now["lines"] == 0
        run.kill()
        assert committed(run.paths) == []
        creates_at_kill = fake.calls.count(run.spec.create)

        fake.finish_now(ids[0])  # one batch ends while no server runs
        server = run.start()
        # the restarted server polls the batches it recorded: the ended one is collected, nothing is submitted
        now = wait(server, lambda s: (s["lines"] or 0) >= size and s["batches"]["running"] == 2,
                   "the first batch to be collected and its lines committed")
        assert now["lines"] == size and now["batches"]["running"] == 2 and now["batches"]["ids"] == ids[1:]
        assert fake.calls.count(run.spec.create) == creates_at_kill == 3
        for batch_id in ids[1:]:
            fake.release(batch_id)
        done = wait(server, lambda s: s["status"] == "complete", "the resumed rollout")
        run.check_complete(done, job_id, batches=3)
        print(f"\n[{provider}] batches={len(fake.batches)} creates={fake.calls.count(run.spec.create)} "
              f"batched requests={len(fake.batch_received)} calls={len(fake.calls)} kills=1 "
              f"usage.requests={done['usage']['requests']}")
    finally:
        run.close()


class Releaser(threading.Thread):
    """Ends the fake's batches one at a time, at random moments, in ``order``: the first ``limit`` of it,
    each only once the server has collected all but at most one of those ended before."""

    def __init__(self, run: Run, order: list[str], rng: random.Random) -> None:
        super().__init__(name="batch-releaser", daemon=True)
        self.run_, self.order, self.rng = run, order, rng
        self.limit = 0
        self.ended: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        fake = self.run_.fake
        while not self.stopped.wait(self.rng.uniform(0.01, 0.06)):
            if len(self.ended) >= min(self.limit, len(self.order)):
                continue
            collected = {b["id"] for b in read_batches(self.run_.job_dir)["batches"] if b.get("collected")}
            if len([i for i in self.ended if i not in collected]) > 1:
                continue
            batch_id = self.order[len(self.ended)]
            fake.finish_now(batch_id)
            self.ended.append(batch_id)


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_kills_while_results_are_committed_keep_every_served_line(tmp_path, provider):
    stimuli, k, size, kills, chunk = 40, 2, 5, 3, 3
    batches = stimuli * k // size
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    run = Run(tmp_path, provider, stimuli, k, size)
    log = answer_log_path(run.job_dir, "rollout")
    seen: list[tuple[str, int, int]] = []  # per kill: how it was timed, lines served before it, committed at it
    snapshots: list[bytes] = []
    disk: list[list[bytes]] = []
    releaser: Releaser | None = None
    try:
        job_id = run.begin()
        server = run.server
        assert server is not None
        wait(server, lambda s: s["batches"] is not None and len(s["batches"]["ids"]) == batches,
             f"the {batches} batches to be submitted")
        # The batches end out of order, yet every `chunk` of them in a row ends before the next chunk starts.
        ids = run.batch_ids()
        order = [i for c in range(0, batches, chunk) for i in rng.sample(ids[c:c + chunk], len(ids[c:c + chunk]))]
        releaser = Releaser(run, order, rng)
        releaser.start()
        for kill in range(kills):
            releaser.limit = chunk * (kill + 1)  # no kill ever finds the job finished
            served_before = b""
            if kill == 0:  # the moment a batch's answers reach the log, before anything else is saved
                size0 = log.stat().st_size if log.exists() else 0
                until(lambda s0=size0: log.exists() and log.stat().st_size > s0, "answers to be logged",
                      pause=0.0005)
                how = "answers just logged"
            else:  # at a random moment once more lines are committed, as the next batches are read and committed
                lines0 = status(server)["lines"] or 0
                until(lambda n0=lines0, srv=server: (status(srv)["lines"] or 0) > n0, "more committed lines")
                time.sleep(rng.uniform(0.0, 0.08))
                served_before = served(server)
                snapshots.append(served_before)
                how = "lines grew"
            run.kill()
            disk.append(committed(run.paths))
            seen.append((how, served_before.count(b'{"stimulus_id"'), len(disk[-1])))
            assert still_running(run)
            server = run.start()
        releaser.limit = batches
        done = wait(server, lambda s: s["status"] == "complete", "the rollout after the kills")
        final = served(server)
        on_disk = committed(run.paths)
        assert len(on_disk) == run.total
        for before_kill in snapshots:  # every line served before a kill, byte for byte
            assert is_prefix(before_kill, final), (seed, before_kill[:200], final[:200])
        for at_kill in disk:  # every line committed at a kill, byte for byte
            assert on_disk[:len(at_kill)] == at_kill, seed
        assert releaser.ended == order
        print(f"\n[{provider}] seed={seed} batches={len(run.fake.batches)} "
              f"creates={run.fake.calls.count(run.spec.create)} batched requests={len(run.fake.batch_received)} "
              f"calls={len(run.fake.calls)} kills={len(seen)} (how, lines served, committed)={seen} "
              f"usage.requests={done['usage']['requests']}")
        run.check_complete(done, job_id, batches=batches, note={"seed": seed, "kills": seen})
    finally:
        if releaser is not None:
            releaser.stopped.set()
            releaser.join(10)
        run.close()


def still_running(run: Run) -> bool:
    """What the killed server left on disk: a job still running (resumed by the next start), unfinished."""
    record = orjson.loads((run.job_dir / "job.json").read_bytes())
    return record["status"] in ("running", "pending") and output.line_count(run.job_dir) < run.total
