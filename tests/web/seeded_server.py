"""A live stimserver with data under the names the OpenAPI document gives as examples.

Shared by the schemathesis tests (tests/web/test_schemathesis.py) and usable by hand:

    python -m tests.web.seeded_server      # prints its URL and master key; serves until Ctrl-C

The data: repo ``demo`` with prompts ``teacher`` and ``retired``, a target ``retired``, a
target ``geo`` with a complete stim output (150 lines) and a complete rollout (120 lines), a
bake ``bake1`` of ``geo`` with a complete job (metrics, checkpoints 2 and 4) and a bake
``retired``, so that generated requests reach deep paths and answer 200, not only 404. Jobs are
not run (``run_jobs`` off): generated targets may name LLM generators, generated bakes would
train, and these tests stay on loopback and light.
"""
from __future__ import annotations

import argparse
import signal
import tempfile
import urllib.request
from pathlib import Path

import orjson

from stimserver.config import Settings
from stimserver.store.paths import DataPaths
from stimserver.store.records import Records
from tests.aibread_server import ServerThread
from tests.conftest import MASTER_KEY, import_jsonl
from tests.handlers.test_bakes import fake_bake_job

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def start(root: Path) -> ServerThread:
    """A started, seeded server on a free loopback port and a fresh data directory under ``root``."""
    config = Settings.build(data_dir=root / "data", master_key=MASTER_KEY, access_log=False, run_jobs=False)
    server = ServerThread(config).start()
    seed(server.base_url, Records(DataPaths(config.data_dir)), root)
    return server


def _call(base: str, method: str, path: str, body: dict | None = None) -> None:
    request = urllib.request.Request(base + path, method=method, headers={**AUTH, "Content-Type": "application/json"},
                                     data=orjson.dumps(body) if body is not None else None)
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status in (200, 201)


def seed(base: str, records: Records, root: Path) -> None:
    """Data under the names the document gives as examples, so generated requests reach deep."""
    _call(base, "POST", "/v1/repo", {"repo_name": "demo"})
    for prompt in ("teacher", "retired"):
        _call(base, "POST", "/v1/repo/demo/prompts", {"prompt_name": prompt,
                                                     "messages": [{"role": "system", "content": "Be exact."}]})
    _call(base, "POST", "/v1/repo/demo/targets", {"target_name": "retired", "template": "default", "overrides": {
        "teacher_prompt": "teacher", "student_prompt": "",
        "generators": [{"type": "hardcoded", "questions": ["Capital of France?"]}]}})
    src = root / "lines.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"stimulus_id": i, "question": f"Q{i}?"}) + b"\n" for i in range(150)))
    import_jsonl(records, "admin", "demo", "geo", src)  # a completed stim output of 150 lines
    _complete_rollout(records, "admin", "demo", "geo", lines=120)
    for bake in ("bake1", "retired"):
        _call(base, "POST", "/v1/repo/demo/bakes", {"bake_name": bake, "template": "default",
                                                    "overrides": {"datasets": [{"target": "geo"}]}})
    fake_bake_job(records.paths, "admin", "demo", "bake1")  # a complete bake, as its trainer leaves it


def _complete_rollout(records: Records, user: str, repo: str, target: str, lines: int) -> None:
    """A complete rollout job as the rollout kind leaves one: record, lines, failed.json."""
    from stimserver.store import jobrecords, output
    from stimserver.store.answers import write_failed
    from stimserver.store.locks import FileLock

    job_dir = records.paths.job_dir(user, repo, target, "rollout")
    job_dir.mkdir(parents=True)
    stim_job = jobrecords.read_record(records.paths.job_dir(user, repo, target, "stim")) or {}
    config = {"model_name": "m", "num_traj_per_stimulus": 1, "temperature": 1.0, "max_tokens": None,
              "max_concurrency": 10, "extra_kwargs": {}, "stim_job_id": stim_job.get("job_id")}
    rows = [{"stimulus_id": i, "trajectory_id": 0, "question": f"Q{i}?", "stimulus": f"Q{i}?",
             "response": {"role": "assistant", "content": "A.", "finish_reason": "stop",
                          "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}},
             "error": None, "model": "m", "temperature": 1.0, "tokens": 3} for i in range(lines)]
    lock = FileLock.acquire(output.lock_path(job_dir), blocking=True)
    assert lock is not None
    with lock, output.OutputWriter.open(job_dir, lock) as writer:
        writer.append([output.encode(row) for row in rows])
    write_failed(job_dir, [])
    jobrecords.write_record(job_dir, {"job_id": records.next_job_id(), "kind": "rollout", "status": "complete",
                                      "config": config, "expected_lines": lines, "error": None,
                                      "spec": {**config, "stimuli": lines}})


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start(Path(tmp))
        print(f"{server.base_url} (master key {MASTER_KEY})", flush=True)
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        finally:
            server.stop()


if __name__ == "__main__":
    main()
