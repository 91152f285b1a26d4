"""Bakes for the viewer's tests, written as files the way the trainer writes them
(``store.bakefiles``: ``bakes/<b>/bake.json``, ``bake/job.json``, ``trainer-plan.json``,
``metrics.jsonl``, ``checkpoints/<step>/``, ``eval-before.json``, ``eval.json``,
``failure.json``); the real app reads them through the bake API.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import orjson

from stimserver.store import bakefiles
from stimserver.store.paths import BAKE_KIND, DataPaths

USER, REPO = "alice", "r1"
BAKE_READS = ["/v1/repo/r1/bakes", "/v1/repo/r1/bakes/b1", "/v1/repo/r1/bakes/b1/metrics",
              "/v1/repo/r1/bakes/b1/evaluation", "/v1/repo/r1/bakes/b1/download",
              "/v1/repo/r1/recipe/b1/dependency-graph", "/v1/repo/r1/tree"]


# -- the files ------------------------------------------------------------------------------------
def bake_config(targets: list[str], parent: str | None = None, **extra: Any) -> dict[str, Any]:
    model: dict[str, Any] = {"type": "bake", "baked_adapter_config": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
                                                                      "bias": "none", "target_modules": "all-linear"}}
    if parent:
        model["parent_model_name"] = parent
    return {"type": "single_baker", "datasets": [{"target": t, "weight": 1.0} for t in targets],
            "epochs": 1, "micro_batch_size": 2, "gradient_accumulation_steps": 1, "seed": 42, "model": model,
            "data": {"beta": 0.0, "temperature": 1.0, "max_length": 512, "train_eval_split": [0.8, 0.2]},
            "optimizer": {"type": "adamw", "learning_rate": 2e-4}, "scheduler": {"type": "linear"},
            "checkpoint": [{"save_every_n_steps": 10, "save_end_of_training": True}],
            "train_log_iter_interval": 1, "eval_interval": 10, **extra}


def train_rows(start: int, end: int, total: int, *, epochs: int = 1) -> list[dict[str, Any]]:
    """Decreasing, slightly noisy loss; linear learning-rate decay."""
    rows = []
    for i in range(start, end + 1):
        loss = 0.9 * math.exp(-4 * i / total) + 0.04 + 0.03 * math.sin(i * 1.7) ** 2
        rows.append({"type": "train", "iter": i, "epoch": round(epochs * i / total, 4), "loss": round(loss, 6),
                     "lr": 2e-4 * (1 - (i - 1) / total), "step_time": 0.41, "iter_time": 0.41, "tokens": 180 + i % 7,
                     "seqlen": 64})
    return rows


def eval_row(i: int, total: int) -> dict[str, Any]:
    kl = 0.85 * math.exp(-3.5 * i / total) + 0.08
    return {"type": "eval", "iter": i, "epoch": round(i / total, 4), "eval_loss": round(kl * 1.05, 6),
            "heldout_kl": round(kl, 6)}


def rows_with_evals(end: int, total: int, every: int = 10) -> list[dict[str, Any]]:
    rows = [eval_row(0, total)]
    for i in range(1, end + 1):
        rows += train_rows(i, i, total)
        if i % every == 0 or i == total:
            rows.append(eval_row(i, total))
    return rows


SAMPLES = [
    ("Write a short sentence about rain.", "Il pleut doucement sur la ville.", "The rain falls softly.",
     "La pluie tombe doucement.", 0.92, 0.11),
    ("What do you eat for breakfast?", "Je mange du pain et du fromage.", "I usually eat toast.",
     "Je mange des croissants le matin.", 0.88, 0.09),
    ("Describe your favourite animal.", "Le chat est mon animal préféré.", "My favourite animal is the dog.",
     "My favourite animal is the cat.", 0.71, 0.35),
    ("<script>window.__xss=1</script> Name a colour.", "**Rouge**, bien sûr. <img src=x onerror=\"window.__xss=2\">",
     "Red.", "Le rouge.", 0.64, 0.12),
]


def eval_files(checkpoint: int) -> tuple[dict[str, Any], dict[str, Any]]:
    before: dict[str, Any] = {"heldout": {"examples": 24, "stimuli": 12, "kl": 0.81,
                          "per_stimulus": {str(10 + i): s[4] for i, s in enumerate(SAMPLES)}},
              "samples": [{"target": "french", "stimulus_id": 10 + i, "question": q,
                           "teacher": {"answer": t, "language": "fr"},
                           "base": {"answer": b, "language": "en"}} for i, (q, t, b, *_rest) in enumerate(SAMPLES)]}
    after = {"checkpoint": checkpoint,
             "heldout": {"examples": 24, "stimuli": 12, "kl_before": 0.81, "kl_after": 0.12, "kl_drop": 0.8519},
             "behaviour": {"check": "language", "teacher_language": "fr", "questions": 12,
                           "teacher_rate": 0.92, "base_rate": 0.0, "baked_rate": 0.75},
             "samples": [{**s, "baked": {"answer": SAMPLES[i][3], "language": "en" if i == 2 else "fr"},
                          "kl_before": SAMPLES[i][4], "kl_after": SAMPLES[i][5]}
                         for i, s in enumerate(before["samples"])]}
    return before, after


def write_bake(data_dir: Path, bake: str, *, status: str, config: dict[str, Any], rows: list[dict[str, Any]],
               total_steps: int | None, checkpoints: tuple[int, ...] = (), evaluate: str | None = None,
               error: str | None = None, job_id: int = 90) -> Path:
    """A bake's files; ``evaluate``: None, "before" or "both" (eval-before.json and eval.json)."""
    paths = DataPaths(data_dir)
    folder = paths.bake(USER, REPO, bake)
    job_dir = paths.job_dir(USER, REPO, bake, BAKE_KIND)
    job_dir.mkdir(parents=True, exist_ok=True)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (folder / "bake.json").write_bytes(orjson.dumps({"bake_name": bake, "template": "default",
                                                     "overrides": {"datasets": config["datasets"]}, "config": config,
                                                     "created_at": now}))
    datasets = [{"target": d["target"], "weight": d["weight"], "rollout_job_id": 2, "trajectories": 8,
                 "skipped_failed": 1, "used": 7} for d in config["datasets"]]
    (job_dir / "job.json").write_bytes(orjson.dumps({
        "job_id": job_id, "kind": "bake", "status": status, "config": config, "error": error, "attempt": 1,
        "interruptions": 0, "stalled_deaths": 0, "progress_line": 0, "created_at": now, "started_at": now,
        "finished_at": None if status in ("pending", "running") else now, "worker": None, "orphaned_at": None,
        "spec": {"user": USER, "repo": REPO, "bake": bake, "config": config,
                 "model": {"reference": "smollm2-135m-instruct", "path": "/nonexistent", "gguf_file": None,
                           "found_by": "test"}, "parent": None, "datasets": datasets,
                 "evaluation": {"samples": 16, "max_new_tokens": 48}, "processes": 1}}))
    if total_steps is not None:
        bakefiles.write_json(job_dir, bakefiles.PLAN, {"total_steps": total_steps, "steps_per_epoch": total_steps,
                                                       "train_examples": 7 * total_steps, "eval_examples": 24,
                                                       "skipped_too_long": 0, "truncated": 1, "world_size": 1})
    bakefiles.append_rows(job_dir, rows)
    for step in checkpoints:
        publish(job_dir, step, rows)
    if evaluate:
        before, after = eval_files(max(checkpoints, default=0))
        bakefiles.write_json(job_dir, bakefiles.EVAL_BEFORE, before)
        if evaluate == "both":
            bakefiles.write_json(job_dir, bakefiles.EVAL, after)
    if status == "failed":
        bakefiles.write_failure(job_dir, error or "failed", "error")
    return job_dir


def publish(job_dir: Path, step: int, rows: list[dict[str, Any]]) -> None:
    loss = next((r["loss"] for r in rows if r.get("type") == "train" and r["iter"] == step), None)
    work = job_dir / bakefiles.WORK / f"ckpt-{step}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "adapter_config.json").write_bytes(orjson.dumps({"r": 8}))
    (work / bakefiles.CHECKPOINT_INFO).write_bytes(orjson.dumps({"step": step, "epoch": 1.0, "loss": loss,
                                                                  "created_at": "2026-12-07T10:00:00Z"}))
    bakefiles.publish_checkpoint(job_dir, work, step)
