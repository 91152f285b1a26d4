"""`stimserver export`, run as a user runs it: the stored bytes, the formats, clear refusals."""
from __future__ import annotations

import orjson

from tests.test_cli import run


def test_export_writes_the_stored_lines(tmp_path):
    data = tmp_path / "data"
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"stimulus_id": i, "question": f"Q{i}?", "x": "é"}) + b"\n"
                             for i in range(5000)))
    assert run("import", "--user", "u", "--repo", "r", "--target", "t", str(src), "--data", str(data),
               "--quiet").returncode == 0
    out = tmp_path / "out.jsonl"
    r = run("export", "--user", "u", "--repo", "r", "--target", "t", "-o", str(out), "--data", str(data))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == src.read_bytes()
    assert "100%" in r.stderr and "exported 5000 lines" in r.stderr
    r = run("export", "--user", "u", "--repo", "r", "--target", "t", "--format", "questions", "--quiet",
            "--data", str(data))
    assert r.returncode == 0 and r.stderr == ""
    assert [orjson.loads(x) for x in r.stdout.splitlines()] == [{"stimulus_id": i, "question": f"Q{i}?"}
                                                                for i in range(5000)]
    r = run("export", "--user", "u", "--repo", "r", "--target", "t", "--format", "sft", "--data", str(data))
    assert r.returncode != 0 and "raw, questions" in r.stderr and "Traceback" not in r.stderr
    r = run("export", "--user", "u", "--repo", "r", "--target", "nope", "--data", str(data))
    assert r.returncode != 0 and "no target 'nope'" in r.stderr
    r = run("export", "--user", "../x", "--repo", "r", "--target", "t", "--data", str(data))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    r = run("export", "--user", "u", "--repo", "r", "--target", "t", "--kind", "rollout", "--quiet",
            "--data", str(data))
    assert r.returncode == 0 and r.stdout == ""  # never run: nothing to export
