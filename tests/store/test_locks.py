"""FileLock: exclusive between processes and descriptors, dies with its holder, never makes folders."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from stimserver.store.locks import FileLock, is_locked, try_lock


def test_a_lock_is_exclusive_until_released(tmp_path):
    path = tmp_path / "job.lock"
    first = FileLock.acquire(path, blocking=False)
    assert first is not None and is_locked(path)
    assert FileLock.acquire(path, blocking=False) is None  # another descriptor, same process
    first.release()
    first.release()  # releasing twice is harmless
    assert not is_locked(path)
    with FileLock.acquire(path, blocking=False) as again:
        assert again is not None and is_locked(path)
    assert not is_locked(path)


def test_try_lock_yields_none_while_held(tmp_path):
    path = tmp_path / "job.lock"
    with try_lock(path) as mine:
        assert mine is not None
        with try_lock(path) as other:
            assert other is None
    with try_lock(path) as free:
        assert free is not None


def test_a_missing_lock_file_is_not_locked_and_not_created(tmp_path):
    path = tmp_path / "never.lock"
    assert not is_locked(path) and not path.exists()


def test_a_lock_never_recreates_a_removed_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        FileLock.acquire(tmp_path / "gone" / "job.lock", blocking=False)
    assert not (tmp_path / "gone").exists()


def test_a_lock_held_by_another_process_dies_with_it(tmp_path):
    path = tmp_path / "job.lock"
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from stimserver.store.locks import FileLock
        lock = FileLock.acquire(Path({str(path)!r}), blocking=True)
        print("held", flush=True)
        sys.stdin.read()  # hold until the test kills us
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          env=env) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            assert is_locked(path) and FileLock.acquire(path, blocking=False) is None
        finally:
            holder.kill()
            holder.wait(30)
    lock = FileLock.acquire(path, blocking=False)  # no heartbeat, no stale lock to clean up
    assert lock is not None
    lock.release()
