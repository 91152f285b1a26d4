"""store.frozen: a complete output linked (or copied) into another job's folder, and read line by line."""
from __future__ import annotations

import errno
import os

import orjson
import pytest

from stimserver.store import frozen, jobrecords, output
from stimserver.store.frozen import FROZEN_DATA, FROZEN_INDEX, FrozenLines, freeze
from stimserver.store.locks import FileLock

ROWS = [{"stimulus_id": i, "question": f"Q{i}?", "pad": "x" * i} for i in range(30)]


@pytest.fixture
def source(tmp_path):
    job_dir = tmp_path / "t" / "stim"
    job_dir.mkdir(parents=True)
    lock = FileLock.acquire(output.lock_path(job_dir), blocking=True)
    with lock, output.OutputWriter.open(job_dir, lock) as w:
        w.append([output.encode(r) for r in ROWS])
    return job_dir


def test_a_link_reads_back_every_line_and_outlives_a_reset(source, tmp_path):
    dest = tmp_path / "t" / "rollout"
    assert freeze(source, dest) == 30
    assert os.path.samestat((dest / FROZEN_DATA).stat(), (source / output.DATA_NAME).stat())
    jobrecords.reset_output(source)  # what a stim re-run or DELETE …/stim/output does: unlink
    with FrozenLines(dest) as lines:
        assert lines.lines == 30 and [lines.line(i) for i in (0, 17, 29)] == [ROWS[0], ROWS[17], ROWS[29]]


@pytest.mark.parametrize("code", [errno.EXDEV, errno.EPERM, errno.EMLINK])
def test_without_links_it_copies(source, tmp_path, monkeypatch, code):
    def no_links(src, dst):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(frozen.os, "link", no_links)
    dest = tmp_path / "copy"
    assert freeze(source, dest) == 30
    assert not os.path.samestat((dest / FROZEN_DATA).stat(), (source / output.DATA_NAME).stat())
    assert (dest / FROZEN_DATA).read_bytes() == (source / output.DATA_NAME).read_bytes()
    assert (dest / FROZEN_INDEX).read_bytes() == (source / output.INDEX_NAME).read_bytes()
    with FrozenLines(dest) as lines:
        assert lines.line(5) == ROWS[5]


def test_another_link_error_is_not_hidden(source, tmp_path, monkeypatch):
    def broken(src, dst):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(frozen.os, "link", broken)
    with pytest.raises(OSError, match="I/O error"):
        freeze(source, tmp_path / "x")


def test_a_missing_output_is_file_not_found(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        freeze(tmp_path / "empty", tmp_path / "dest")


def test_a_line_that_is_not_an_object_is_refused(tmp_path):
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / FROZEN_DATA).write_bytes(orjson.dumps([1, 2]) + b"\n")
    (dest / FROZEN_INDEX).write_bytes(len(orjson.dumps([1, 2]) + b"\n").to_bytes(8, "little"))
    with FrozenLines(dest) as lines, pytest.raises(ValueError, match="not a JSON object"):
        lines.line(0)
