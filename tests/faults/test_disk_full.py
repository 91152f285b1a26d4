"""A full disk at each write step (issue 16, point 1): what the user sees, and that no committed line changes.

ENOSPC is injected in-process (``disk.FullDisk``) at the writer's four steps, at the job
record and at a control-plane temp file. Wanted: the job ends ``failed`` saying the disk
is full and where (its end recorded through the released reserve), reads keep serving
the committed lines and never write, writes answer 507 and change nothing, and after
space is freed a POST resumes the same job to completion.
"""
from __future__ import annotations

import os

import orjson
import pytest

from stimserver.jobs import JobRef
from stimserver.store import output
from stimserver.store.atomic import RESERVE_NAME
from tests.jobs.conftest import hardcoded, lines_of, record_of, seed_target, wait_until

from .disk import FullDisk

LINES = 120


@pytest.fixture
def ref() -> JobRef:
    return JobRef("alice", "r1", "t1", "stim")


@pytest.fixture
def disk(paths, monkeypatch) -> FullDisk:
    paths.root.mkdir(parents=True, exist_ok=True)
    return FullDisk(paths.root, monkeypatch)


def stored(root) -> dict[str, bytes]:
    """Every file that holds something (locks and empty files hold no data), with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and not p.name.endswith(".lock") and p.stat().st_size}


def leftovers(root) -> list[str]:
    """Temp files and saved tails a fault must not leave behind."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp-" in p.name or ".corrupt-" in p.name)


async def ended(paths, ref, status: str) -> dict:
    return await wait_until(lambda: (r := record_of(paths, ref)) and r["status"] == status and r, f"job {status}")


def committed_bytes(paths, ref) -> bytes:
    job_dir = ref.job_dir(paths)
    n = output.line_count(job_dir)
    end = int.from_bytes((job_dir / output.INDEX_NAME).read_bytes()[(n - 1) * 8:n * 8], "little") if n else 0
    return (job_dir / output.DATA_NAME).read_bytes()[:end]


@pytest.mark.parametrize("step", ["data write", "data fsync", "index append", "index fsync"])
async def test_a_writer_on_a_full_disk_fails_the_job_and_post_resumes_it(make_runner, paths, ref, disk, step):
    runner = await make_runner(start=False, flush_lines=10)
    job = await runner.submit(ref, seed_target(paths, [hardcoded(LINES)]))
    disk.fail(step, after=3)  # a few batches get through first
    await runner.start()
    failed = await ended(paths, ref, "failed")
    committed = output.line_count(ref.job_dir(paths))
    assert 0 < committed < LINES and disk.failures
    error = failed["error"]
    assert error.startswith(f"the disk is full: the job's output could not be written at line {committed}")
    where = {"data write": "writing output.jsonl", "data fsync": "syncing output.jsonl",
             "index append": "appending to output.idx", "index fsync": "syncing output.idx"}[step]
    assert f"({where} of target 't1')" in error and "POST /v1/repo/r1/targets/t1/stim to resume" in error
    before = committed_bytes(paths, ref)
    # The failed append was cut back: the files agree, no torn tail, nothing saved aside.
    data_size = (ref.job_dir(paths) / output.DATA_NAME).stat().st_size
    assert data_size == len(before) and (ref.job_dir(paths) / output.INDEX_NAME).stat().st_size == committed * 8
    assert [x["stimulus_id"] for x in lines_of(paths, ref)] == list(range(committed))
    page = output.read_page(ref.job_dir(paths), 0, LINES)
    assert page.total == committed and len(orjson.loads(page.body)) == committed
    assert leftovers(paths.root) == []

    disk.free()
    again = await runner.submit(ref, seed_target(paths, [hardcoded(LINES)]))
    assert again["job_id"] == job["job_id"] and again["status"] == "pending" and again["error"] is None
    done = await ended(paths, ref, "complete")
    assert done["job_id"] == job["job_id"] and done["stalled_deaths"] == 0
    assert [x["stimulus_id"] for x in lines_of(paths, ref)] == list(range(LINES))
    assert committed_bytes(paths, ref)[:len(before)] == before  # no committed line changed
    assert (paths.root / RESERVE_NAME).exists()  # taken again for the next full disk


async def test_the_end_of_a_job_is_recorded_through_the_reserve(make_runner, paths, ref, disk):
    """The disk fills just as the job writes its 'complete': the reserve makes room for it."""
    runner = await make_runner(start=False, flush_lines=10)
    await runner.submit(ref, seed_target(paths, [hardcoded(30)]))
    disk.fail("record write", after=1)  # the claim's record gets through, the end's does not
    await runner.start()
    done = await ended(paths, ref, "complete")
    assert done["error"] is None and output.line_count(ref.job_dir(paths)) == 30
    assert disk.failures and not (paths.root / RESERVE_NAME).exists()  # it was spent on the record
    assert leftovers(paths.root) == []


async def test_a_failure_on_a_full_disk_is_recorded_too(make_runner, paths, ref, disk):
    """Output and record both hit the full disk: the job still ends failed, not 'running' forever."""
    runner = await make_runner(start=False, flush_lines=10)
    await runner.submit(ref, seed_target(paths, [hardcoded(LINES)]))
    disk.fail("data write", after=2)
    await runner.start()
    failed = await ended(paths, ref, "failed")
    assert "the disk is full" in failed["error"]
    assert any(".job.json.tmp-" in path for _, path in disk.failures)  # its first try failed
    assert leftovers(paths.root) == []


WRITES = [
    ("POST", "/v1/repo", {"repo_name": "fresh"}),
    ("POST", "/v1/repo/r1/prompts", {"prompt_name": "p9", "messages": [{"role": "system", "content": "x"}]}),
    ("POST", "/v1/repo/r1/targets/t1/stim", None),
]


@pytest.mark.parametrize("method,path,body", WRITES, ids=["repo", "prompt", "run"])
async def test_a_write_on_a_full_disk_answers_507_and_changes_nothing(client, paths, master_headers, disk,
                                                                      method, path, body):
    seed_target(paths, [hardcoded(3)])
    headers = {**master_headers, "X-User-Id": "alice"}
    before = stored(paths.root)
    disk.fail("temp file")
    disk.full = True  # full from the start: the job counter's in-place write fails too
    r = await client.request(method, path, headers=headers, json=body)
    assert r.status == 507 and r.content_type == "application/json"
    assert r.headers["x-should-retry"] == "false"
    answer = await r.json()
    assert answer["code"] == "INSUFFICIENT_STORAGE" and answer["message"].startswith("the disk is full")
    assert str(paths.root) not in answer["message"]  # no server path in the body
    assert stored(paths.root) == before and leftovers(paths.root) == []
    disk.free()
    r = await client.request(method, path, headers=headers, json=body)
    assert r.status in (200, 201)


async def test_reads_of_a_damaged_output_on_a_full_disk_serve_the_committed_lines(client, paths, master_headers,
                                                                                  disk, ref):
    """A torn tail with no writer: the read's repair cannot write, so it serves what is committed, quietly."""
    seed_target(paths, [hardcoded(3)])
    job_dir = ref.job_dir(paths)
    from stimserver.store.locks import FileLock

    lock = FileLock.acquire(output.lock_path(job_dir), blocking=False)
    with lock, output.OutputWriter.open(job_dir, lock) as w:
        w.append([output.encode({"stimulus_id": i}) for i in range(30)])
    from stimserver.store import jobrecords

    jobrecords.write_record(job_dir, {"job_id": 1, "kind": "stim", "status": "failed", "expected_lines": 60,
                                      "error": "x", "config": {}, "spec": {}})
    with open(job_dir / output.DATA_NAME, "ab") as f:
        f.write(b'{"stimulus_id": 30}\n{"stimulus_id": 3')  # a torn write
    data = (job_dir / output.DATA_NAME).read_bytes()
    disk.fail("temp file")
    disk.full = True
    headers = {**master_headers, "X-User-Id": "alice"}
    for _ in range(5):
        r = await client.get("/v1/repo/r1/targets/t1/stim/output?limit=100", headers=headers)
        assert r.status == 200
        body = await r.json()
        assert [x["stimulus_id"] for x in body["output"]] == list(range(30)) and body["lines"] == 30
    assert len(disk.failures) == 1  # one quiet repair try, then the backoff: not one per read
    assert (job_dir / output.DATA_NAME).read_bytes() == data  # the read cut nothing
    assert (job_dir / output.INDEX_NAME).stat().st_size == 30 * 8
    assert leftovers(paths.root) == [] and len(os.listdir(job_dir)) == 3  # no .corrupt-* file, empty or not


def test_a_status_read_on_a_full_disk_writes_nothing_and_reports_the_job_as_it_is(paths, ref, disk):
    """observe_orphan would mark an orphan; on a full disk it cannot, and the read must not fail for it."""
    from stimserver.jobs import liveness
    from stimserver.store import jobrecords

    seed_target(paths, [hardcoded(3)])
    ref.job_dir(paths).mkdir(parents=True)
    record = {"job_id": 3, "kind": "stim", "status": "running", "expected_lines": 3, "spec": {}, "config": {}}
    jobrecords.write_record(ref.job_dir(paths), record)
    disk.fail("temp file")
    disk.full = True
    assert liveness.observe_orphan(paths, ref, 30.0) is None  # "as it is": the caller keeps its record
    assert record_of(paths, ref) == record and disk.failures and leftovers(paths.root) == []
