"""Records are cached but never stale, and job ids never repeat across processes."""
from __future__ import annotations

import multiprocessing
import os

from stimserver.store.cache import FileCache
from stimserver.store.paths import DataPaths
from stimserver.store.records import Records


def test_cache_sees_changes_made_elsewhere(tmp_path):
    cache = FileCache()
    path = tmp_path / "r.json"
    assert cache.read(path) is None
    path.write_bytes(b'{"v": 1}')
    assert cache.read(path) == {"v": 1}
    path.write_bytes(b'{"v": 22}')  # another process rewrote it
    assert cache.read(path) == {"v": 22}
    path.unlink()
    assert cache.read(path) is None


def _ids(root: str, n: int, q) -> None:
    r = Records(DataPaths(__import__("pathlib").Path(root)))
    q.put([r.next_job_id() for _ in range(n)])


def test_job_ids_unique_across_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    procs = [ctx.Process(target=_ids, args=(str(tmp_path), 50, q)) for _ in range(3)]
    for p in procs:
        p.start()
    ids = [i for _ in procs for i in q.get(timeout=30)]
    for p in procs:
        p.join()
    assert sorted(ids) == list(range(1, 151))
    assert os.path.exists(tmp_path / ".jobseq")


def test_damaged_records_read_as_absent(tmp_path, caplog):
    cache = FileCache()
    path = tmp_path / "r.json"
    for damaged in (b'{"torn', b"[1, 2]", b"\xff\xfe"):
        path.write_bytes(damaged)
        assert cache.read(path) is None
    assert "ignoring" in caplog.text
