"""FileCache: one stat per hit, re-read when any process changed the file, bounded, never wrong."""
from __future__ import annotations

import os
import threading

import orjson
import pytest

from stimserver.store import cache as cache_module
from stimserver.store.atomic import write_json_atomic
from stimserver.store.cache import FileCache


@pytest.fixture
def parses(monkeypatch):
    """Every parse the cache makes (the file reads behind a miss)."""
    seen: list[bytes] = []
    real = cache_module.orjson

    class Counting:
        JSONDecodeError = real.JSONDecodeError

        @staticmethod
        def loads(raw):
            seen.append(raw)
            return real.loads(raw)

    monkeypatch.setattr(cache_module, "orjson", Counting)
    return seen


def test_a_hit_parses_nothing_and_a_change_is_seen(tmp_path, parses):
    path = tmp_path / "job.json"
    write_json_atomic(path, {"status": "pending"})
    cache = FileCache()
    assert cache.read(path) == {"status": "pending"} and len(parses) == 1
    assert cache.read(path) == {"status": "pending"} and len(parses) == 1  # same inode, size, mtime
    write_json_atomic(path, {"status": "running"})  # a rename: a new inode
    assert cache.read(path) == {"status": "running"} and len(parses) == 2


def test_an_in_place_change_of_size_is_seen(tmp_path, parses):
    path = tmp_path / "r.json"
    path.write_bytes(b'{"a": 1}')
    cache = FileCache()
    assert cache.read(path) == {"a": 1}
    with open(path, "r+b") as f:  # same inode; other size
        f.write(b'{"a": 22}')
    assert cache.read(path) == {"a": 22} and len(parses) == 2


def test_a_removed_file_reads_as_absent_and_is_dropped(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})
    cache = FileCache()
    cache.read(path)
    path.unlink()
    assert cache.read(path) is None
    assert cache.read(tmp_path / "no" / "such.json") is None


@pytest.mark.parametrize("raw", [b"[1, 2]", b"not json", b"\xff\xfe", b'"text"'])
def test_a_damaged_record_reads_as_absent(tmp_path, raw, caplog):
    path = tmp_path / "r.json"
    path.write_bytes(raw)
    assert FileCache().read(path) is None
    assert "ignoring" in caplog.text


def test_forget_makes_the_next_read_go_to_disk(tmp_path, parses):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})
    cache = FileCache()
    cache.read(path)
    cache.forget(path)
    cache.read(path)
    assert len(parses) == 2


def test_the_cache_is_bounded_and_keeps_the_recently_used(tmp_path, parses):
    paths = [tmp_path / f"{i}.json" for i in range(3)]
    for i, p in enumerate(paths):
        write_json_atomic(p, {"i": i})
    cache = FileCache(size=2)
    cache.read(paths[0])
    cache.read(paths[1])
    cache.read(paths[0])  # 0 is now the most recent
    cache.read(paths[2])  # evicts 1
    before = len(parses)
    cache.read(paths[0])
    assert len(parses) == before
    cache.read(paths[1])
    assert len(parses) == before + 1


def test_keep_only_drops_what_a_scan_no_longer_saw(tmp_path, parses):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json_atomic(a, {"a": 1})
    write_json_atomic(b, {"b": 1})
    cache = FileCache()
    cache.read(a)
    cache.read(b)
    cache.keep_only({a})
    cache.read(a)
    cache.read(b)
    assert len(parses) == 3


def test_threads_may_share_one_cache(tmp_path):
    path = tmp_path / "r.json"
    cache = FileCache(size=8)
    write_json_atomic(path, {"n": 0})
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(500):
                value = cache.read(path)
                assert value is not None and isinstance(value["n"], int)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for n in range(1, 50):
        write_json_atomic(path, {"n": n})
    for t in threads:
        t.join(60)
    assert errors == [] and cache.read(path) == {"n": 49}
    assert orjson.loads(path.read_bytes()) == {"n": 49} and os.stat(path).st_size > 0


def test_load_parses_once_per_identity_and_raises_for_a_missing_file(tmp_path):
    path = tmp_path / "questions.txt"
    path.write_text("a\nb\n")
    calls: list[str] = []

    def parse(p):
        calls.append(p.name)
        return p.read_text().split()

    cache = FileCache()
    assert cache.load(path, parse) == ["a", "b"] and cache.load(path, parse) == ["a", "b"]
    assert calls == ["questions.txt"]
    path.write_text("a\nb\nc\n")
    assert cache.load(path, parse) == ["a", "b", "c"] and len(calls) == 2
    with pytest.raises(FileNotFoundError):
        cache.load(tmp_path / "missing.txt", parse)


def test_read_versioned_names_the_file_the_answer_came_from(tmp_path):
    """The identity keys what callers derive from a record (the open outputs of a complete job)."""
    cache = FileCache(size=2)
    path = tmp_path / "job.json"
    assert cache.read_versioned(path) == (None, None)
    write_json_atomic(path, {"status": "complete"})
    record, first = cache.read_versioned(path)
    assert record == {"status": "complete"} and first is not None
    assert cache.read_versioned(path) == (record, first)  # a hit: the same identity
    write_json_atomic(path, {"status": "complete"})  # the same content, a new file
    again, second = cache.read_versioned(path)
    assert again == record and second is not None and second != first
    path.unlink()
    assert cache.read_versioned(path) == (None, None)


def test_the_cache_keeps_at_most_its_size(tmp_path):
    cache = FileCache(size=3)
    for i in range(10):
        (tmp_path / f"{i}.json").write_bytes(b"{}")
        cache.read(tmp_path / f"{i}.json")
        assert len(cache) <= 3
