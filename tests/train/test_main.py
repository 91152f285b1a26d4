"""The trainer process end to end on a tiny model: a run, kill -9 and resume, two processes, failures."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stimserver.store import bakefiles
from stimserver.store.atomic import no_space
from stimserver.train import __main__ as trainer_main
from tests.train import tiny

# 16 train trajectories, 4 held out; 2 a batch: 8 steps an epoch, 24 in all; a checkpoint every 2 steps
CONFIG = tiny.config(epochs=3, checkpoint=[{"save_every_n_steps": 2, "save_end_of_training": True}],
                     eval_interval=4)
TOTAL = 24
CHECKPOINT_FILES = {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
                    "chat_template.jinja", "README.md", "bake-checkpoint.json", "optimizer.pt", "scheduler.pt",
                    "trainer_state.json"}


def run_trainer(job_dir: Path, processes: int = 1, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(tiny.trainer_command(job_dir, processes), env=tiny.trainer_env(), cwd=tiny.REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


def iters(rows: list[dict[str, Any]], kind: str) -> list[int]:
    return [r["iter"] for r in rows if r["type"] == kind]


def fingerprint(job_dir: Path) -> dict[str, str]:
    root = job_dir / bakefiles.CHECKPOINTS
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def adapter(checkpoint: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(checkpoint / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bake run once, uninterrupted, by ``python -m stimserver.train``."""
    job_dir = tiny.job(tmp_path_factory.mktemp("finished"), CONFIG)
    done = run_trainer(job_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    return job_dir


def test_a_run_writes_plan_rows_checkpoints_and_evaluations(finished: Path) -> None:
    plan = bakefiles.read_json(finished, bakefiles.PLAN)
    assert plan["total_steps"] == TOTAL and plan["steps_per_epoch"] == 8 and plan["world_size"] == 1
    assert (plan["train_examples"], plan["eval_examples"]) == (16, 4) and plan["resumed_from"] is None
    rows = bakefiles.read_rows(finished)
    assert iters(rows, "train") == list(range(1, TOTAL + 1))
    assert iters(rows, "eval") == [0, 4, 8, 12, 16, 20, 24]
    train = [r for r in rows if r["type"] == "train"]
    assert set(train[0]) == {"type", "iter", "epoch", "loss", "lr", "step_time", "iter_time", "tokens", "seqlen"}
    assert sum(r["tokens"] for r in train) == 3 * plan["train_tokens"]
    assert train[-1]["epoch"] == pytest.approx(3.0) and train[0]["lr"] > train[-1]["lr"] > 0
    evals = [r for r in rows if r["type"] == "eval"]
    assert evals[-1]["heldout_kl"] < evals[0]["heldout_kl"]  # the bake learned
    assert bakefiles.checkpoint_steps(finished) == list(range(2, TOTAL + 1, 2))
    last = bakefiles.checkpoint_dir(finished, TOTAL)
    assert CHECKPOINT_FILES <= {p.name for p in last.iterdir()} and not (last / "training_args.bin").exists()
    assert json.loads((last / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-llama"
    info = bakefiles.read_json(last, bakefiles.CHECKPOINT_INFO)
    assert info["step"] == TOTAL and info["epoch"] == pytest.approx(3.0) and info["loss"] == train[-1]["loss"]
    assert "# u/r/b/24" in (last / "README.md").read_text()
    before = bakefiles.read_json(finished, bakefiles.EVAL_BEFORE)
    after = bakefiles.read_json(finished, bakefiles.EVAL)
    assert after["checkpoint"] == TOTAL and after["heldout"]["kl_before"] == before["heldout"]["kl"]
    assert after["heldout"]["kl_after"] < after["heldout"]["kl_before"]
    assert evals[0]["heldout_kl"] == pytest.approx(before["heldout"]["kl"], rel=1e-4)
    assert not (finished / bakefiles.FAILURE).exists()


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_a_published_checkpoint_loads_with_peft_onto_the_base(finished: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny.model_dir())
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        baked = PeftModel.from_pretrained(base, bakefiles.checkpoint_dir(finished, TOTAL))(input_ids=ids).logits
    assert not torch.allclose(plain, baked)


def test_kill_9_then_rerun_resumes_exactly(finished: Path, tmp_path: Path) -> None:
    job_dir = tiny.job(tmp_path, CONFIG)
    with (tmp_path / "killed.log").open("w") as log:
        process = subprocess.Popen(tiny.trainer_command(job_dir), env=tiny.trainer_env(), cwd=tiny.REPO_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while 4 not in bakefiles.checkpoint_steps(job_dir):
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()
            time.sleep(0.005)
        process.kill()
        process.wait()
    assert not (job_dir / bakefiles.EVAL).exists(), "the run ended before it was killed"
    published = fingerprint(job_dir)
    killed_at = bakefiles.checkpoint_steps(job_dir)[-1]
    assert killed_at < TOTAL

    done = run_trainer(job_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert bakefiles.read_json(job_dir, bakefiles.PLAN)["resumed_from"] == killed_at
    rows = bakefiles.read_rows(job_dir)
    assert iters(rows, "train") == list(range(1, TOTAL + 1))  # none lost, none twice
    assert iters(rows, "eval") == [0, 4, 8, 12, 16, 20, 24]
    now = fingerprint(job_dir)
    assert {k: now[k] for k in published} == published  # listed checkpoints never change
    assert bakefiles.checkpoint_steps(job_dir) == list(range(2, TOTAL + 1, 2))
    reference = {(r["type"], r["iter"]): r for r in bakefiles.read_rows(finished)}
    for row in rows:  # the same numbers as the uninterrupted run: the resume is exact
        expected = reference[(row["type"], row["iter"])]
        for key in ("loss", "lr", "tokens", "eval_loss", "heldout_kl"):
            if key in row:
                assert row[key] == pytest.approx(expected[key], rel=1e-3, abs=1e-7), (row, expected)
    import torch

    resumed, uninterrupted = adapter(bakefiles.checkpoint_dir(job_dir, TOTAL)), adapter(
        bakefiles.checkpoint_dir(finished, TOTAL))
    for name, value in resumed.items():
        assert torch.allclose(value, uninterrupted[name], atol=1e-5), name
    assert bakefiles.read_json(job_dir, bakefiles.EVAL)["checkpoint"] == TOTAL


def test_a_rerun_after_the_last_checkpoint_only_evaluates(finished: Path, tmp_path: Path) -> None:
    job_dir = tmp_path / "job"
    shutil.copytree(finished, job_dir)
    (job_dir / bakefiles.EVAL).unlink()  # killed after the last checkpoint, before eval.json
    published = fingerprint(job_dir)
    rows = bakefiles.read_rows(job_dir)
    assert trainer_main.bake(job_dir) == 0
    assert bakefiles.read_rows(job_dir) == rows and fingerprint(job_dir) == published
    assert bakefiles.read_json(job_dir, bakefiles.EVAL)["heldout"] == bakefiles.read_json(finished,
                                                                                          bakefiles.EVAL)["heldout"]


def test_two_processes_make_one_set_of_checkpoints_and_one_row_a_step_and_survive_a_killed_worker(
        tmp_path: Path) -> None:
    config = tiny.config(epochs=4, checkpoint=[{"save_every_n_steps": 2}])
    job_dir = tiny.job(tmp_path, config, processes=2)
    with (tmp_path / "killed.log").open("w") as log:
        launcher = subprocess.Popen(tiny.trainer_command(job_dir, 2), env=tiny.trainer_env(), cwd=tiny.REPO_ROOT,
                                    stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while 4 not in bakefiles.checkpoint_steps(job_dir):
            assert launcher.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()
            time.sleep(0.005)
        workers = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
        os.kill(int(workers[-1]), 9)  # one worker dies; the other loses its peer
        assert launcher.wait(timeout=120) != 0
    assert not (job_dir / bakefiles.FAILURE).exists() and not (job_dir / bakefiles.EVAL).exists()
    published = fingerprint(job_dir)

    done = run_trainer(job_dir, processes=2)
    assert done.returncode == 0, done.stdout + done.stderr
    plan = bakefiles.read_json(job_dir, bakefiles.PLAN)
    assert plan["world_size"] == 2 and plan["total_steps"] == 16  # 16 trajectories, 2 a batch, 2 processes
    assert plan["resumed_from"] >= 4
    rows = bakefiles.read_rows(job_dir)
    assert iters(rows, "train") == list(range(1, 17)) and iters(rows, "eval") == [0, 16]
    assert sum(r["tokens"] for r in rows if r["type"] == "train") == 4 * plan["train_tokens"]  # both processes
    assert sorted(os.listdir(job_dir / bakefiles.CHECKPOINTS), key=int) == [str(s) for s in range(2, 17, 2)]
    now = fingerprint(job_dir)
    assert {k: now[k] for k in published} == published
    last = bakefiles.checkpoint_dir(job_dir, 16)
    assert {"rng_state_0.pth", "rng_state_1.pth", "adapter_model.safetensors"} <= set(os.listdir(last))
    assert bakefiles.read_json(job_dir, bakefiles.EVAL)["checkpoint"] == 16


def test_a_full_disk_fails_the_bake_with_a_disk_error_and_keeps_earlier_checkpoints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job_dir = tiny.job(tmp_path, tiny.config(checkpoint=[{"save_every_n_steps": 2}]))
    publish = bakefiles.publish_checkpoint

    def full_at_4(job: Path, written: Path, step: int) -> Path:
        if step >= 4:
            raise no_space(f"checkpoint {step} of the bake")
        return publish(job, written, step)

    monkeypatch.setattr(bakefiles, "publish_checkpoint", full_at_4)
    assert trainer_main.bake(job_dir) == 1
    failure = bakefiles.read_failure(job_dir)
    assert failure is not None and failure["kind"] == "disk" and "disk is full" in failure["error"]
    assert bakefiles.checkpoint_steps(job_dir) == [2]
    assert adapter(bakefiles.checkpoint_dir(job_dir, 2))
    assert not (job_dir / bakefiles.EVAL).exists()


def test_bf16_activation_checkpointing_accumulation_and_rows_of_several_steps(tmp_path: Path) -> None:
    config = tiny.config(model={"dtype": "bf16", "disable_activation_checkpoint": False},
                         gradient_accumulation_steps=2, train_log_iter_interval=3)
    job_dir = tiny.job(tmp_path, config)
    assert trainer_main.bake(job_dir) == 0
    plan = bakefiles.read_json(job_dir, bakefiles.PLAN)
    assert plan["total_steps"] == 4  # 8 batches of 2, 2 a step
    train = [r for r in bakefiles.read_rows(job_dir) if r["type"] == "train"]
    assert [r["iter"] for r in train] == [3, 4] and sum(r["tokens"] for r in train) == plan["train_tokens"]
    assert bakefiles.checkpoint_steps(job_dir) == [4]


@pytest.mark.parametrize(("change", "kind", "words"), [
    ("config", "config", "wandb.enable"),
    ("model", "model", "'gone-model'"),
    ("data", "data", "nothing to train on"),
])
def test_handled_failures_write_their_kind_and_nothing_half_written(tmp_path: Path, change: str, kind: str,
                                                                    words: str) -> None:
    config = tiny.config(wandb={"enable": True}) if change == "config" else None
    lines = tiny.records(0, 2) if change == "data" else None
    job_dir = tiny.job(tmp_path, config, lines, model_path=tmp_path / "gone" if change == "model" else None)
    if change == "model":
        record = json.loads((job_dir / "job.json").read_text())
        record["spec"]["model"]["reference"] = "gone-model"
        (job_dir / "job.json").write_text(json.dumps(record))
    assert trainer_main.bake(job_dir) == 1
    failure = bakefiles.read_failure(job_dir)
    assert failure is not None and failure["kind"] == kind and words in failure["error"]
    assert sorted(os.listdir(job_dir)) == ["failure.json", "job.json", "train.jsonl"]


def test_failure_kinds() -> None:
    assert trainer_main.failure_kind(no_space("x"))[0] == "disk"
    assert trainer_main.failure_kind(OSError(errno.ENOSPC, "No space left on device"))[0] == "disk"
    wrapped = RuntimeError("PytorchStreamWriter failed")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert trainer_main.failure_kind(wrapped)[0] == "disk"
    assert trainer_main.failure_kind(ValueError("bad")) == ("error", "ValueError: bad")


def test_the_trainer_dies_with_its_parent() -> None:
    child_code = ("from stimserver.train.__main__ import die_with_parent; die_with_parent(); "
                  "import time; print('ready', flush=True); time.sleep(60)")
    parent_code = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {child_code!r}], "
                   "stdout=subprocess.PIPE, text=True); p.stdout.readline(); print(p.pid, flush=True); "
                   "time.sleep(60)")
    with subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True,
                          cwd=tiny.REPO_ROOT) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.02)
    os.kill(child, 9)
    pytest.fail("the trainer outlived its parent")
