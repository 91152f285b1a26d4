"""The trainer process of a bake: ``python -m stimserver.train JOB_DIR``.

Started by the server's job runner (or by torchrun under it: ``python -m torch.distributed.run
--nproc_per_node N -m stimserver.train JOB_DIR``) and dies with it. It reads the job's spec,
trains from the newest published checkpoint (or from step 0), evaluates the held-out split before
(once per job) and after, and exits 0 once ``eval.json`` is written. A failure it understands is
written to ``failure.json`` with its kind (config, data, model, disk, error) and exits 1. A death
by signal leaves no failure, and neither does a process whose distributed peer died (exit 75,
``LOST_PEER_EXIT``; torchrun itself then exits 1): the runner resumes the job from its last
checkpoint. Only the main process (rank 0) writes to the job folder, but for a failure another
process met on its own (a full disk).
"""
from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ..store import bakefiles, jobrecords
from ..store.errors import NoSpace
from . import options

__all__ = ["main", "bake", "failure_kind", "die_with_parent", "LOST_PEER_EXIT"]

PR_SET_PDEATHSIG = 1
LOST_PEER_EXIT = 75  # another process of a distributed run died: no failure.json, the runner resumes


class BakeFailure(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent (the job runner, or torchrun's agent) dies."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call
        os._exit(1)


def _no_space(exc: BaseException) -> bool:
    """Whether a full disk is behind ``exc`` (torch reports a failed write without the errno)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, NoSpace):
            return True
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(seen) or "Disk quota exceeded" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def failure_kind(exc: BaseException, job_dir: Path | None = None) -> tuple[str, str]:
    """(kind, message for the user) of an exception that stopped the trainer."""
    from .data import DataError
    from .trainer import ConfigError, ModelError

    if isinstance(exc, BakeFailure):
        return exc.kind, str(exc)
    if _no_space(exc) or (job_dir is not None and "write" in str(exc).lower() and _disk_nearly_full(job_dir)):
        return "disk", ("the disk is full: the bake could not write its checkpoint or metrics; the checkpoints "
                        "already published are intact. Free some space in the server's data directory, then run "
                        "the bake again")
    if isinstance(exc, ConfigError):
        return "config", str(exc)
    if isinstance(exc, ModelError):
        return "model", str(exc)
    if isinstance(exc, DataError):
        return "data", str(exc)
    return "error", f"{type(exc).__name__}: {exc}"


def _disk_nearly_full(job_dir: Path) -> bool:
    try:
        return shutil.disk_usage(job_dir).free < 64 << 20
    except OSError:
        return False


def _lost_peer(exc: BaseException) -> bool:
    """Whether another process of a distributed run went away (the runner resumes; not the bake's fault)."""
    if "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistBackendError", ())):
        return True
    message = str(exc)
    return dist.is_initialized() and dist.get_world_size() > 1 and any(
        words in message for words in ("gloo/transport", "Connection reset by peer", "Connection closed by peer"))


def bake(job_dir: Path) -> int:
    """Run the bake of ``job_dir`` to its end; the process's exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    main_process = int(os.environ.get("RANK", "0")) == 0
    try:
        _run(job_dir)
        return 0
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        if _lost_peer(exc):
            return LOST_PEER_EXIT
        kind, message = failure_kind(exc, job_dir)
        if main_process or kind != "error":  # another process's own failure (a full disk) is the bake's too
            try:
                bakefiles.write_failure(job_dir, message, kind)
            except OSError:
                traceback.print_exc(file=sys.stderr)
        return 1


def _spec(job_dir: Path) -> dict[str, Any]:
    record = jobrecords.read_record(job_dir)
    spec = record.get("spec") if isinstance(record, dict) else None
    if not (isinstance(spec, dict) and isinstance(spec.get("config"), dict) and isinstance(spec.get("model"), dict)):
        raise BakeFailure("error", f"the job record in {job_dir.name} has no bake spec")
    return spec


def _run(job_dir: Path) -> None:
    import torch

    spec = _spec(job_dir)
    config = spec["config"]
    problems = options.refusals(config, cuda=torch.cuda.is_available())
    if problems:
        raise BakeFailure("config", "the bake config cannot be honoured here: " + "; ".join(problems))

    from transformers import TrainingArguments, set_seed
    from transformers.utils import logging as hf_logging

    from . import data as bake_data
    from .trainer import BakeCallback, BakeTrainer, barrier, is_main_process, load_model, load_tokenizer

    hf_logging.disable_progress_bar()  # trainer.log is a file: no progress bars in it
    settings = options.settings(config)
    tokenizer = load_tokenizer(spec)
    found = bake_data.load(job_dir, tokenizer, settings.max_length)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    per_epoch = options.steps_per_epoch(len(found.train), config, world_size)
    total = settings.epochs * per_epoch
    work = job_dir / bakefiles.WORK
    args = TrainingArguments(**options.training_arguments(config, output_dir=str(work), steps_per_epoch=per_epoch,
                                                          cuda=torch.cuda.is_available()))
    _ = args.device  # sets up the process group under torchrun
    if args.world_size != world_size:
        raise BakeFailure("error", f"WORLD_SIZE is {world_size} but the Trainer runs {args.world_size} processes")
    published = bakefiles.checkpoint_steps(job_dir)
    resume = published[-1] if published else None
    if is_main_process():
        bakefiles.repair_rows(job_dir)
        shutil.rmtree(work, ignore_errors=True)
        bakefiles.write_json(job_dir, bakefiles.PLAN, {
            "total_steps": total, "steps_per_epoch": per_epoch, **found.counts(), "world_size": world_size,
            "micro_batch_size": settings.micro_batch_size,
            "gradient_accumulation_steps": settings.gradient_accumulation_steps, "epochs": settings.epochs,
            "checkpoint_steps": options.checkpoint_steps(config, total, per_epoch),
            "eval_steps": options.eval_steps(config, total) if found.eval else [],
            "resumed_from": resume, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    barrier()
    rows = bakefiles.read_rows(job_dir)  # every process decides alike what it logs again

    set_seed(settings.seed)
    model = load_model(spec)
    before = _evaluation_before(job_dir, model, tokenizer, found.eval_records, spec)
    trainer = BakeTrainer(model=model, args=args, train_dataset=bake_data.ExampleDataset(found.train),
                          data_collator=bake_data.BakeCollator(bake_data.pad_id(tokenizer)),
                          processing_class=tokenizer, beta=settings.beta, temperature=settings.temperature)
    trainer.add_callback(BakeCallback(trainer, job_dir=job_dir, spec=spec, eval_examples=found.eval,
                                      total_steps=total, steps_per_epoch=per_epoch,
                                      last_train=bakefiles.last_iter(rows, "train"),
                                      last_eval=bakefiles.last_iter(rows, "eval")))
    trainer.train(resume_from_checkpoint=str(bakefiles.checkpoint_dir(job_dir, resume)) if resume else None)

    if is_main_process():
        from .evaluate import evaluate_after

        after = evaluate_after(trainer.model, tokenizer, found.eval_records, before, spec=spec, checkpoint=total)
        bakefiles.write_json(job_dir, bakefiles.EVAL, after)
    barrier()


def _evaluation_before(job_dir: Path, model: Any, tokenizer: Any, records: list[dict[str, Any]],
                       spec: dict[str, Any]) -> dict[str, Any]:
    """``eval-before.json``: computed once per job (by the main process), read back on every later start."""
    from .trainer import barrier, is_main_process

    before = bakefiles.read_json(job_dir, bakefiles.EVAL_BEFORE)
    if isinstance(before, dict):
        return before
    if is_main_process():
        from .evaluate import evaluate_before

        before = evaluate_before(model, tokenizer, records, spec=spec)
        bakefiles.write_json(job_dir, bakefiles.EVAL_BEFORE, before)
    barrier()
    before = bakefiles.read_json(job_dir, bakefiles.EVAL_BEFORE)
    return before if isinstance(before, dict) else {}


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m stimserver.train JOB_DIR", file=sys.stderr)
        return 2
    code = bake(Path(args[0]))
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - leaving anyway
        pass
    return code


if __name__ == "__main__":
    sys.exit(main())
