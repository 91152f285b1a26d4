"""Checkpoint evaluations on request, run by the job runner (jobs/bake.py ``claim_evaluation`` and
``run_evaluation``, jobs/runner.py): picked up from the request file, one evaluator process at a time,
with the trainer's interpreter, failures recorded with the end of the log, pending again after a
restart, stopped when the bake goes away.

A fake interpreter stands in for ``python -m stimserver.train.evaluate_checkpoint JOB_DIR STEP``
(the real one is tested in tests/train/test_evaluate_checkpoint.py): it follows the script in
``JOB_DIR/fake-eval.json``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from stimserver.jobs.bake import BakeKind, BakeSettings, claim_evaluation, evaluator_command
from stimserver.store import bakefiles
from stimserver.store import jobrecords as jr
from stimserver.store.paths import DataPaths
from tests.jobs.conftest import executable, wait_until

FAKE_EVALUATOR = r'''#!{python}
"""Stands in for `python -m stimserver.train.evaluate_checkpoint JOB_DIR STEP`, following JOB_DIR/fake-eval.json."""
import json, os, signal, sys, time
job_dir, step = sys.argv[-2], sys.argv[-1]
evals = os.path.join(job_dir, "evals")
with open(os.path.join(job_dir, "fake-eval.json")) as f:
    script = json.load(f).get(step, {{}})
json.dump(sys.argv[1:], open(os.path.join(evals, step + ".argv"), "w"))
open(os.path.join(evals, step + ".pid"), "w").write(str(os.getpid()))
active = os.path.join(os.path.dirname(job_dir), "fake-active")
os.makedirs(active, exist_ok=True)
open(os.path.join(active, step), "w").close()
seen = len(os.listdir(active))
print("loading the checkpoint", flush=True)
time.sleep(script.get("sleep", 0.2))
os.unlink(os.path.join(active, step))
if script.get("die"):
    os.kill(os.getpid(), signal.SIGKILL)
if script.get("fail"):
    print("Traceback (most recent call last): ...", flush=True)
    print("evaluation failed: " + script["fail"], flush=True)
    sys.exit(1)
if not script.get("no_result"):
    json.dump({{"checkpoint": int(step), "heldout": None, "behaviour": None, "samples": [], "concurrent": seen}},
              open(os.path.join(evals, step + ".json"), "w"))
print("checkpoint " + step + " evaluated", flush=True)
'''


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    return executable(tmp_path / "fake-python", FAKE_EVALUATOR.format(python=sys.executable))


def bake_job(paths: DataPaths, bake: str = "b1", steps: tuple[int, ...] = (2, 4, 6),
             script: dict[int, dict[str, Any]] | None = None) -> Path:
    """A complete bake's job folder with published checkpoints, and the fake evaluator's script."""
    job_dir = paths.job_dir("alice", "r1", bake, "bake")
    job_dir.mkdir(parents=True)
    jr.write_record(job_dir, {"job_id": 5, "kind": "bake", "status": "complete", "config": {}, "spec": {}})
    for step in steps:
        folder = bakefiles.checkpoint_dir(job_dir, step)
        folder.mkdir(parents=True)
        (folder / bakefiles.CHECKPOINT_INFO).write_text("{}")
    set_script(job_dir, script or {})
    return job_dir


def set_script(job_dir: Path, script: dict[int, dict[str, Any]]) -> None:
    (job_dir / "fake-eval.json").write_bytes(orjson.dumps({str(k): v for k, v in script.items()}))


async def runner_with(make_runner, fake_python: str):
    return await make_runner(kinds={"bake": BakeKind(BakeSettings(python=fake_python, trains_here=False))})


async def ended(job_dir: Path, step: int,
                statuses: tuple[str, ...] = ("complete", "failed")) -> bakefiles.EvaluationState:
    return await wait_until(lambda: (s := bakefiles.evaluation_state(job_dir, step)).status in statuses and s,
                            f"the evaluation of checkpoint {step} to end", timeout=60)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_requested_checkpoint_is_evaluated_with_the_trainer_python(make_runner, paths, fake_python) -> None:
    job_dir = bake_job(paths)
    assert bakefiles.evaluation_state(job_dir, 4).status == "not_started"
    assert bakefiles.request_evaluation(job_dir, 4, 5)
    assert not bakefiles.request_evaluation(job_dir, 4, 5)  # already asked for: nothing written
    assert bakefiles.evaluation_state(job_dir, 4).status == "pending"
    await runner_with(make_runner, fake_python)
    state = await ended(job_dir, 4)
    assert state.status == "complete" and state.evaluation["checkpoint"] == 4
    argv = orjson.loads(bakefiles.evaluation_file(job_dir, 4, "argv").read_bytes())
    assert argv == ["-m", "stimserver.train.evaluate_checkpoint", str(job_dir), "4"]
    assert evaluator_command(BakeSettings(python="/venv/bin/python"), job_dir, 4) == [
        "/venv/bin/python", "-m", "stimserver.train.evaluate_checkpoint", str(job_dir), "4"]
    await wait_until(lambda: not bakefiles.evaluation_file(job_dir, 4, "request.json").exists(), "the request closed")
    assert "checkpoint 4 evaluated" in bakefiles.evaluation_file(job_dir, 4, "log").read_text()
    assert bakefiles.evaluation_statuses(job_dir) == {4: "complete"}


async def test_one_evaluation_at_a_time(make_runner, paths, fake_python) -> None:
    job_dir = bake_job(paths, script={2: {"sleep": 0.5}, 4: {"sleep": 0.5}, 6: {"sleep": 0.5}})
    other = bake_job(paths, "b2", script={2: {"sleep": 0.5}})
    for step in (2, 4, 6):
        bakefiles.request_evaluation(job_dir, step)
    bakefiles.request_evaluation(other, 2)
    await runner_with(make_runner, fake_python)
    for folder, step in ((job_dir, 2), (job_dir, 4), (job_dir, 6), (other, 2)):
        state = await ended(folder, step)
        assert state.status == "complete", state
        assert state.evaluation["concurrent"] == 1  # no other evaluator was running beside it


async def test_a_failure_is_recorded_with_the_end_of_the_log_and_asking_again_retries(make_runner, paths,
                                                                                     fake_python) -> None:
    job_dir = bake_job(paths, script={2: {"fail": "checkpoint 2 could not be loaded onto model 'tiny'"},
                                      4: {"die": True}, 6: {"no_result": True}})
    for step in (2, 4, 6):
        bakefiles.request_evaluation(job_dir, step)
    await runner_with(make_runner, fake_python)
    failed = await ended(job_dir, 2)
    assert failed.status == "failed"
    assert failed.error.startswith("the evaluation of checkpoint 2 failed (exit status 1); the end of its log: ")
    assert failed.error.endswith("evaluation failed: checkpoint 2 could not be loaded onto model 'tiny'")
    killed = await ended(job_dir, 4)
    assert killed.status == "failed" and "(killed by SIGKILL)" in killed.error
    assert "loading the checkpoint" in killed.error  # the end of its log
    silent = await ended(job_dir, 6)
    assert silent.status == "failed" and "ended without storing its result" in silent.error
    assert not bakefiles.evaluation_file(job_dir, 2, "request.json").exists()
    # asking again is the retry: the failure is forgotten, the evaluator runs again
    set_script(job_dir, {})
    assert bakefiles.request_evaluation(job_dir, 2)
    assert bakefiles.evaluation_state(job_dir, 2).status in ("pending", "running")
    assert (await ended(job_dir, 2)).status == "complete"
    assert bakefiles.evaluation_statuses(job_dir) == {2: "complete", 4: "failed", 6: "failed"}


async def test_a_pending_request_survives_a_restart(make_runner, paths, fake_python) -> None:
    job_dir = bake_job(paths, script={6: {"sleep": 60}})
    bakefiles.request_evaluation(job_dir, 6)
    first = await runner_with(make_runner, fake_python)
    await wait_until(lambda: bakefiles.evaluation_state(job_dir, 6).status == "running"
                     and bakefiles.evaluation_file(job_dir, 6, "pid").exists(), "the evaluator to run")
    pid = int(bakefiles.evaluation_file(job_dir, 6, "pid").read_text())
    await first.close()  # a shutdown: the evaluator is stopped, the request stays
    assert not alive(pid)
    assert bakefiles.evaluation_state(job_dir, 6).status == "pending"
    set_script(job_dir, {})
    await runner_with(make_runner, fake_python)  # the next server start picks it up
    assert (await ended(job_dir, 6)).status == "complete"


async def test_a_deleted_bake_stops_its_evaluation(make_runner, paths, fake_python) -> None:
    job_dir = bake_job(paths, script={2: {"sleep": 60}})
    bakefiles.request_evaluation(job_dir, 2)
    runner = await runner_with(make_runner, fake_python)
    await wait_until(lambda: bakefiles.evaluation_file(job_dir, 2, "pid").exists(), "the evaluator to run")
    pid = int(bakefiles.evaluation_file(job_dir, 2, "pid").read_text())
    bake_folder = job_dir.parent
    trashed = bake_folder.with_name(f".{bake_folder.name}.trash-0001")
    os.rename(bake_folder, trashed)  # as a DELETE of the bake does, before removing it
    await wait_until(lambda: not alive(pid), "the evaluator to be stopped")
    await wait_until(lambda: runner._evaluation is None, "the runner to be free")
    assert not (trashed / "bake" / bakefiles.EVALS / "2.failed.json").exists()
    assert claim_evaluation(paths) is None  # a trashed bake's request is never picked up


async def test_a_request_already_answered_runs_nothing(make_runner, paths, fake_python) -> None:
    job_dir = bake_job(paths)
    bakefiles.request_evaluation(job_dir, 2)
    bakefiles.store_evaluation(job_dir, 2, {"heldout": None, "behaviour": None, "samples": []})
    runner = await runner_with(make_runner, fake_python)
    await runner.scan_once()
    await wait_until(lambda: not bakefiles.evaluation_file(job_dir, 2, "request.json").exists(), "the request closed")
    assert not bakefiles.evaluation_file(job_dir, 2, "argv").exists()
    assert bakefiles.evaluation_state(job_dir, 2).status == "complete"


async def test_a_runner_without_bakes_leaves_requests_alone(make_runner, paths) -> None:
    job_dir = bake_job(paths)
    bakefiles.request_evaluation(job_dir, 2)
    runner = await make_runner(kinds={})
    await runner.scan_once()
    assert bakefiles.evaluation_state(job_dir, 2).status == "pending"
