"""Import turns a JSONL file into a completed output, or writes nothing at all."""
from __future__ import annotations

import orjson
import pytest

from stimserver.store import output
from stimserver.store.importer import ImportRefused
from stimserver.store.locks import FileLock
from tests.conftest import import_jsonl


def write(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def test_import_creates_records_and_complete_job(records, tmp_path):
    src = tmp_path / "in.jsonl"
    write(src, [b'{"b": 1,  "a": [1, 2]}', b"", b'  {"x": "y"}  '])
    assert import_jsonl(records, "alice", "r", "t", src) == 2
    assert records.repo("alice", "r")["base_model"] == "Qwen/Qwen3-32B"
    assert records.target("alice", "r", "t")["config"]["generators"] == []
    job = records.job("alice", "r", "t", "stim")
    assert job["status"] == "complete" and job["expected_lines"] == 2 and isinstance(job["job_id"], int)
    jdir = records.paths.job_dir("alice", "r", "t", "stim")
    # lines are stored compact, so pages can be spliced without re-serialising
    assert (jdir / output.DATA_NAME).read_bytes() == b'{"b":1,"a":[1,2]}\n{"x":"y"}\n'


@pytest.mark.parametrize("bad, number", [(b"[1, 2]", 3), (b'{"a": ', 3), (b"42", 3), (b"\xff\xfe", 3)],
                         ids=["array", "torn", "number", "not-utf8"])
def test_bad_line_refused_with_its_number_and_nothing_written(records, tmp_path, bad, number):
    src = tmp_path / "in.jsonl"
    write(src, [b'{"ok": 1}', b'{"ok": 2}', bad, b'{"ok": 4}'])
    with pytest.raises(ImportRefused, match=f"line {number}"):
        import_jsonl(records, "alice", "r", "t", src)
    assert not (records.paths.root / "users").exists() or not any(
        p.is_file() for p in (records.paths.root / "users").rglob("*"))


def test_reimport_replaces_previous_output(records, tmp_path):
    src = tmp_path / "in.jsonl"
    write(src, [b'{"v": 1}'] * 5)
    import_jsonl(records, "alice", "r", "t", src)
    first_id = records.job("alice", "r", "t", "stim")["job_id"]
    write(src, [b'{"v": 2}'] * 3)
    import_jsonl(records, "alice", "r", "t", src)
    jdir = records.paths.job_dir("alice", "r", "t", "stim")
    assert output.line_count(jdir) == 3
    assert records.job("alice", "r", "t", "stim")["job_id"] > first_id
    assert orjson.loads(output.read_page(jdir, 0, 10).body) == [{"v": 2}] * 3
    assert sorted(p.name for p in jdir.parent.iterdir()) == ["stim", "stim.lock", "target.json"]


def test_import_refused_while_a_writer_holds_the_job(records, tmp_path):
    src = tmp_path / "in.jsonl"
    write(src, [b'{"v": 1}'])
    jdir = records.paths.job_dir("alice", "r", "t", "stim")
    jdir.parent.mkdir(parents=True)
    with FileLock.acquire(output.lock_path(jdir), blocking=False):
        with pytest.raises(ImportRefused, match="running"):
            import_jsonl(records, "alice", "r", "t", src)
