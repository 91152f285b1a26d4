"""locked_record: the one way a transition takes a job's lock and reads its record."""
from __future__ import annotations

import threading

import pytest

from stimserver.jobs import liveness, transitions
from stimserver.jobs.transitions import locked_record
from stimserver.store import jobrecords
from stimserver.store.jobrecords import JobStatus
from stimserver.store.locks import FileLock, is_locked
from stimserver.store.output import lock_path

from .conftest import hardcoded, seed_target


@pytest.fixture
def job(paths, ref):
    """A target with a job record in status ``pending``; returns a writer of its record."""
    seed_target(paths, [hardcoded(1)])
    ref.job_dir(paths).mkdir(parents=True)

    def write(status: str, **extra) -> dict:
        record = {"job_id": 1, "kind": "stim", "status": status, "spec": {}, **extra}
        jobrecords.write_record(ref.job_dir(paths), record)
        return record

    write("pending")
    return write


def held(paths, ref) -> bool:
    return is_locked(lock_path(ref.job_dir(paths)))


def test_yields_the_record_with_the_lock_held_and_releases_it(paths, ref, job):
    with locked_record(paths, ref) as locked:
        assert locked is not None and locked.record["status"] == "pending" and held(paths, ref)
        assert locked.status == JobStatus.PENDING
    assert not held(paths, ref)


@pytest.mark.parametrize("status", ["complete", "failed"])
def test_a_record_of_another_status_yields_none_and_holds_nothing(paths, ref, job, status):
    job(status)
    with locked_record(paths, ref) as locked:
        assert locked is None and not held(paths, ref)
    with locked_record(paths, ref, (status,)) as locked:
        assert locked is not None and locked.status == status


def test_a_lock_held_elsewhere_yields_none(paths, ref, job):
    with FileLock.acquire(lock_path(ref.job_dir(paths)), blocking=False):
        with locked_record(paths, ref, None) as locked:
            assert locked is None


def test_no_record_yields_none_unless_any_record_is_asked_for(paths, ref):
    seed_target(paths, [hardcoded(1)])
    with locked_record(paths, ref) as locked:
        assert locked is None
    with locked_record(paths, ref, None) as locked:
        assert locked is not None and locked.record is None and held(paths, ref)
    assert not held(paths, ref)


def test_a_removed_target_yields_none_and_creates_nothing(paths, ref):
    with locked_record(paths, ref, None) as locked:
        assert locked is None
    assert not ref.job_dir(paths).parent.exists()


def test_hand_over_gives_the_lock_to_the_caller(paths, ref, job):
    with locked_record(paths, ref) as locked:
        lock = locked.hand_over()
    assert held(paths, ref)
    lock.release()
    assert not held(paths, ref)


def test_an_error_in_the_body_releases_the_lock_even_after_hand_over(paths, ref, job):
    with pytest.raises(RuntimeError):
        with locked_record(paths, ref) as locked:
            locked.hand_over()
            raise RuntimeError("boom")
    assert not held(paths, ref)


def test_write_replaces_the_record_under_the_lock(paths, ref, job):
    with locked_record(paths, ref) as locked:
        locked.write({**locked.record, "status": "running"})
        assert locked.status == "running"
    assert jobrecords.read_record(ref.job_dir(paths))["status"] == "running"


def test_every_transition_goes_through_locked_record(paths, ref, job, monkeypatch):
    calls: list[object] = []
    real = transitions.locked_record

    def counting(*args, **kwargs):
        calls.append(args[2] if len(args) > 2 else kwargs.get("statuses", "default"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transitions, "locked_record", counting)
    monkeypatch.setattr(liveness, "locked_record", counting)
    claimed = transitions.claim(paths, ref, {"pid": 1})
    assert claimed is not None
    claimed[0].release()
    assert liveness.requeue_orphan(paths, ref) is True
    assert liveness.observe_orphan(paths, ref, 3600) is not None
    assert liveness.stop_job(paths, ref, 5) is True
    assert len(calls) == 4 and jobrecords.read_record(ref.job_dir(paths))["status"] == "failed"


def test_wait_takes_a_lock_its_writer_lets_go_of(paths, ref, job):
    writer = FileLock.acquire(lock_path(ref.job_dir(paths)), blocking=False)
    threading.Timer(0.2, writer.release).start()
    with locked_record(paths, ref, None, wait=30) as locked:
        assert locked is not None and locked.status == JobStatus.PENDING and held(paths, ref)


def test_discard_waits_for_the_writer_of_a_finished_job_only(paths, ref, job, monkeypatch):
    """The runner that wrote "complete" still holds the lock for a moment: DELETE waits it out
    (the multi-host suite saw a 409 there); a running job's lock is held for the whole run."""
    waits: list[float] = []
    real = jobrecords.wait_job_lock

    def recording(job_dir, seconds):
        waits.append(seconds)
        return real(job_dir, seconds)

    monkeypatch.setattr(jobrecords, "wait_job_lock", recording)
    job("running")
    with FileLock.acquire(lock_path(ref.job_dir(paths)), blocking=False):
        with pytest.raises(transitions.JobBusy, match="is being written"):
            transitions.discard(paths, ref)
    assert waits == [0.0]

    job("complete")
    writer = FileLock.acquire(lock_path(ref.job_dir(paths)), blocking=False)
    threading.Timer(0.2, writer.release).start()
    assert transitions.discard(paths, ref) is True
    assert waits == [0.0, transitions.FINISHED_LOCK_WAIT] and jobrecords.read_record(ref.job_dir(paths)) is None
