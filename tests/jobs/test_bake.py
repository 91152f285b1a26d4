"""The bake kind: what it refuses at run, the data it freezes, and how it supervises its trainer.

The trainer itself is tested in tests/train/; here a fake interpreter stands in for it
(``fake_trainer``), so the supervisor's rules — restart after a death while checkpoints
grow, fail after deaths that publish nothing, read failure.json, stop on request — are
tested without torch.
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from stimserver.jobs import JobRef, JobSource
from stimserver.jobs.bake import BakeKind, BakeSettings, select_trajectories, trainer_problem
from stimserver.jobs.kinds import ConfigProblem, JobPlan
from stimserver.store import bakefiles
from stimserver.store import jobrecords as jr
from stimserver.store.atomic import write_json_atomic
from stimserver.store.datasets import Datasets
from stimserver.store.paths import DataPaths
from stimserver.store.records import Records
from tests.conftest import import_jsonl
from tests.jobs.conftest import executable, record_of, wait_until

TEACHER = [{"role": "system", "content": "Answer in French only."}]


def rollout_line(stimulus: int, trajectory: int, *, failed: bool = False) -> dict[str, Any]:
    question = {"role": "user", "content": f"Question {stimulus}?"}
    return {"stimulus_id": stimulus, "trajectory_id": trajectory, "question": f"Question {stimulus}?",
            "unconditioned_stimulus": {"messages": [*TEACHER, question]},
            "conditioned_stimulus": {"messages": [question]},
            "response": None if failed else {"role": "assistant", "content": f"Réponse {stimulus}.{trajectory}",
                                             "finish_reason": "stop"},
            "error": "rejected" if failed else None}


def seed_rollout(records: Records, tmp_path: Path, target: str, stimuli: int, k: int = 2,
                 failed: frozenset[int] = frozenset(), *, user: str = "alice", repo: str = "r1") -> None:
    """A target with a complete rollout of ``stimuli`` × ``k`` lines (those in ``failed`` rejected)."""
    lines = [rollout_line(s, t, failed=s * k + t in failed) for s in range(stimuli) for t in range(k)]
    src = tmp_path / f"{target}.jsonl"
    src.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    import_jsonl(records, user, repo, target, src, kind="rollout")


def bake_source(paths: DataPaths, config: dict[str, Any], *, user: str = "alice", repo: str = "r1",
                bake: str = "b1") -> JobSource:
    record = {"bake_name": bake, "template": "default", "overrides": {}, "config": config}
    write_json_atomic(paths.bake_file(user, repo, bake), record)
    return JobSource(paths, user, repo, bake, record, Datasets(paths.root))


def model_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    return path


@pytest.fixture
def kind(tmp_path: Path) -> BakeKind:
    model_dir(tmp_path / "models" / "tiny")
    return BakeKind(BakeSettings(models_dirs=(tmp_path / "models",), eval_samples=4))


def config(*datasets: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"datasets": list(datasets), "seed": 42, "model": {"parent_model_name": "tiny"},
            "data": {"train_eval_split": [0.75, 0.25]}, **extra}


# -- selection ------------------------------------------------------------------------------
def lines(stimuli: int, k: int = 2, failed: set[int] = frozenset()) -> list[dict[str, Any]]:
    return [rollout_line(s, t, failed=s * k + t in failed) for s in range(stimuli) for t in range(k)]


def test_failed_trajectories_are_left_out_and_counted() -> None:
    chosen = select_trajectories(config({"target": "a"}), {"a": lines(10, failed={0, 5})})
    assert len(chosen.lines) == 18
    assert chosen.datasets == [{"target": "a", "weight": 1.0, "trajectories": 20, "skipped_failed": 2, "used": 18,
                                "eval": sum(1 for x in chosen.lines if x["split"] == "eval")}]


def test_the_split_is_by_stimulus_and_deterministic() -> None:
    cfg = config({"target": "a"})
    first = select_trajectories(cfg, {"a": lines(40)})
    again = select_trajectories(cfg, {"a": lines(40)})
    assert first.lines == again.lines
    train = {x["stimulus_id"] for x in first.lines if x["split"] == "train"}
    held = {x["stimulus_id"] for x in first.lines if x["split"] == "eval"}
    assert len(held) == 10 and len(train) == 30 and not train & held


def test_weights_mix_the_targets_up_to_total_trajectories() -> None:
    cfg = config({"target": "a", "weight": 3}, {"target": "b", "weight": 1}, total_trajectories=40)
    chosen = select_trajectories(cfg, {"a": lines(50), "b": lines(50)})
    assert [d["used"] for d in chosen.datasets] == [30, 10]


def test_a_target_gives_at_most_what_it_has() -> None:
    cfg = config({"target": "a", "weight": 0.8}, {"target": "b", "weight": 0.2})
    chosen = select_trajectories(cfg, {"a": lines(10), "b": lines(10)})
    assert [d["used"] for d in chosen.datasets] == [20, 8]


def test_the_teacher_side_is_the_one_the_rollout_sent() -> None:
    line = rollout_line(0, 0)
    line["trajectory_override_stimulus"] = {"messages": [{"role": "user", "content": "override"}]}
    chosen = select_trajectories(config({"target": "a"}, data={"train_eval_split": [1, 0]}), {"a": [line]})
    assert chosen.lines[0]["teacher_messages"] == [{"role": "user", "content": "override"}]
    assert chosen.lines[0]["student_messages"] == [{"role": "user", "content": "Question 0?"}]
    assert chosen.lines[0]["response"] == "Réponse 0.0" and chosen.lines[0]["finish_reason"] == "stop"


# -- plan: what a run refuses -------------------------------------------------------------
def plan_problem(kind: BakeKind, source: JobSource) -> str:
    with pytest.raises(ConfigProblem) as caught:
        kind.plan(source)
    return str(caught.value)


def test_a_bake_needs_datasets(kind: BakeKind, paths: DataPaths) -> None:
    assert "names no datasets" in plan_problem(kind, bake_source(paths, config()))


def test_every_dataset_needs_a_complete_rollout(kind: BakeKind, paths: DataPaths, records: Records,
                                                tmp_path: Path) -> None:
    seed_rollout(records, tmp_path, "a", 4)
    assert "'zzz' does not exist" in plan_problem(kind, bake_source(paths, config({"target": "a"}, {"target": "zzz"})))
    import_jsonl(records, "alice", "r1", "stimonly", tmp_path / "a.jsonl")
    message = plan_problem(kind, bake_source(paths, config({"target": "stimonly"})))
    assert "'stimonly' has no rollout" in message and "POST /v1/repo/r1/targets/stimonly/rollout" in message
    job_dir = paths.job_dir("alice", "r1", "a", "rollout")
    write_json_atomic(job_dir / "job.json", {**jr.read_record(job_dir), "status": "running"})
    assert "has a rollout that is running" in plan_problem(kind, bake_source(paths, config({"target": "a"})))


def test_a_rollout_with_only_failed_trajectories_has_nothing_to_train_on(kind: BakeKind, paths: DataPaths,
                                                                         records: Records, tmp_path: Path) -> None:
    seed_rollout(records, tmp_path, "a", 2, failed={0, 1, 2, 3})
    assert "no usable trajectory" in plan_problem(kind, bake_source(paths, config({"target": "a"})))


def test_a_model_that_cannot_be_found_lists_where_it_looked(kind: BakeKind, paths: DataPaths, records: Records,
                                                           tmp_path: Path) -> None:
    seed_rollout(records, tmp_path, "a", 4)
    cfg = config({"target": "a"}, model={"parent_model_name": "org/absent"})
    message = plan_problem(kind, bake_source(paths, cfg))
    assert "'org/absent' was not found" in message and str(tmp_path / "models") in message


def test_the_repo_base_model_is_the_default(kind: BakeKind, paths: DataPaths, records: Records, tmp_path: Path) -> None:
    seed_rollout(records, tmp_path, "a", 4)
    write_json_atomic(paths.repo("alice", "r1") / "repo.json", {"repo_name": "r1", "base_model": "tiny"})
    plan = kind.plan(bake_source(paths, config({"target": "a"}, model={})))
    assert plan.spec["model"]["path"] == str(tmp_path / "models" / "tiny")


def test_options_this_server_cannot_honour_are_refused(kind: BakeKind, paths: DataPaths, records: Records,
                                                      tmp_path: Path) -> None:
    seed_rollout(records, tmp_path, "a", 4)
    message = plan_problem(kind, bake_source(paths, config({"target": "a"}, wandb={"enable": True})))
    assert "wandb.enable" in message


def test_a_missing_training_extra_is_a_clear_refusal(kind: BakeKind, paths: DataPaths, records: Records,
                                                    tmp_path: Path) -> None:
    seed_rollout(records, tmp_path, "a", 4)
    bare = executable(tmp_path / "bare-python", "#!/bin/sh\necho torch peft\n")
    assert "torch, peft not installed" in (trainer_problem(bare) or "")
    other = BakeKind(BakeSettings(models_dirs=kind.settings.models_dirs, python=bare))
    message = plan_problem(other, bake_source(paths, config({"target": "a"})))
    assert "pip install 'stimserver[train]'" in message


def test_a_parent_bake_checkpoint_is_a_base(kind: BakeKind, paths: DataPaths, records: Records, tmp_path: Path) -> None:
    seed_rollout(records, tmp_path, "a", 4)
    parent = kind.plan(bake_source(paths, config({"target": "a"}), bake="parent"))
    parent_dir = paths.job_dir("alice", "r1", "parent", "bake")
    parent_dir.mkdir(parents=True)
    jr.write_record(parent_dir, {"job_id": 1, "status": "complete", "spec": parent.spec, "config": parent.config})
    reference = "alice/r1/parent/3"
    cfg = config({"target": "a"}, model={"parent_model_name": reference})
    assert "has no checkpoint 3" in plan_problem(kind, bake_source(paths, cfg))
    model_dir(bakefiles.checkpoint_dir(parent_dir, 3))
    (bakefiles.checkpoint_dir(parent_dir, 3) / bakefiles.CHECKPOINT_INFO).write_text("{}")
    child = kind.plan(bake_source(paths, cfg))
    assert child.spec["model"] == parent.spec["model"]
    assert child.spec["parent"] == {"reference": reference,
                                    "adapter_dir": str(bakefiles.checkpoint_dir(parent_dir, 3))}
    cfg = config({"target": "a"}, model={"parent_model_name": "bob/r1/parent/3"})
    assert "not a bake of yours" in plan_problem(kind, bake_source(paths, cfg))


def test_prepare_freezes_the_selection(kind: BakeKind, paths: DataPaths, records: Records, tmp_path: Path) -> None:
    seed_rollout(records, tmp_path, "a", 8, failed={3})
    source = bake_source(paths, config({"target": "a"}))
    plan = kind.plan(source)
    into = tmp_path / "staging"
    into.mkdir()
    kind.prepare(plan, source, into)
    written = [orjson.loads(x) for x in (into / bakefiles.TRAIN_DATA).read_bytes().splitlines()]
    assert len(written) == 15 == plan.spec["datasets"][0]["used"]
    assert {x["split"] for x in written} == {"train", "eval"}
    seed_rollout(records, tmp_path, "a", 9)  # the rollout changed between plan and prepare
    with pytest.raises(ConfigProblem, match="changed"):
        kind.prepare(plan, source, into)


# -- the supervisor, with a fake trainer ---------------------------------------------------
FAKE_TRAINER = r'''#!{python}
"""Stands in for `python -m stimserver.train JOB_DIR`, following the script in JOB_DIR/fake.json."""
import json, os, signal, sys, time
job_dir = sys.argv[-1]
with open(os.path.join(job_dir, "fake.json")) as f:
    script = json.load(f)
runs = os.path.join(job_dir, "fake-runs")
n = len(os.listdir(runs)) if os.path.isdir(runs) else 0
os.makedirs(runs, exist_ok=True)
open(os.path.join(runs, str(n)), "w").close()
step = script[min(n, len(script) - 1)]
for ckpt in step.get("checkpoints", []):
    d = os.path.join(job_dir, "checkpoints", str(ckpt))
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "bake-checkpoint.json"), "w").write("{{}}")
if step.get("sleep"):
    time.sleep(step["sleep"])
if step.get("failure"):
    json.dump({{"error": step["failure"], "kind": step.get("kind", "error")}},
              open(os.path.join(job_dir, "failure.json"), "w"))
    sys.exit(1)
if step.get("die"):
    print("dying on purpose", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
json.dump({{"heldout": None}}, open(os.path.join(job_dir, "eval.json"), "w"))
'''


@pytest.fixture
def fake_trainer(tmp_path: Path) -> str:
    return executable(tmp_path / "fake-python", FAKE_TRAINER.format(python=sys.executable))


async def start_fake(make_runner, paths: DataPaths, records: Records, tmp_path: Path, fake_trainer: str,
                     script: list[dict[str, Any]]) -> tuple[Any, JobRef]:
    """Submit a bake whose trainer follows ``script`` (one entry per start); (its runner, its job)."""
    seed_rollout(records, tmp_path, "a", 4)
    model_dir(tmp_path / "models" / "tiny")
    kind = BakeKind(BakeSettings(models_dirs=(tmp_path / "models",), python=fake_trainer, trains_here=False))
    runner = await make_runner(kinds={"bake": kind})
    source = bake_source(paths, config({"target": "a"}))
    ref = JobRef("alice", "r1", "b1", "bake")
    await runner.submit(ref, source.target_record)
    (ref.job_dir(paths) / "fake.json").write_text(orjson.dumps(script).decode())
    runner.wake()
    return runner, ref


async def run_fake(make_runner, paths: DataPaths, records: Records, tmp_path: Path, fake_trainer: str,
                   script: list[dict[str, Any]]) -> dict[str, Any]:
    """``start_fake``, then wait for the bake's end."""
    _, ref = await start_fake(make_runner, paths, records, tmp_path, fake_trainer, script)
    return await wait_until(lambda: (r := record_of(paths, ref)) and r["status"] in ("complete", "failed") and r,
                            "the bake to end", timeout=60)


async def test_a_trainer_that_ends_well_completes_the_bake(make_runner, paths, records, tmp_path, fake_trainer) -> None:
    record = await run_fake(make_runner, paths, records, tmp_path, fake_trainer, [{"checkpoints": [2]}])
    assert record["status"] == "complete" and record["error"] is None


async def test_a_dead_trainer_is_restarted_while_it_publishes_checkpoints(make_runner, paths, records, tmp_path,
                                                                         fake_trainer) -> None:
    script = [{"checkpoints": [1], "die": True}, {"checkpoints": [2], "die": True}, {"checkpoints": [3]}]
    record = await run_fake(make_runner, paths, records, tmp_path, fake_trainer, script)
    assert record["status"] == "complete"
    assert len(os.listdir(paths.job_dir("alice", "r1", "b1", "bake") / "fake-runs")) == 3


async def test_a_trainer_that_keeps_dying_without_progress_fails_the_bake(make_runner, paths, records, tmp_path,
                                                                         fake_trainer) -> None:
    record = await run_fake(make_runner, paths, records, tmp_path, fake_trainer, [{"die": True}])
    assert record["status"] == "failed"
    assert "died 3 times in a row without publishing a checkpoint" in record["error"]
    assert "killed by SIGKILL" in record["error"] and "dying on purpose" in record["error"]


async def test_a_handled_failure_is_the_bake_error(make_runner, paths, records, tmp_path, fake_trainer) -> None:
    record = await run_fake(make_runner, paths, records, tmp_path, fake_trainer,
                            [{"failure": "data: no trajectory fits data.max_length 8", "kind": "data"}])
    assert record["status"] == "failed" and record["error"] == "data: no trajectory fits data.max_length 8"


async def test_a_full_disk_says_so_and_how_to_resume(make_runner, paths, records, tmp_path, fake_trainer) -> None:
    record = await run_fake(make_runner, paths, records, tmp_path, fake_trainer,
                            [{"failure": "the disk is full: checkpoint 4 could not be written", "kind": "disk"}])
    assert record["status"] == "failed"
    assert "the disk is full" in record["error"] and "earlier checkpoints are kept" in record["error"]
    assert "POST /v1/repo/r1/bakes/b1" in record["error"]


async def test_stopping_a_bake_stops_its_trainer(make_runner, paths, records, tmp_path, fake_trainer) -> None:
    runner, ref = await start_fake(make_runner, paths, records, tmp_path, fake_trainer, [{"sleep": 60}])
    await wait_until(lambda: (ref.job_dir(paths) / "fake-runs").is_dir(), "the trainer to start")
    started = asyncio.get_running_loop().time()
    assert await runner.stop_bake("alice", "r1", "b1")
    assert asyncio.get_running_loop().time() - started < 15
    record = record_of(paths, ref)
    assert record is not None and record["status"] == "failed" and record["error"].startswith("stopped")


def test_job_plans_are_frozen_as_json(kind: BakeKind, paths: DataPaths, records: Records, tmp_path: Path) -> None:
    seed_rollout(records, tmp_path, "a", 4)
    plan = kind.plan(bake_source(paths, config({"target": "a"})))
    assert isinstance(plan, JobPlan) and orjson.loads(orjson.dumps(plan.spec)) == plan.spec


def test_the_trainer_command_for_one_process_several_and_several_machines(tmp_path: Path) -> None:
    from stimserver.jobs.bake import trainer_command

    one = BakeSettings(python="/py")
    assert trainer_command(one, tmp_path) == ["/py", "-m", "stimserver.train", str(tmp_path)]
    two = BakeSettings(python="/py", processes=2)
    assert trainer_command(two, tmp_path) == ["/py", "-m", "torch.distributed.run", "--standalone",
                                              "--nproc_per_node=2", "-m", "stimserver.train", str(tmp_path)]
    nodes = BakeSettings(python="/py", processes=8, torchrun="--nnodes=2 --node-rank=0 --rdzv-endpoint=head:29500")
    assert trainer_command(nodes, tmp_path)[3:7] == ["--nnodes=2", "--node-rank=0", "--rdzv-endpoint=head:29500",
                                                     "--nproc_per_node=8"]
