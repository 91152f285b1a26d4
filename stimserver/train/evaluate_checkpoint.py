"""One published checkpoint's evaluation, on request: ``python -m stimserver.train.evaluate_checkpoint JOB_DIR STEP``.

A user asks for it over the API (``POST …/bakes/{bake}/checkpoints/{step}/evaluation``); the
request waits in the bake's folder (``evals/<step>.request.json``) until a job runner starts this
process, one at a time per runner, with the trainer's interpreter and environment, and the
request's lock (so it counts as running while this process lives). It computes what the bake's
own end computes (``evaluate.evaluate_after``: held-out KL and greedy answers of the baked model,
with its language) on the same held-out records (the ``split == "eval"`` lines of ``train.jsonl``),
for the checkpoint's adapter loaded onto the bake's base model; the teacher and base answers come
from ``eval-before.json``, computed first (and kept) when the bake has none. The result, the
shape of ``eval.json``, is written once to ``evals/<step>.json`` (durable, exclusive create) and
never computed again: a checkpoint already evaluated, or the bake's final one (``eval.json``),
exits 0 at once. A bake still training may be evaluated at any published checkpoint.

Exit 0 once the evaluation is stored; 1 on a failure, whose last line of output says why (the
runner records the end of the log as the request's error); 2 on bad arguments. The process
dies with its runner (``PR_SET_PDEATHSIG``), which then leaves the request pending for the next.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import orjson

from ..store import bakefiles, jobrecords
from ..store.atomic import create_json_exclusive

__all__ = ["main", "evaluate_checkpoint", "heldout_records", "EvaluationFailure"]


class EvaluationFailure(Exception):
    """A reason the evaluation cannot run, worded for the user."""


def _spec(job_dir: Path) -> dict[str, Any]:
    record = jobrecords.read_record(job_dir)
    spec = record.get("spec") if isinstance(record, dict) else None
    if not (isinstance(spec, dict) and isinstance(spec.get("config"), dict) and isinstance(spec.get("model"), dict)):
        raise EvaluationFailure(f"the bake's job record in {job_dir} has no bake spec (has the bake run?)")
    return spec


def heldout_records(job_dir: Path) -> list[dict[str, Any]]:
    """The held-out lines of the bake's frozen data (``train.jsonl``, ``split == "eval"``), in order."""
    try:
        data = (job_dir / bakefiles.TRAIN_DATA).read_bytes()
    except FileNotFoundError:
        raise EvaluationFailure(f"the bake has no frozen data ({bakefiles.TRAIN_DATA} is missing)") from None
    out = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise EvaluationFailure(f"{bakefiles.TRAIN_DATA} line {number} is not JSON: {e}") from None
        if isinstance(record, dict) and record.get("split") == "eval":
            out.append(record)
    return out


def _check(job_dir: Path, step: int) -> dict[str, Any] | None:
    """The stored evaluation if there is one; raises ``EvaluationFailure`` when ``step`` cannot be evaluated."""
    stored = bakefiles.checkpoint_evaluation(job_dir, step)
    if stored is not None:
        return stored
    if step not in bakefiles.checkpoint_steps(job_dir):
        published = bakefiles.checkpoint_steps(job_dir)
        raise EvaluationFailure(f"the bake has no published checkpoint {step} "
                                f"(its checkpoints: {', '.join(map(str, published)) or 'none'})")
    return None


def _before(job_dir: Path, model: Any, tokenizer: Any, records: list[dict[str, Any]],
            spec: dict[str, Any]) -> dict[str, Any]:
    """``eval-before.json``: the bake's own, else computed now (adapter off: the base model) and kept."""
    before = bakefiles.read_json(job_dir, bakefiles.EVAL_BEFORE)
    if isinstance(before, dict):
        return before
    from .evaluate import evaluate_before

    computed = evaluate_before(model, tokenizer, records, spec=spec)
    if not create_json_exclusive(job_dir / bakefiles.EVAL_BEFORE, computed):  # the trainer wrote it meanwhile
        before = bakefiles.read_json(job_dir, bakefiles.EVAL_BEFORE)
        return before if isinstance(before, dict) else computed
    return computed


def evaluate_checkpoint(job_dir: Path, step: int) -> dict[str, Any]:
    """Checkpoint ``step``'s evaluation: the stored one, else computed now and stored (once). Raises on failure."""
    stored = _check(job_dir, step)
    if stored is not None:
        return stored
    spec = _spec(job_dir)
    records = heldout_records(job_dir)

    import torch
    from transformers.utils import logging as hf_logging

    from .evaluate import evaluate_after
    from .trainer import load_checkpoint, load_tokenizer

    hf_logging.disable_progress_bar()  # the log is a file, its end the error a user reads: no progress bars
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    tokenizer = load_tokenizer(spec)
    model = load_checkpoint(spec, bakefiles.checkpoint_dir(job_dir, step))
    if torch.cuda.is_available():
        model = model.to("cuda")
    before = _before(job_dir, model, tokenizer, records, spec)
    after = evaluate_after(model, tokenizer, records, before, spec=spec, checkpoint=step)
    return bakefiles.store_evaluation(job_dir, step, after)


def _summary(result: dict[str, Any]) -> str:
    held = result.get("heldout") or {}
    if held.get("kl_after") is None:
        return result.get("reason") or "no held-out KL"
    return f"held-out KL {held.get('kl_before')} -> {held.get('kl_after')}"


def main(argv: list[str] | None = None) -> int:
    from .__main__ import die_with_parent, failure_kind

    die_with_parent()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or not args[1].isdigit():
        print("usage: python -m stimserver.train.evaluate_checkpoint JOB_DIR STEP", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    job_dir, step = Path(args[0]), int(args[1])
    started = time.monotonic()
    print(f"evaluating checkpoint {step} of {job_dir}", flush=True)
    try:
        result = evaluate_checkpoint(job_dir, step)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, as its last line
        if isinstance(exc, EvaluationFailure):
            message = str(exc)
        else:
            traceback.print_exc(file=sys.stderr)
            message = failure_kind(exc, job_dir)[1]
        sys.stderr.flush()
        print(f"evaluation failed: {message}", flush=True)
        return 1
    print(f"checkpoint {step} evaluated in {time.monotonic() - started:.1f} s: {_summary(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
