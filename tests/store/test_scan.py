"""store.scan: the matches of a bounded scan, line numbers, continuation, RE2's limits."""
from __future__ import annotations

import orjson
import pytest

from stimserver.store import output, scan
from stimserver.store.locks import FileLock


def write(job_dir, rows) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock.acquire(output.lock_path(job_dir), blocking=True)
    try:
        with output.OutputWriter.open(job_dir, lock) as w:
            w.append([output.encode(r) for r in rows])
    finally:
        lock.release()


def everything(job_dir, pattern, path=None, limit=1000, max_bytes=1 << 30):
    """Follow next_offset to the end; every call must make progress."""
    found, offset = [], 0
    while offset is not None:
        got = scan.search(job_dir, pattern, path, offset, limit, max_bytes)
        assert got.next_offset is None or got.next_offset > offset
        assert got.scanned_lines == (got.next_offset if got.next_offset is not None else got.lines) - offset
        found += [m.line for m in got.matches]
        offset = got.next_offset
    return found


@pytest.fixture
def job(tmp_path):
    rows = [{"stimulus_id": i, "question": ("long " * (i % 40)) + f"n{i}", "tag": "Ünïcode" if i % 9 == 0 else "x"}
            for i in range(700)]
    write(tmp_path / "stim", rows)
    return tmp_path / "stim", rows


@pytest.mark.parametrize("max_bytes, limit", [(1 << 30, 1000), (4096, 1000), (1, 1000), (1 << 30, 1), (5000, 3)])
def test_every_budget_and_limit_finds_the_same_lines(job, max_bytes, limit):
    job_dir, rows = job
    want = [i for i, r in enumerate(rows) if r["tag"] == "Ünïcode"]
    assert everything(job_dir, scan.compile_pattern("ünÏCODE", None), None, limit, max_bytes) == want
    assert everything(job_dir, scan.compile_pattern(None, r"n\d*5$"), ("question",), limit, max_bytes) == [
        i for i in range(700) if str(i).endswith("5")]


def test_a_line_is_matched_once_and_anchors_are_per_line(job):
    job_dir, rows = job
    assert everything(job_dir, scan.compile_pattern("long", None)) == [i for i in range(700) if i % 40]
    assert everything(job_dir, scan.compile_pattern(None, "$")) == list(range(700))
    assert everything(job_dir, scan.compile_pattern(None, '^{"stimulus_id":1[0-9]?,')) == [1, *range(10, 20)]
    assert everything(job_dir, scan.compile_pattern(None, "[^~]*")) == list(range(700))


def test_a_budget_of_one_byte_still_reads_one_line(job):
    job_dir, _ = job
    got = scan.search(job_dir, scan.compile_pattern("n0", None), None, 0, 10, 1)
    assert [m.line for m in got.matches] == [0] and got.next_offset == 1 and got.scanned_lines == 1
    assert orjson.loads(got.matches[0].raw)["stimulus_id"] == 0


def test_offsets_at_or_past_the_end_and_no_output(job, tmp_path):
    job_dir, _ = job
    got = scan.search(job_dir, scan.compile_pattern("n", None), None, 700, 10, 1 << 20)
    assert got.matches == [] and got.next_offset is None and got.lines == 700
    got = scan.search(tmp_path / "none", scan.compile_pattern("n", None), None, 0, 10, 1 << 20)
    assert got.matches == [] and got.lines == 0


def test_field_paths(job):
    job_dir, rows = job
    write(job_dir.parent / "nested", [{"a": {"b": [1, {"c": "deep"}]}, "n": None}, {"a": "flat"}])
    nested = job_dir.parent / "nested"
    assert everything(nested, scan.compile_pattern("deep", None), ("a", "b", "1", "c")) == [0]
    assert everything(nested, scan.compile_pattern(None, r"^\[1,"), ("a", "b")) == [0]
    assert everything(nested, scan.compile_pattern("null", None), ("n",)) == []  # null is absent
    assert everything(nested, scan.compile_pattern("flat", None), ("a", "b")) == []


@pytest.mark.parametrize("query, regex, reason", [
    (None, "(a", r"missing \)"), (None, r"(a)\1", "escape"), (None, "a{1001}", "repetition"),
    ("", None, "empty"), (None, "", "empty"), ("a" * 1001, None, "longer"), (None, "(?<name>x)\\k<name>", "escape"),
])
def test_bad_patterns(query, regex, reason):
    with pytest.raises(scan.BadPattern, match=reason) as e:
        scan.compile_pattern(query, regex)
    assert "(?m)" not in str(e.value)  # the pattern as the user wrote it


def test_substring_special_characters_are_literal(tmp_path):
    write(tmp_path / "s", [{"q": "a.b"}, {"q": "axb"}, {"q": "(x+)*"}])
    assert everything(tmp_path / "s", scan.compile_pattern("a.b", None)) == [0]
    assert everything(tmp_path / "s", scan.compile_pattern("(X+)*", None)) == [2]
