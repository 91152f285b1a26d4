"""A really full disk (issue 16, point 1): the data directory on a small tmpfs.

Needs root (``mount``); skipped, saying so, where mounting is refused. A job larger than
the free space ends ``failed`` saying the disk is full (its end written through the
released reserve), the committed lines stay readable, a control-plane write raises
``NoSpace`` (507 over HTTP) and changes nothing, and after space is freed a resubmit
resumes the same job to completion.
"""
from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

from stimserver.jobs import JobRef, JobRunner
from stimserver.store import output
from stimserver.store.errors import NoSpace
from stimserver.store.paths import DataPaths
from stimserver.store.records import Records
from tests.jobs.conftest import StubLLM, hardcoded, lines_of, record_of, seed_target, wait_until

LINES = 6000  # ~320 bytes each: ~1.9 MB, more than is left free


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the in-process ENOSPC tests cover the same steps")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount refused ({done.stderr.decode().strip()}); the in-process ENOSPC tests cover it")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def free_bytes(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path, leave: int) -> None:
    """A filler file that leaves about ``leave`` bytes free (or none: until ENOSPC)."""
    block = b"\0" * 65536
    try:
        with open(path, "ab") as f:
            while free_bytes(path.parent) > leave + len(block):
                f.write(block)
                f.flush()
            while leave == 0:
                f.write(block[:4096])
                f.flush()
    except OSError:
        pass  # full: what was asked for


async def ended(paths, ref, status) -> dict:
    return await wait_until(lambda: (r := record_of(paths, ref)) and r["status"] == status and r, f"job {status}")


async def test_a_job_on_a_full_tmpfs_fails_cleanly_and_resumes_after_space_is_freed(tmpfs):
    paths = DataPaths(tmpfs / "data")
    ref = JobRef("alice", "r1", "t1", "stim")
    target = seed_target(paths, [hardcoded(LINES)])
    runner = JobRunner(paths, llm_factory=StubLLM, scan_seconds=0.05, flush_lines=50)
    try:
        job = await runner.submit(ref, target)
        fill(tmpfs / "filler", leave=(1 << 20) + 600_000)  # the reserve's 1 MiB + room for ~1,800 lines
        await runner.start()
        failed = await ended(paths, ref, "failed")
        committed = output.line_count(ref.job_dir(paths))
        assert 0 < committed < LINES
        assert failed["error"].startswith(f"the disk is full: the job's output could not be written at line "
                                          f"{committed}") and "POST /v1/repo/r1/targets/t1/stim" in failed["error"]
        assert [x["stimulus_id"] for x in lines_of(paths, ref)] == list(range(committed))
        assert not list(paths.root.rglob("*.corrupt-*")) and not list(paths.root.rglob("*.tmp-*"))

        fill(tmpfs / "filler2", leave=0)  # now really nothing is left
        records = Records(paths)
        with pytest.raises(NoSpace, match="the disk is full"):
            records.create_repo("alice", "another", "m")
        assert not paths.repo("alice", "another").joinpath("repo.json").exists()
        assert not list(paths.root.rglob("*.tmp-*"))
        page = await output.read_page_async(ref.job_dir(paths), 0, 100)
        assert page.total == committed and page.count == min(100, committed)

        (tmpfs / "filler").unlink()
        (tmpfs / "filler2").unlink(missing_ok=True)
        again = await runner.submit(ref, target)
        assert again["job_id"] == job["job_id"] and again["status"] == "pending"
        await ended(paths, ref, "complete")
        assert [x["stimulus_id"] for x in lines_of(paths, ref)] == list(range(LINES))
    finally:
        await asyncio.wait_for(runner.close(), 10)
