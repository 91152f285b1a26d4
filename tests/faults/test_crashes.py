"""Runner deaths (issue 16, points 3 and 5): real SIGKILLs at exact points, and crash-loop accounting.

A runner process kills itself (SIGKILL, so nothing of it runs on) at a chosen point of a
job: in its first append, before any line is on disk (the first second of a job), or
between a batch's data fsync and its index append. An in-process runner then resumes
the job: every stimulus exactly once, in order, and no line committed before the kill
changes. The accounting tests drive ``transitions`` directly: only deaths without a
committed line in between count, the limit's error says where it stuck, and a POST
resumes the same job from its lines.
"""
from __future__ import annotations

import asyncio
import signal
import sys
import textwrap

import pytest

from stimserver.jobs import JobRef, liveness, transitions
from stimserver.jobs.stim import StimKind
from stimserver.store import output
from stimserver.store.datasets import Datasets
from stimserver.store.jobrecords import JobStatus
from stimserver.store.locks import FileLock, is_locked
from tests.jobs.conftest import hardcoded, lines_of, record_of, seed_target, wait_until

LINES = 100

# A real runner on the data directory that SIGKILLs itself at the point named in argv[2].
DIE = textwrap.dedent("""
    import asyncio, os, signal, sys
    from pathlib import Path
    from stimserver.jobs import JobRunner
    from stimserver.store import lineindex, output
    from stimserver.store.paths import DataPaths

    point, after = sys.argv[2], int(sys.argv[3])
    if point == "first-append":
        output.OutputWriter.append = lambda self, records: os.kill(os.getpid(), signal.SIGKILL)
    else:  # "before-index": the batch's data is written and fsynced, its index entries are not
        real, batches = lineindex.append_entries, [0]
        def append_entries(fd, ends):
            if ends:
                batches[0] += 1
                if batches[0] > after:
                    os.kill(os.getpid(), signal.SIGKILL)
            real(fd, ends)
        lineindex.append_entries = append_entries

    async def main():
        runner = JobRunner(DataPaths(Path(sys.argv[1])), llm_factory=lambda: None, flush_lines=10,
                           scan_seconds=0.05)
        await runner.start()
        await asyncio.sleep(60)

    asyncio.run(main())
""")


@pytest.fixture
def ref() -> JobRef:
    return JobRef("alice", "r1", "t1", "stim")


def ids(paths, ref) -> list[int]:
    return [line["stimulus_id"] for line in lines_of(paths, ref)]


async def die(paths, point: str, after: int = 0) -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", DIE, str(paths.root), point, str(after))
    assert await asyncio.wait_for(proc.wait(), 60) == -signal.SIGKILL


async def finished(paths, ref) -> dict:
    return await wait_until(lambda: (r := record_of(paths, ref)) and r["status"] in ("complete", "failed") and r,
                            "the job to end")


async def test_a_kill_in_the_first_second_of_a_job_is_resumed(make_runner, paths, ref):
    runner = await make_runner(start=False, flush_lines=10)
    job = await runner.submit(ref, seed_target(paths, [hardcoded(LINES)]))
    await die(paths, "first-append")
    dead = record_of(paths, ref)
    assert dead["status"] == "running" and not is_locked(output.lock_path(ref.job_dir(paths)))
    assert output.line_count(ref.job_dir(paths)) == 0
    await runner.start()
    done = await finished(paths, ref)
    assert done["status"] == "complete" and done["job_id"] == job["job_id"], done["error"]
    assert ids(paths, ref) == list(range(LINES))
    assert done["interruptions"] == 1 and done["stalled_deaths"] == 1  # one death, no line before it


async def test_a_kill_between_data_fsync_and_index_append_loses_and_changes_nothing(make_runner, paths, ref):
    runner = await make_runner(start=False, flush_lines=10)
    await runner.submit(ref, seed_target(paths, [hardcoded(LINES)]))
    await die(paths, "before-index", after=3)
    job_dir = ref.job_dir(paths)
    committed = output.line_count(job_dir)
    served = output.read_page(job_dir, 0, LINES, repair=False)  # what a reader saw before the restart
    assert committed >= 30 and served.total == served.count == committed and served.needs_repair  # flagged, served
    data_size = (job_dir / output.DATA_NAME).stat().st_size
    assert data_size > served.span[1]  # the killed batch's bytes are on disk, unindexed
    await runner.start()
    done = await finished(paths, ref)
    assert done["status"] == "complete", done["error"]
    assert ids(paths, ref) == list(range(LINES))  # each stimulus once: the fsynced batch was kept, not redone
    after = output.read_page(job_dir, 0, committed)
    assert after.body == served.body  # no committed line changed
    assert done["interruptions"] == 1 and done["stalled_deaths"] == 0  # it had made progress
    assert not list(job_dir.glob("*.corrupt-*"))


# -- crash-loop accounting ----------------------------------------------------------------

def submit(paths, ref, lines: int = LINES) -> dict:
    record = seed_target(paths, [hardcoded(lines)])
    return transitions.submit(paths, StimKind(), ref, record, Datasets(paths.root))


def run_and_die(paths, ref, commit: int = 0) -> dict | None:
    """Claim the job, commit ``commit`` more lines, then 'die': the lock goes, the record stays running."""
    claimed = transitions.claim(paths, ref, {"pid": 4242, "host": "box", "runner": "r"})
    if claimed is None:
        return None
    lock, record = claimed
    with lock, output.OutputWriter.open(ref.job_dir(paths), lock) as w:
        start = w.lines
        w.append([output.encode({"stimulus_id": i}) for i in range(start, start + commit)])
    return record


def test_deaths_without_progress_fail_the_job_saying_where(paths, ref):
    job = submit(paths, ref)
    run_and_die(paths, ref, commit=7)  # some progress first
    for _ in range(transitions.MAX_INTERRUPTIONS + 1):
        assert run_and_die(paths, ref) is not None
    assert transitions.claim(paths, ref, {"pid": 1}) is None  # the limit: failed instead of claimed
    failed = record_of(paths, ref)
    assert failed["status"] == "failed" and failed["job_id"] == job["job_id"]
    assert failed["error"].startswith(f"the job's runner died {transitions.MAX_INTERRUPTIONS + 1} times in a row "
                                      f"without committing a line: each run stopped at line 7 of {LINES}")
    assert "pid 4242 on box" in failed["error"] and "the 7 committed lines are kept" in failed["error"]
    assert "POST /v1/repo/r1/targets/t1/stim to resume it" in failed["error"]
    kept = output.read_page(ref.job_dir(paths), 0, LINES).body

    again = submit(paths, ref)  # POST, as the error says: the same job, resumed
    assert again["job_id"] == job["job_id"] and again["status"] == "pending" and again["stalled_deaths"] == 0
    assert again["error"] is None and output.read_page(ref.job_dir(paths), 0, LINES).body == kept
    record = run_and_die(paths, ref, commit=3)
    assert record["resumed_from_line"] == 7 and record["status"] == "running"


def test_a_job_that_keeps_committing_is_not_a_crash_loop(paths, ref):
    submit(paths, ref)
    for _ in range(3 * transitions.MAX_INTERRUPTIONS):
        assert run_and_die(paths, ref, commit=2) is not None
    record = record_of(paths, ref)
    assert record["status"] == "running" and record["interruptions"] == 3 * transitions.MAX_INTERRUPTIONS - 1
    assert record["stalled_deaths"] == 0 and output.line_count(ref.job_dir(paths)) == 6 * transitions.MAX_INTERRUPTIONS


def test_an_orphan_death_counts_the_same_way(paths, ref):
    submit(paths, ref)
    run_and_die(paths, ref)  # died at line 0
    assert liveness.requeue_orphan(paths, ref)
    record = record_of(paths, ref)
    assert record["status"] == "pending" and record["interruptions"] == 1 and record["stalled_deaths"] == 1
    run_and_die(paths, ref, commit=5)
    assert liveness.requeue_orphan(paths, ref)
    assert record_of(paths, ref)["stalled_deaths"] == 0  # 5 lines since the previous death


def test_a_fresh_start_is_explicit(paths, ref):
    job = submit(paths, ref)
    run_and_die(paths, ref, commit=4)
    transitions.finish(ref.job_dir(paths), record_of(paths, ref), JobStatus.FAILED, "boom")
    with FileLock.acquire(output.lock_path(ref.job_dir(paths)), blocking=False):  # a live writer
        with pytest.raises(transitions.JobBusy):
            transitions.discard(paths, ref)
    assert output.line_count(ref.job_dir(paths)) == 4  # nothing discarded under it
    assert transitions.discard(paths, ref) and record_of(paths, ref) is None
    assert output.line_count(ref.job_dir(paths)) == 0
    fresh = submit(paths, ref)
    assert fresh["job_id"] > job["job_id"] and fresh["status"] == "pending"
