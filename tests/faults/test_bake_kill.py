"""SIGKILL a real ``stimserver serve`` in the middle of a bake, start it again, and check what survived.

The trainer is a child process in a session of its own, so killing the server's process
group does not reach it: it must die with the server (PR_SET_PDEATHSIG) rather than keep
writing to a job no runner owns. After the restart the bake resumes from its last checkpoint
and completes; the metrics rows committed before the kill are unchanged and no step is
logged twice or lost; the checkpoints listed before the kill are byte for byte the same.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import orjson

from stimserver.store import bakefiles
from stimserver.store.atomic import write_json_atomic
from stimserver.store.paths import DataPaths
from stimserver.store.records import Records
from tests.conftest import import_jsonl
from tests.serverproc import ServerProcess, free_port, request
from tests.test_client_bakes import rollout_lines
from tests.train import tiny

BAKE = "/v1/repo/r1/bakes/slow"
OVERRIDES = {"datasets": [{"target": "french"}], "epochs": 30, "micro_batch_size": 2,
             "model": {"baked_adapter_config": {"r": 2, "lora_alpha": 4}}, "optimizer": {"learning_rate": 0.001},
             "data": {"max_length": 96, "train_eval_split": [0.8, 0.2]},
             "checkpoint": [{"save_every_n_steps": 25, "save_end_of_training": True}]}


def call(server: ServerProcess, method: str, path: str, body: dict | None = None) -> dict:
    code, _, raw = request(server.port, method, path, headers={**server.headers("alice"),
                                                                "Content-Type": "application/json"},
                           body=None if body is None else orjson.dumps(body))
    assert code in (200, 201), raw
    return orjson.loads(raw)


def wait(server: ServerProcess, done, what: str) -> dict:
    return server.wait_for_job(BAKE, done, what, timeout=240, pause=0.1)


def trainers(job_dir: Path) -> list[int]:
    """Live processes whose command line names the job folder (the trainer)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if str(job_dir).encode() in cmdline and b"stimserver.train" in cmdline and state != "Z":
            found.append(int(pid))
    return found


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_killed_bake_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    data = tmp_path / "data"
    paths = DataPaths(data)
    write_json_atomic(paths.repo("alice", "r1") / "repo.json", {"repo_name": "r1", "base_model": str(tiny.model_dir())})
    src = tmp_path / "rollout.jsonl"
    src.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in rollout_lines(12)))
    import_jsonl(Records(paths), "alice", "r1", "french", src, kind="rollout")
    job_dir = paths.job_dir("alice", "r1", "slow", "bake")
    env = {"STIMSERVER_BAKE_THREADS": "1", "STIMSERVER_BAKE_EVAL_SAMPLES": "1", "HF_HUB_OFFLINE": "1"}

    server = ServerProcess(data, free_port(), tmp_path, env=env).start()
    try:
        call(server, "POST", "/v1/repo/r1/bakes", {"bake_name": "slow", "template": "default",
                                                   "overrides": OVERRIDES})
        job_id = call(server, "POST", BAKE)["job_id"]
        running = wait(server, lambda s: len(s["checkpoints"]) >= 2, "two checkpoints")
        assert running["status"] == "running"
        assert trainers(job_dir)
        server.kill()  # SIGKILL of the whole process group: the trainer is in a session of its own
    finally:
        server.kill()
    deadline = time.monotonic() + 10
    while trainers(job_dir):
        assert time.monotonic() < deadline, "the trainer outlived the server"
        time.sleep(0.1)
    rows_before = (job_dir / bakefiles.METRICS).read_bytes()
    rows_before = rows_before[:rows_before.rfind(b"\n") + 1]
    listed = bakefiles.checkpoint_steps(job_dir)
    before = {step: digests(bakefiles.checkpoint_dir(job_dir, step)) for step in listed}
    assert len(listed) >= 2

    server = ServerProcess(data, free_port(), tmp_path, env=env, name="restarted").start()
    try:
        done = wait(server, lambda s: s["status"] == "complete", "the resumed bake")
        metrics = call(server, "GET", BAKE + "/metrics")
    finally:
        server.terminate()
    assert done["job_id"] == job_id
    assert (job_dir / bakefiles.METRICS).read_bytes().startswith(rows_before)  # rows served stay as they were
    steps = [row["iter"] for row in metrics if row["type"] == "train"]
    assert steps == list(range(1, done["total_steps"] + 1))  # none lost, none twice
    evals = [row["iter"] for row in metrics if row["type"] == "eval"]
    assert evals == sorted(set(evals))
    assert {step: digests(bakefiles.checkpoint_dir(job_dir, step)) for step in listed} == before
    assert done["checkpoints"][:len(listed)] == listed and done["checkpoints"][-1] == done["total_steps"]
    plan = bakefiles.read_json(job_dir, bakefiles.PLAN)
    assert plan["resumed_from"] in listed  # the trainer started again from a checkpoint, not from step 0
