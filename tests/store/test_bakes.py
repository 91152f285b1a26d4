"""store/bakes.py: bake records, the job folder's files, trash, the download secret and checkpoint archives."""
from __future__ import annotations

import io
import os
import tarfile
import threading

import orjson
import pytest

from stimserver.store import bakefiles
from stimserver.store.bakes import ARCHIVES, SECRET_NAME, BakeStore, archive_members
from stimserver.store.errors import NotFound
from stimserver.store.locks import FileLock
from stimserver.store.output import lock_path
from stimserver.store.records import Records
from tests.handlers.test_bakes import ARCHIVED, CHECKPOINT_FILES, EVALUATION, add_checkpoint, fake_bake_job, train_rows


@pytest.fixture
def store(records: Records) -> BakeStore:
    records.create_repo("alice", "r1", "m")
    return BakeStore(records)


def record(name: str, **config) -> dict:
    return {"bake_name": name, "template": "default", "overrides": {}, "config": config, "created_at": "now"}


def test_records_are_created_once_and_listed(store):
    made, created = store.create("alice", "r1", record("b1", epochs=1))
    assert created and store.bake("alice", "r1", "b1") == made
    again, created = store.create("alice", "r1", record("b1", epochs=2))
    assert not created and again["config"] == {"epochs": 1}
    store.create("alice", "r1", record("a0"))
    folder = store.paths.bakes("alice", "r1")
    (folder / ".b9.trash-0000").mkdir()
    (folder / "norecord").mkdir()
    (folder / "bad name").mkdir()
    (folder / "bad name" / "bake.json").write_text("{}")
    assert store.names("alice", "r1") == ["a0", "b1"]
    assert store.names("alice", "nope") == [] and store.bake("alice", "r1", "nope") is None


def test_racing_creators_make_one_record(store):
    results: list[bool] = []

    def make(i: int) -> None:
        results.append(store.create("alice", "r1", record("b1", seed=i))[1])

    threads = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_files_of_a_job(store, paths):
    store.create("alice", "r1", record("b1"))
    assert store.job("alice", "r1", "b1") is None
    empty = store.files("alice", "r1", "b1")
    assert (empty.rows, empty.plan, empty.evaluation, empty.failure, empty.checkpoints) == (
        bakefiles.RowSummary(), None, None, None, [])
    fake_bake_job(paths, "alice", "r1", "b1", evaluation=EVALUATION, failure="boom")
    files = store.files("alice", "r1", "b1")
    losses = [row["loss"] for row in train_rows(4) if row["type"] == "train"]
    assert files.rows == bakefiles.RowSummary(train_rows=4, latest_loss=losses[-1], min_loss=min(losses),
                                              max_loss=max(losses), last_train_iter=4)
    assert files.plan["total_steps"] == 4 and files.evaluation == EVALUATION
    assert files.failure == {"error": "boom", "kind": "data"} and files.checkpoints == [2, 4]
    assert store.files("alice", "r1", "b1", rows=False).rows == bakefiles.RowSummary()
    assert store.job("alice", "r1", "b1")["job_id"] == 7
    assert orjson.loads(store.rows_json("alice", "r1", "b1")) == train_rows(4)
    job_dir = store.job_dir("alice", "r1", "b1")
    (job_dir / bakefiles.CHECKPOINTS / "6").mkdir()  # not published: no info file
    assert store.checkpoints("alice", "r1", "b1") == [2, 4]


def test_row_summaries_read_only_what_was_appended(tmp_path):
    job_dir = tmp_path / "bake"
    job_dir.mkdir()
    bakefiles.append_rows(job_dir, [{"type": "train", "iter": 1, "loss": 2.0}, {"type": "eval", "iter": 1}])
    assert bakefiles.summarize_rows(job_dir).latest_loss == 2.0
    with open(job_dir / bakefiles.METRICS, "ab") as f:
        f.write(b'{"type": "train", "iter": 2, "loss": 1.0}\n{"type": "train", "it')  # a torn last line
    summary = bakefiles.summarize_rows(job_dir)
    assert (summary.train_rows, summary.latest_loss, summary.min_loss, summary.last_train_iter) == (2, 1.0, 1.0, 2)
    assert [r["iter"] for r in orjson.loads(bakefiles.rows_json(job_dir))] == [1, 1, 2]
    bakefiles.repair_rows(job_dir)
    bakefiles.append_rows(job_dir, [{"type": "train", "iter": 3, "loss": 3.0}])
    summary = bakefiles.summarize_rows(job_dir)
    assert (summary.train_rows, summary.max_loss, summary.last_train_iter) == (3, 3.0, 3)
    (job_dir / bakefiles.METRICS).write_bytes(b'{"type": "train", "iter": 1, "loss": 5.0}\n')  # replaced
    assert bakefiles.summarize_rows(job_dir).train_rows == 1


def test_trash_takes_the_whole_bake_away(store, paths):
    store.create("alice", "r1", record("b1"))
    job_dir = fake_bake_job(paths, "alice", "r1", "b1")
    held = FileLock.acquire(lock_path(job_dir), blocking=False)
    assert held is not None and store.lock_job("alice", "r1", "b1") is None
    held.release()
    lock = store.lock_job("alice", "r1", "b1")
    assert lock is not None
    assert store.job("alice", "r1", "b1") is not None  # cached now
    store.trash("alice", "r1", "b1")
    lock.release()
    assert store.bake("alice", "r1", "b1") is None and store.job("alice", "r1", "b1") is None
    assert store.names("alice", "r1") == []
    store.purge_trash("alice", "r1")
    assert os.listdir(store.paths.bakes("alice", "r1")) == []


def test_the_download_secret_is_made_once_and_private(store, paths):
    secret = store.download_secret()
    assert len(secret) >= 32 and store.download_secret() == secret
    assert BakeStore(Records(paths)).download_secret() == secret  # another process on the same data directory
    assert (paths.root / SECRET_NAME).stat().st_mode & 0o777 == 0o600


def _names(data: bytes) -> list[tuple[str, int, int]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return [(m.name, m.mode, m.uid) for m in tar.getmembers()]


def test_archive_holds_the_model_not_the_resume_state(store, paths):
    store.create("alice", "r1", record("b1"))
    job_dir = fake_bake_job(paths, "alice", "r1", "b1", steps=(3,))
    folder = bakefiles.checkpoint_dir(job_dir, 3)
    (folder / "rng_state_1.pth").write_bytes(b"rng of rank 1")
    (folder / "global_step3").mkdir()  # a DeepSpeed folder
    (folder / ".hidden").write_bytes(b"x")
    assert [p.name for p in archive_members(folder)] == sorted(ARCHIVED)
    path = store.archive("alice", "r1", "b1", 3)
    assert path == job_dir / ARCHIVES / "3.tar.gz"
    data = path.read_bytes()
    assert _names(data) == [("r1-b1-3", 0o755, 0), *((f"r1-b1-3/{n}", 0o644, 0) for n in sorted(ARCHIVED))]
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        assert tar.extractfile("r1-b1-3/adapter_model.safetensors").read() == \
            CHECKPOINT_FILES["adapter_model.safetensors"] + b"3"
    # made once: a second call does not rebuild; a rebuild gives the very same bytes
    mtime = path.stat().st_mtime_ns
    assert store.archive("alice", "r1", "b1", 3) == path and path.stat().st_mtime_ns == mtime
    path.unlink()
    assert store.archive("alice", "r1", "b1", 3).read_bytes() == data
    assert [n for n in os.listdir(job_dir / ARCHIVES) if not n.startswith(".") or ".tmp-" in n] == ["3.tar.gz"]


def test_archive_of_a_missing_checkpoint(store, paths):
    store.create("alice", "r1", record("b1"))
    with pytest.raises(NotFound):
        store.archive("alice", "r1", "b1", 1)
    job_dir = fake_bake_job(paths, "alice", "r1", "b1", steps=(2,))
    with pytest.raises(NotFound, match="no checkpoint 5"):
        store.archive("alice", "r1", "b1", 5)
    (bakefiles.checkpoint_dir(job_dir, 5)).mkdir()  # a folder without its info file is not published
    with pytest.raises(NotFound):
        store.archive("alice", "r1", "b1", 5)


def test_concurrent_first_requests_build_one_archive(store, paths, monkeypatch):
    from stimserver.store import bakes as module

    store.create("alice", "r1", record("b1"))
    fake_bake_job(paths, "alice", "r1", "b1", steps=(2,))
    builds: list[int] = []
    real = module._build
    monkeypatch.setattr(module, "_build", lambda *a: (builds.append(1), real(*a))[1])
    threads = [threading.Thread(target=store.archive, args=("alice", "r1", "b1", 2)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert builds == [1]


def test_a_full_disk_leaves_no_archive(store, paths, monkeypatch):
    import errno

    from stimserver.store import bakes as module
    from stimserver.store.errors import NoSpace

    store.create("alice", "r1", record("b1"))
    job_dir = fake_bake_job(paths, "alice", "r1", "b1", steps=(2,))

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module.os, "fsync", full)
    with pytest.raises(NoSpace):
        store.archive("alice", "r1", "b1", 2)
    assert [n for n in os.listdir(job_dir / ARCHIVES) if not n.endswith(".lock")] == []


def test_checkpoint_info_is_what_publish_writes(tmp_path):
    """The fake checkpoints of these tests look like bakefiles.publish_checkpoint's."""
    job_dir = tmp_path / "bake"
    job_dir.mkdir()
    add_checkpoint(job_dir, 3)
    assert bakefiles.checkpoint_steps(job_dir) == [3]
    assert orjson.loads((bakefiles.checkpoint_dir(job_dir, 3) / bakefiles.CHECKPOINT_INFO).read_bytes())["step"] == 3
