"""Atomic writes leave the old or the new file, never a mix, and no temp files."""
from __future__ import annotations

import os
import threading
import time

import orjson
import pytest

from stimserver.store import atomic
from stimserver.store.errors import NoSpace


def test_write_json_atomic_replaces_whole_file(tmp_path):
    path = tmp_path / "a" / "rec.json"
    atomic.write_json_atomic(path, {"v": 1})
    atomic.write_json_atomic(path, {"v": 2, "more": "x" * 1000})
    assert orjson.loads(path.read_bytes()) == {"v": 2, "more": "x" * 1000}
    assert [p.name for p in path.parent.iterdir()] == ["rec.json"]


def test_create_exclusive_has_one_winner(tmp_path):
    path = tmp_path / "rec.json"
    wins = []
    barrier = threading.Barrier(8)

    def create(i: int) -> None:
        barrier.wait()
        wins.append(atomic.create_json_exclusive(path, {"by": i}))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
    assert orjson.loads(path.read_bytes())["by"] in range(8)
    assert [p.name for p in tmp_path.iterdir()] == ["rec.json"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "rec.json"
    atomic.write_json_atomic(path, {"v": 1})

    def boom(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", boom)
    with pytest.raises(NoSpace, match="the disk is full: rec.json could not be stored"):
        atomic.write_json_atomic(path, {"v": 2})
    assert orjson.loads(path.read_bytes()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["rec.json"]


def test_sweep_temp_files_spares_writes_in_progress(tmp_path):
    (tmp_path / "x").mkdir()
    old = tmp_path / "x" / ".rec.json.tmp-abc"
    old.write_text("half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    fresh = tmp_path / "x" / ".other.json.tmp-def"  # another process is writing it now
    fresh.write_text("in progress")
    (tmp_path / "x" / "rec.json").write_text("{}")
    assert atomic.sweep_temp_files(tmp_path) == 1
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [".other.json.tmp-def", "rec.json"]


def _stale_then_real(real_open, failures: int):
    """``open`` that fails with ESTALE ``failures`` times, as GlusterFS does when another host's
    rename lands between the lookup and the read."""
    import errno

    left = [failures]

    def fake(path, *args, **kwargs):
        if left[0] > 0:
            left[0] -= 1
            raise OSError(errno.ESTALE, "Stale file handle", str(path))
        return real_open(path, *args, **kwargs)
    return fake


def test_read_replaced_looks_the_name_up_again_after_estale(tmp_path, monkeypatch):
    path = tmp_path / "job.json"
    atomic.write_json_atomic(path, {"status": "complete"})
    monkeypatch.setattr(atomic, "open", _stale_then_real(open, 2), raising=False)
    assert orjson.loads(atomic.read_replaced(path)) == {"status": "complete"}


def test_read_replaced_gives_up_after_its_retries(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "job.json"
    atomic.write_json_atomic(path, {"status": "complete"})
    monkeypatch.setattr(atomic, "open", _stale_then_real(open, atomic.STALE_RETRIES + 1), raising=False)
    with pytest.raises(OSError) as e:
        atomic.read_replaced(path)
    assert e.value.errno == errno.ESTALE


def test_a_record_replaced_elsewhere_mid_read_is_not_taken_for_missing(tmp_path, monkeypatch):
    from stimserver.store import jobrecords
    from stimserver.store.cache import FileCache

    job_dir = tmp_path / "stim"
    job_dir.mkdir()
    jobrecords.write_record(job_dir, {"status": "running"})
    monkeypatch.setattr(atomic, "open", _stale_then_real(open, 1), raising=False)
    assert jobrecords.read_record(job_dir) == {"status": "running"}
    monkeypatch.setattr(atomic, "open", _stale_then_real(open, 1), raising=False)
    assert FileCache().read(jobrecords.job_file(job_dir)) == {"status": "running"}
