"""JobRunner in-process: claiming, batching, resuming, failing, stopping, shutting down."""
from __future__ import annotations

import asyncio
import errno
import os
from typing import Any

import orjson

from stimserver.jobs import JobKind, JobPlan, JobRef, transitions
from stimserver.jobs import runner as runner_module
from stimserver.jobs.scan import find_active, scan_cache
from stimserver.store import jobrecords, output
from stimserver.store.locks import FileLock, is_locked
from stimserver.store.presence import live_runners

from .conftest import StubLLM, hardcoded, lines_of, record_of, seed_target, wait_until


class GateKind(JobKind):
    """A stim-shaped kind whose lines come out only as the test releases them."""

    name = "stim"

    def __init__(self, total: int) -> None:
        self.total = total
        self.allowed = 0
        self.changed = asyncio.Event()
        self.fail_at: int | None = None

    def release(self, n: int) -> None:
        self.allowed += n
        self.changed.set()

    def plan(self, source) -> JobPlan:
        return JobPlan(config={"gate": self.total}, spec={"total": self.total}, expected_lines=self.total)

    async def produce(self, run):
        for i in range(run.start, self.total):
            while self.allowed <= i:
                self.changed.clear()
                await self.changed.wait()
            if i == self.fail_at:
                raise KeyError("boom")
            yield {"stimulus_id": i, "pad": "x" * (i % 37)}


async def submit(runner, paths, ref, generators=None, **config) -> dict[str, Any]:
    record = seed_target(paths, generators or [hardcoded(5)], target=ref.target, **config)
    return await runner.submit(ref, record)


def ids(paths, ref) -> list[int]:
    return [line["stimulus_id"] for line in lines_of(paths, ref)]


async def done(paths, ref, status="complete") -> dict:
    return await wait_until(lambda: (r := record_of(paths, ref)) and r["status"] == status and r,
                            f"job {ref} to become {status}")


async def test_a_submitted_job_runs_to_complete(make_runner, paths, ref):
    runner = await make_runner()
    job = await submit(runner, paths, ref, [hardcoded(3, "A"), hardcoded(120, "B")])
    assert job["status"] == "pending" and job["expected_lines"] == 123 and job["attempt"] == 0
    record = await done(paths, ref)
    assert ids(paths, ref) == list(range(123))
    assert record["attempt"] == 1 and record["error"] is None and record["finished_at"]
    assert record["worker"]["pid"] == os.getpid() and record["worker"]["runner"] == runner.id
    await wait_until(lambda: not is_locked(output.lock_path(ref.job_dir(paths))), "the lock to be released")


async def test_lines_are_committed_in_batches(make_runner, paths, ref, monkeypatch):
    sizes = []
    append = output.OutputWriter.append
    monkeypatch.setattr(output.OutputWriter, "append", lambda self, recs: sizes.append(len(recs)) or append(self, recs))
    runner = await make_runner(flush_lines=7)
    await submit(runner, paths, ref, [hardcoded(30)])
    await done(paths, ref)
    assert sum(sizes) == 30 and max(sizes) <= 7 and len(sizes) >= 5


async def test_resume_after_a_crash_rebuilds_identical_bytes(make_runner, paths, ref):
    llm = StubLLM()
    runner = await make_runner(llm_factory=lambda: llm)
    await submit(runner, paths, ref, [hardcoded(40), {"type": "oneshot_qs", "numq": 60, "model": "m"},
                                      {"type": "from_dataset", "dataset": "arithmetic", "numq": 30, "seed": 1}])
    await done(paths, ref)
    await runner.close()
    jdir = ref.job_dir(paths)
    complete = (jdir / output.DATA_NAME).read_bytes()
    assert len(llm.prompts) == 2  # 60 questions: chunks of 50 and 10
    # A crash: the writer died mid-line in the LLM generator's range, index half-written.
    cut = complete.index(b"\n", len(complete) // 2) + 40
    with open(jdir / output.DATA_NAME, "r+b") as f:
        f.truncate(cut)
    with open(jdir / output.INDEX_NAME, "r+b") as f:
        f.truncate(70 * 8 + 3)
    record = record_of(paths, ref)
    jobrecords.write_record(jdir, {**record, "status": "running", "finished_at": None})
    again = StubLLM()
    await make_runner(llm_factory=lambda: again)
    record = await done(paths, ref)
    assert (jdir / output.DATA_NAME).read_bytes() == complete
    assert again.prompts == []  # the questions came from the checkpoint
    assert record["attempt"] == 2 and record["interruptions"] == 1 and 0 < record["resumed_from_line"] < 130


async def test_shutdown_hands_the_job_back_and_the_next_runner_resumes(make_runner, paths, ref):
    kind = GateKind(200)
    runner = await make_runner(kinds={"stim": kind})
    await runner.submit(ref, seed_target(paths, [hardcoded(1)]))
    kind.release(120)
    await wait_until(lambda: output.line_count(ref.job_dir(paths)) == 120, "120 committed lines")
    await runner.close()
    record = record_of(paths, ref)
    assert record["status"] == "pending" and record["worker"] is None
    assert not is_locked(output.lock_path(ref.job_dir(paths)))
    kind.release(80)
    await make_runner(kinds={"stim": kind})
    record = await done(paths, ref)
    assert ids(paths, ref) == list(range(200)) and record["attempt"] == 2 and record["interruptions"] == 0


async def test_two_runners_never_run_the_same_job(make_runner, paths):
    refs = [JobRef("alice", "r1", f"t{i}", "stim") for i in range(6)]
    runners = [await make_runner(start=False) for _ in range(2)]
    for r in refs:
        await runners[0].submit(r, seed_target(paths, [hardcoded(300)], target=r.target))
    await asyncio.gather(*(runner.start() for runner in runners))
    for r in refs:
        await done(paths, r)
        assert ids(paths, r) == list(range(300))
        assert record_of(paths, r)["attempt"] == 1


async def test_a_claim_is_exclusive(paths, ref):
    seed_target(paths, [hardcoded(2)])
    from stimserver.jobs.stim import StimKind
    from stimserver.store.datasets import Datasets
    transitions.submit(paths, StimKind(), ref, seed_target(paths, [hardcoded(2)]), Datasets(paths.root))
    first = transitions.claim(paths, ref, {"pid": 1})
    try:
        assert first is not None and transitions.claim(paths, ref, {"pid": 2}) is None
    finally:
        first[0].release()


async def test_max_concurrency_caps_llm_requests(make_runner, paths, ref):
    llm = StubLLM(delay=0.01)
    runner = await make_runner(llm_factory=lambda: llm)
    await submit(runner, paths, ref, [{"type": "oneshot_qs", "numq": 230, "model": "m"}], max_concurrency=2)
    await done(paths, ref)
    assert len(llm.prompts) == 5 and llm.max_in_flight == 2


FAILURES = {
    "model-short": ([hardcoded(60), {"type": "oneshot_qs", "numq": 3, "model": "m"}],
                    lambda prompt: "Just one?",
                    "generators[1] (oneshot_qs): the model wrote only 1 distinct questions of the 3"),
}


async def test_a_failing_generator_fails_the_job_and_keeps_committed_lines(make_runner, paths, ref):
    runner = await make_runner(llm_factory=lambda: StubLLM(lambda prompt: "Just one?"))
    await submit(runner, paths, ref, [hardcoded(60), {"type": "oneshot_qs", "numq": 3, "model": "m"}])
    record = await done(paths, ref, "failed")
    assert record["error"].startswith(
        "generators[1] (oneshot_qs): the model wrote only 1 distinct questions of the 3 asked for")
    assert ids(paths, ref) == list(range(61))  # the one question the model did write is committed too


async def test_full_disk_fails_with_an_actionable_error(make_runner, paths, ref, monkeypatch):
    def full(self, records):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(output.OutputWriter, "append", full)
    runner = await make_runner()
    await submit(runner, paths, ref)
    record = await done(paths, ref, "failed")
    assert record["error"].startswith("the disk is full") and "POST /v1/repo/r1/targets/t1/stim" in record["error"]


async def test_unexpected_errors_say_so_without_a_traceback(make_runner, paths, ref):
    kind = GateKind(10)
    kind.fail_at = 4
    runner = await make_runner(kinds={"stim": kind})
    await runner.submit(ref, seed_target(paths, [hardcoded(1)]))
    kind.release(10)
    record = await done(paths, ref, "failed")
    assert record["error"] == "internal error while running the job (KeyError); see the server log"
    assert ids(paths, ref) == [0, 1, 2, 3]  # produced before the error: committed


async def test_a_client_factory_that_refuses_fails_the_job(make_runner, paths, ref):
    def refuse():
        raise ValueError("STIMSERVER_LLM_PROVIDER must be auto, anthropic or openai, not 'gemini'")

    runner = await make_runner(llm_factory=refuse)
    await submit(runner, paths, ref, [{"type": "oneshot_qs", "numq": 2, "model": "m"}])
    record = await done(paths, ref, "failed")
    assert record["error"].startswith("generators[0] (oneshot_qs): LLM configuration error: STIMSERVER_LLM_PROVIDER")


async def test_resubmitting_after_a_failure_starts_afresh(make_runner, paths, ref):
    runner = await make_runner(llm_factory=lambda: StubLLM(lambda prompt: "Just one?"))
    first = await submit(runner, paths, ref, [hardcoded(10), {"type": "oneshot_qs", "numq": 3, "model": "m"}])
    await done(paths, ref, "failed")
    assert (ref.job_dir(paths) / "questions-0.json").exists()
    second = await submit(runner, paths, ref, [hardcoded(10)])
    assert second["job_id"] > first["job_id"] and second["status"] == "pending"
    await done(paths, ref)
    assert ids(paths, ref) == list(range(10))
    assert sorted(os.listdir(ref.job_dir(paths))) == ["job.json", "output.idx", "output.jsonl", "questions-0.json"]
    third = await runner.submit(ref, seed_target(paths, [hardcoded(10)]))
    assert third["job_id"] == second["job_id"] and third["status"] == "complete"  # idempotent


async def test_a_job_whose_runner_keeps_dying_is_failed(make_runner, paths, ref):
    runner = await make_runner(start=False)
    job = await submit(runner, paths, ref)
    jobrecords.write_record(ref.job_dir(paths),  # died MAX times in a row at line 0; now once more
                            {**job, "status": "running", "stalled_deaths": transitions.MAX_INTERRUPTIONS,
                             "interruptions": transitions.MAX_INTERRUPTIONS, "progress_line": 0})
    await runner.start()
    record = await done(paths, ref, "failed")
    assert record["error"].startswith(f"the job's runner died {transitions.MAX_INTERRUPTIONS + 1} times in a row "
                                      "without committing a line: each run stopped at line 0")
    assert record["interruptions"] == transitions.MAX_INTERRUPTIONS + 1


async def test_a_record_without_a_spec_is_failed_not_resumed(make_runner, paths, ref):
    seed_target(paths, [hardcoded(2)])
    jobrecords.write_record(ref.job_dir(paths), {"job_id": 9, "kind": "stim", "status": "running", "config": {}})
    await make_runner()
    record = await done(paths, ref, "failed")
    assert record["error"].startswith("this job cannot be resumed")


async def test_jobs_beyond_max_jobs_wait_as_pending(make_runner, paths):
    a, b = JobRef("alice", "r1", "ta", "stim"), JobRef("alice", "r1", "tb", "stim")
    kind = GateKind(3)
    runner = await make_runner(kinds={"stim": kind}, max_jobs=1)
    await runner.submit(a, seed_target(paths, [hardcoded(1)], target="ta"))
    await wait_until(lambda: record_of(paths, a)["status"] == "running", "a running")
    await runner.submit(b, seed_target(paths, [hardcoded(1)], target="tb"))
    # b looks orphaned (running, no writer) while the runner is full: it is shown as pending
    jobrecords.write_record(b.job_dir(paths), {**record_of(paths, b), "status": "running"})
    await wait_until(lambda: record_of(paths, b)["status"] == "pending", "b requeued")
    kind.release(3)
    await done(paths, a)
    await done(paths, b)


async def test_stop_ends_a_local_job_and_frees_its_lock(make_runner, paths, ref):
    kind = GateKind(100)
    runner = await make_runner(kinds={"stim": kind})
    await runner.submit(ref, seed_target(paths, [hardcoded(1)]))
    kind.release(10)
    await wait_until(lambda: output.line_count(ref.job_dir(paths)) == 10, "10 lines")
    await runner.stop("alice", "r1", "t1")
    assert not is_locked(output.lock_path(ref.job_dir(paths)))
    record = record_of(paths, ref)
    assert record["status"] == "failed" and record["error"].startswith("stopped")
    await runner.scan_once()
    assert record_of(paths, ref)["status"] == "failed"  # nobody resumes a stopped job


async def test_stop_reaches_a_job_run_by_another_runner(make_runner, paths, ref):
    kind = GateKind(100)
    worker = await make_runner(kinds={"stim": kind})
    web = await make_runner(start=False, kinds={"stim": kind})  # a web tier: runs no jobs
    await web.submit(ref, seed_target(paths, [hardcoded(1)]))
    await wait_until(lambda: is_locked(output.lock_path(ref.job_dir(paths))), "the worker to claim the job")
    await web.stop("alice", "r1", "t1")
    assert not is_locked(output.lock_path(ref.job_dir(paths)))
    assert record_of(paths, ref)["status"] == "failed" and not worker._jobs
    assert not jobrecords.stop_marker(ref.job_dir(paths)).exists()


async def test_stop_without_a_job_returns_at_once(make_runner, paths, ref, monkeypatch, caplog):
    def no_waiting(*args, **kwargs):
        raise AssertionError("stop went for the job lock although there was no job to stop")

    monkeypatch.setattr(transitions, "locked_record", no_waiting)
    monkeypatch.setattr(runner_module, "STOP_TIMEOUT", 3600.0)
    runner = await make_runner(start=False)
    await runner.stop("alice", "r1", "nothing-here")
    assert not (paths.root / "users").exists()  # nothing made for a target that does not exist
    seed_target(paths, [hardcoded(1)])
    lock_file = output.lock_path(ref.job_dir(paths))
    with FileLock.acquire(lock_file, blocking=False):  # e.g. an import
        await runner.stop("alice", "r1", "t1")
        assert is_locked(lock_file)  # the import keeps its lock
    assert record_of(paths, ref) is None and not jobrecords.stop_marker(ref.job_dir(paths)).exists()
    assert "did not stop" not in caplog.text


class TestOrphans:
    async def orphan(self, make_runner, paths, ref, orphan_seconds):
        web = await make_runner(start=False, orphan_seconds=orphan_seconds)
        job = await submit(web, paths, ref)
        jobrecords.write_record(ref.job_dir(paths), {**job, "status": "running"})
        return web, record_of(paths, ref)

    async def test_first_read_shows_pending_then_fails_after_the_bound(self, make_runner, paths, ref):
        web, job = await self.orphan(make_runner, paths, ref, 3600)
        seen = await web.observe(ref, job)
        assert seen["status"] == "pending" and seen["orphaned_at"] and seen["interruptions"] == 1
        assert record_of(paths, ref) == seen
        web.orphan_seconds = 0
        seen = await web.observe(ref, seen)
        assert seen["status"] == "failed" and "no job runner took this job up within 0 s" in seen["error"]
        assert "stimserver worker" in seen["error"]

    async def test_a_live_runner_anywhere_means_wait(self, make_runner, paths, ref):
        web, job = await self.orphan(make_runner, paths, ref, 0)
        await make_runner(kinds={})  # alive, but runs nothing
        assert await web.observe(ref, job) == job

    async def test_a_held_lock_means_running(self, make_runner, paths, ref):
        web, job = await self.orphan(make_runner, paths, ref, 0)
        with FileLock.acquire(output.lock_path(ref.job_dir(paths)), blocking=False):
            assert await web.observe(ref, job) == job


async def test_presence_files_of_dead_runners_are_swept(paths):
    folder = paths.root / "runners"
    folder.mkdir(parents=True)
    (folder / "gone-1-abcd.lock").write_bytes(b"")
    assert live_runners(paths) == 0 and os.listdir(folder) == []


def test_job_records_are_plain_json(paths, ref):
    seed_target(paths, [hardcoded(1)])
    from stimserver.jobs.stim import StimKind
    from stimserver.store.datasets import Datasets
    job = transitions.submit(paths, StimKind(), ref, seed_target(paths, [hardcoded(1)]), Datasets(paths.root))
    assert orjson.loads((ref.job_dir(paths) / "job.json").read_bytes()) == job


async def test_a_claim_in_flight_at_shutdown_is_handed_back(make_runner, paths, ref, monkeypatch):
    import threading

    claim, entered, go_on = transitions.claim, threading.Event(), threading.Event()

    def slow_claim(*args):
        entered.set()
        go_on.wait(30)
        return claim(*args)

    class Abandoned(dict):
        """The runner's claims left behind by a cancelled scan; tells the test when one is."""

        def __init__(self) -> None:
            super().__init__()
            self.added = asyncio.Event()

        def __setitem__(self, key, value) -> None:
            super().__setitem__(key, value)
            self.added.set()

    monkeypatch.setattr(transitions, "claim", slow_claim)
    runner = await make_runner(start=False)
    runner._abandoned = abandoned = Abandoned()
    await submit(runner, paths, ref)
    await runner.start()
    await asyncio.to_thread(entered.wait, 30)
    closing = asyncio.create_task(runner.close())
    await asyncio.wait_for(abandoned.added.wait(), 30)  # close() cancelled the scan mid-claim
    go_on.set()  # the thread takes the job after its runner began to shut down
    await closing
    record = record_of(paths, ref)
    assert record["status"] == "pending" and record["attempt"] == 0
    assert not is_locked(output.lock_path(ref.job_dir(paths)))


async def test_a_stale_stop_marker_does_not_block_a_new_job(make_runner, paths, ref):
    seed_target(paths, [hardcoded(2)])
    jobrecords.stop_marker(ref.job_dir(paths)).touch()  # a stop that died half-way
    runner = await make_runner()
    await submit(runner, paths, ref)
    await done(paths, ref)


def test_the_scan_rereads_only_changed_records(paths, ref, monkeypatch):
    from stimserver.jobs.stim import StimKind
    from stimserver.store import cache as cache_module
    from stimserver.store.datasets import Datasets

    job = transitions.submit(paths, StimKind(), ref, seed_target(paths, [hardcoded(1)]), Datasets(paths.root))
    cache = scan_cache()
    assert find_active(paths, ("stim",), cache) == [(ref, "pending")]
    reads = []
    original = cache_module.orjson.loads

    class CountingOrjson:
        JSONDecodeError = cache_module.orjson.JSONDecodeError

        @staticmethod
        def loads(raw):
            reads.append(raw)
            return original(raw)

    monkeypatch.setattr(cache_module, "orjson", CountingOrjson)
    assert find_active(paths, ("stim",), cache) == [(ref, "pending")] and reads == []
    jobrecords.write_record(ref.job_dir(paths), {**job, "status": "complete"})
    assert find_active(paths, ("stim",), cache) == [] and len(reads) == 1
