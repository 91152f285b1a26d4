"""The index is disposable: every kind of damage is repaired from the data."""
from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from stimserver.store import lineindex


def write_lines(path: Path, n: int, start: int = 0) -> list[bytes]:
    lines = [orjson.dumps({"stimulus_id": i, "question": f"q{i}" * (i % 7 + 1)}) for i in range(start, start + n)]
    with open(path, "ab") as f:
        f.write(b"".join(line + b"\n" for line in lines))
    return lines


def ends_of(lines: list[bytes]) -> list[int]:
    out, pos = [], 0
    for line in lines:
        pos += len(line) + 1
        out.append(pos)
    return out


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "output.jsonl", tmp_path / "output.idx"


def read_index(idx: Path) -> list[int]:
    raw = idx.read_bytes()
    return [int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)]


def test_format_is_little_endian_end_offsets(files):
    data, idx = files
    lines = write_lines(data, 5)
    report = lineindex.recover(data, idx)
    assert report.lines == 5 and report.scanned_lines == 5
    assert idx.stat().st_size == 5 * 8
    assert read_index(idx) == ends_of(lines)


def test_clean_files_are_trusted_without_scanning(files):
    data, idx = files
    write_lines(data, 100)
    lineindex.recover(data, idx)
    report = lineindex.recover(data, idx)
    assert (report.kept_entries, report.scanned_lines, report.cut_bytes) == (100, 0, 0)
    assert not report.repaired


def test_only_the_unindexed_tail_is_scanned(files):
    data, idx = files
    lines = write_lines(data, 50)
    lineindex.recover(data, idx)
    lines += write_lines(data, 7, start=50)
    report = lineindex.recover(data, idx)
    assert report.kept_entries == 50 and report.scanned_lines == 7
    assert read_index(idx) == ends_of(lines)


DAMAGE = {
    "index-missing": lambda data, idx: idx.unlink(),
    "index-torn-entry": lambda data, idx: idx.write_bytes(idx.read_bytes()[:-3]),
    "index-garbage": lambda data, idx: idx.write_bytes(os.urandom(idx.stat().st_size)),
    "index-longer-than-data": lambda data, idx: idx.write_bytes(
        idx.read_bytes() + (10**9).to_bytes(8, "little")),
    "index-not-monotonic": lambda data, idx: idx.write_bytes(
        idx.read_bytes()[:80] + (1).to_bytes(8, "little") + idx.read_bytes()[88:]),
    "index-off-by-one": lambda data, idx: idx.write_bytes(
        b"".join((int.from_bytes(idx.read_bytes()[i:i + 8], "little") - 1).to_bytes(8, "little")
                 for i in range(0, idx.stat().st_size, 8))),
    "index-zeroed": lambda data, idx: idx.write_bytes(bytes(idx.stat().st_size)),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_index_is_rebuilt_from_data(files, damage):
    data, idx = files
    lines = write_lines(data, 300)
    lineindex.recover(data, idx)
    before = data.read_bytes()
    damage(data, idx)
    report = lineindex.recover(data, idx)
    assert report.lines == 300
    assert read_index(idx) == ends_of(lines)
    assert data.read_bytes() == before  # the data, the truth, is untouched


@pytest.mark.parametrize("tail", [b'{"stimulus_id": 99, "quest', b"\x00" * 4096, b"not json at all\n",
                                  b"[1,2,3]\n", b'{"ok":1}\n{"torn'],
                         ids=["torn-line", "zero-fill", "garbage-line", "not-an-object", "good-then-torn"])
def test_bad_tail_is_cut_and_kept_aside(files, tail):
    data, idx = files
    lines = write_lines(data, 20)
    lineindex.recover(data, idx)
    good = data.read_bytes()
    with open(data, "ab") as f:
        f.write(tail)
    report = lineindex.recover(data, idx)
    expect_extra = 1 if tail.startswith(b'{"ok":1}\n') else 0
    assert report.lines == 20 + expect_extra
    kept = data.read_bytes()
    assert kept[:len(good)] == good
    assert report.cut_bytes == len(good) + len(tail) - len(kept)
    assert report.saved_to is not None and Path(report.saved_to).read_bytes() == tail[len(kept) - len(good):]
    assert read_index(idx)[:20] == ends_of(lines)


def test_crash_between_data_and_index_append(files):
    """The writer died after its data append, before its index append: lines are recovered."""
    data, idx = files
    lines = write_lines(data, 10)
    lineindex.recover(data, idx)
    lines += write_lines(data, 3, start=10)  # data appended, index not
    report = lineindex.recover(data, idx)
    assert report.lines == 13 and read_index(idx) == ends_of(lines)


def test_read_span_and_entries(files):
    data, idx = files
    lines = write_lines(data, 10)
    lineindex.recover(data, idx)
    fd = os.open(idx, os.O_RDONLY)
    try:
        assert lineindex.count_entries(fd) == 10
        begin, end = lineindex.read_span(fd, 3, 6)
        assert data.read_bytes()[begin:end] == b"".join(line + b"\n" for line in lines[3:6])
        assert lineindex.read_span(fd, 0, 1) == (0, len(lines[0]) + 1)
        with pytest.raises(EOFError):
            lineindex.read_entry(fd, 10)
    finally:
        os.close(fd)


def test_empty_files(files):
    data, idx = files
    report = lineindex.recover(data, idx)
    assert report.lines == 0 and data.exists() and idx.exists()


def test_a_tail_that_cannot_be_saved_is_not_cut_and_leaves_no_empty_file(files, monkeypatch):
    """On a full disk the cut bytes cannot be kept: then nothing is cut, and no empty .corrupt-* stays."""
    import errno

    data, idx = files
    write_lines(data, 3)
    with open(data, "ab") as f:
        f.write(b'{"torn')
    before = data.read_bytes()
    real_write = os.write

    def write(fd, buf):
        if ".corrupt-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, buf)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(OSError) as caught:
        lineindex.recover(data, idx)
    assert caught.value.errno == errno.ENOSPC
    assert data.read_bytes() == before and not list(data.parent.glob("*.corrupt-*"))
    monkeypatch.setattr(os, "write", real_write)
    assert lineindex.recover(data, idx).lines == 3  # space back: the repair completes


def test_saved_tails_never_overwrite_each_other(files):
    data, idx = files
    for tail in (b'{"first', b'{"second'):
        write_lines(data, 1)
        with open(data, "ab") as f:
            f.write(tail)
        lineindex.recover(data, idx)
    saved = sorted(p.read_bytes() for p in data.parent.glob("*.corrupt-*"))
    assert saved == [b'{"first', b'{"second']
