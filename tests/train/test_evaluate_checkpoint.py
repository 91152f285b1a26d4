"""A published checkpoint evaluated on request (train/evaluate_checkpoint.py), on a tiny random Llama.

The checkpoint is an adapter with random weights saved as the trainer publishes one (no training
run); the evaluation must be what the bake's own end computes for that model (evaluate.evaluate_after
on the same held-out records, teacher and base answers from eval-before.json), stored once in
``evals/<step>.json`` and never computed again.
"""
from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import orjson
import pytest

from stimserver.store import bakefiles
from stimserver.train import evaluate
from stimserver.train.evaluate_checkpoint import evaluate_checkpoint, heldout_records
from tests.train import tiny

STEP = 3


def publish_random_adapter(job_dir: Path, step: int) -> Any:
    """A LoRA adapter with random weights (it changes the answers), published as checkpoint ``step``; the model."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    tiny.single_thread()
    with torch.random.fork_rng():
        torch.manual_seed(step)
        base = AutoModelForCausalLM.from_pretrained(tiny.model_dir(), dtype=torch.float32)
        with warnings.catch_warnings():  # peft 0.21 reads an attribute transformers 5 deprecates
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                    init_lora_weights=False))
    work = job_dir / bakefiles.WORK / f"checkpoint-{step}"
    model.save_pretrained(work)
    (work / bakefiles.CHECKPOINT_INFO).write_bytes(orjson.dumps({"step": step, "epoch": 1.0, "loss": 0.1}))
    bakefiles.publish_checkpoint(job_dir, work, step)
    model.eval()
    return model


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A bake's job folder with checkpoint 3 published and no evaluation yet; and that checkpoint's model."""
    job_dir = tiny.job(tmp_path_factory.mktemp("published"))
    return job_dir, publish_random_adapter(job_dir, STEP)


def copy_job(job_dir: Path, into: Path) -> Path:
    target = into / "bake"
    shutil.copytree(job_dir, target)
    return target


def spec(job_dir: Path) -> dict[str, Any]:
    return orjson.loads((job_dir / "job.json").read_bytes())["spec"]


def test_a_checkpoint_is_evaluated_as_the_end_of_the_bake_evaluates(published, tmp_path: Path) -> None:
    job_dir = copy_job(published[0], tmp_path)
    model, tok = published[1], tiny.tokenizer()
    records = heldout_records(job_dir)
    assert len(records) == 4 and {r["split"] for r in records} == {"eval"}
    before = evaluate.evaluate_before(model, tok, records, spec=spec(job_dir))
    bakefiles.write_json(job_dir, bakefiles.EVAL_BEFORE, before)

    result = evaluate_checkpoint(job_dir, STEP)
    expected = evaluate.evaluate_after(model, tok, records, before, spec=spec(job_dir), checkpoint=STEP)
    assert result["checkpoint"] == STEP and set(expected) <= set(result)
    assert result["heldout"]["kl_before"] == before["heldout"]["kl"]
    assert result["heldout"]["kl_after"] == pytest.approx(expected["heldout"]["kl_after"], rel=1e-4)
    assert result["heldout"]["kl_after"] != pytest.approx(result["heldout"]["kl_before"], rel=1e-3)  # the adapter acts
    assert [s["baked"] for s in result["samples"]] == [s["baked"] for s in expected["samples"]]
    assert [s["teacher"] for s in result["samples"]] == [s["teacher"] for s in before["samples"]]
    assert result["behaviour"] == expected["behaviour"]
    # stored once, in the shape of eval.json, and the state says so
    assert bakefiles.read_json(job_dir / bakefiles.EVALS, f"{STEP}.json") == result
    state = bakefiles.evaluation_state(job_dir, STEP)
    assert state.status == "complete" and state.evaluation == result
    assert not (job_dir / bakefiles.EVAL).exists()  # the bake's own end result is not touched


def test_eval_before_is_computed_when_the_bake_has_none(published, tmp_path: Path) -> None:
    job_dir = copy_job(published[0], tmp_path)
    result = evaluate_checkpoint(job_dir, STEP)
    before = bakefiles.read_json(job_dir, bakefiles.EVAL_BEFORE)
    assert before is not None and before["heldout"]["kl"] == result["heldout"]["kl_before"]
    assert [s["base"] for s in result["samples"]] == [s["base"] for s in before["samples"]]


def test_teacher_and_base_answers_are_those_of_eval_before(published, tmp_path: Path) -> None:
    job_dir = copy_job(published[0], tmp_path)
    before = evaluate.evaluate_before(published[1], tiny.tokenizer(), heldout_records(job_dir), spec=spec(job_dir))
    for i, s in enumerate(before["samples"]):
        s["teacher"] = {"answer": f"Réponse du professeur {i}.", "language": "fr"}
    bakefiles.write_json(job_dir, bakefiles.EVAL_BEFORE, before)
    result = evaluate_checkpoint(job_dir, STEP)
    assert [s["teacher"]["answer"] for s in result["samples"]] == [f"Réponse du professeur {i}."
                                                                   for i in range(len(before["samples"]))]


def test_a_stored_evaluation_is_never_computed_again(published, tmp_path: Path) -> None:
    job_dir = copy_job(published[0], tmp_path)
    first = evaluate_checkpoint(job_dir, STEP)
    stored = bakefiles.evaluation_file(job_dir, STEP).read_bytes()
    # the model is gone: answering again must not load it
    record = orjson.loads((job_dir / "job.json").read_bytes())
    record["spec"]["model"]["path"] = str(tmp_path / "gone")
    (job_dir / "job.json").write_bytes(orjson.dumps(record))
    assert evaluate_checkpoint(job_dir, STEP) == first
    assert bakefiles.evaluation_file(job_dir, STEP).read_bytes() == stored
    # the final checkpoint: the bake's own eval.json is its evaluation
    final = {"checkpoint": 8, "heldout": {"kl_before": 0.5, "kl_after": 0.1}, "behaviour": None, "samples": []}
    bakefiles.write_json(job_dir, bakefiles.EVAL, final)
    assert evaluate_checkpoint(job_dir, 8) == final
    assert not bakefiles.evaluation_file(job_dir, 8).exists()


def test_the_command_line_evaluates_and_reports(published, tmp_path: Path) -> None:
    """``python -m stimserver.train.evaluate_checkpoint JOB_DIR STEP``, as the job runner starts it."""
    job_dir = copy_job(published[0], tmp_path)
    command = [*tiny.trainer_command(job_dir)[:2], "stimserver.train.evaluate_checkpoint", str(job_dir)]
    missing = subprocess.run([*command, "9"], env=tiny.trainer_env(), cwd=tiny.REPO_ROOT, capture_output=True,
                             text=True, timeout=120)
    assert missing.returncode == 1
    assert missing.stdout.strip().splitlines()[-1] == (
        f"evaluation failed: the bake has no published checkpoint 9 (its checkpoints: {STEP})")
    done = subprocess.run([*command, str(STEP)], env=tiny.trainer_env(), cwd=tiny.REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith(f"checkpoint {STEP} evaluated in ")
    result = bakefiles.checkpoint_evaluation(job_dir, STEP)
    assert result is not None and len(result["samples"]) == 2 and all(s["baked"] for s in result["samples"])
    usage = subprocess.run([*command], env=tiny.trainer_env(), cwd=tiny.REPO_ROOT, capture_output=True, text=True,
                           timeout=120)
    assert usage.returncode == 2 and "usage" in usage.stderr
