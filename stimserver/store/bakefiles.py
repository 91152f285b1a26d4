"""The files of a bake's job folder, shared by the trainer (which writes them) and the server (which reads them).

Blocking. One bake ``b`` of repo ``r``::

    bakes/<b>/bake.json                  the bake's record (name, template, overrides, merged config)
    bakes/<b>/bake/job.json              its job record (store.jobrecords), spec frozen at run
    bakes/<b>/bake/train.jsonl           the trajectories it trains on, frozen at run (TRAIN_DATA)
    bakes/<b>/bake/trainer-plan.json     what the trainer found in them: steps, examples, skips
    bakes/<b>/bake/metrics.jsonl         one row per logged step, appended and fsync'd (METRICS)
    bakes/<b>/bake/checkpoints/<step>/   published checkpoints: a folder appears whole, by rename
    bakes/<b>/bake/eval-before.json      held-out evaluation of the base model (once per job)
    bakes/<b>/bake/eval.json             held-out evaluation of the baked model, written at the end
    bakes/<b>/bake/failure.json          why the trainer gave up (a message for the user)
    bakes/<b>/bake/trainer.log           the trainer's own output
    bakes/<b>/bake/work/                 the trainer's scratch (unpublished checkpoints); never served

Rules that keep a crash harmless: a metrics row, once its line is complete, is never
rewritten (a resumed trainer logs a row only when its ``iter`` is above the last row of its
``type``, ``train`` or ``eval``); a
checkpoint is written in ``work/`` and published by one rename, so a listed checkpoint is
complete and never changes; every other file is replaced atomically.
"""
from __future__ import annotations

import copy
import math
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .atomic import fsync_dir, is_no_space, no_space, write_all, write_json_atomic

__all__ = ["TRAIN_DATA", "METRICS", "CHECKPOINTS", "WORK", "PLAN", "EVAL_BEFORE", "EVAL", "FAILURE", "LOG",
           "CHECKPOINT_INFO", "read_json", "write_json", "append_rows", "read_rows", "repair_rows", "last_iter",
           "RowSummary", "summarize_rows", "rows_json",
           "checkpoint_steps", "checkpoint_dir", "publish_checkpoint", "write_failure", "read_failure",
           "clear_attempt"]

TRAIN_DATA = "train.jsonl"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
WORK = "work"
PLAN = "trainer-plan.json"
EVAL_BEFORE = "eval-before.json"
EVAL = "eval.json"
FAILURE = "failure.json"
LOG = "trainer.log"
CHECKPOINT_INFO = "bake-checkpoint.json"  # inside a checkpoint: {step, epoch, loss, created_at}

_STEP = re.compile(r"[0-9]{1,12}")


def read_json(job_dir: Path, name: str) -> Any | None:
    """A JSON file of the job folder, or None when it is missing or unreadable."""
    try:
        return orjson.loads((job_dir / name).read_bytes())
    except (FileNotFoundError, NotADirectoryError, orjson.JSONDecodeError):
        return None


def write_json(job_dir: Path, name: str, value: Any) -> None:
    write_json_atomic(job_dir / name, value)


# -- metrics rows ------------------------------------------------------------------------
def append_rows(job_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to ``metrics.jsonl`` durably (one write, then fsync). Raises ``NoSpace`` on a full disk."""
    if not rows:
        return
    data = b"".join(orjson.dumps(row) + b"\n" for row in rows)
    path = job_dir / METRICS
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        if is_no_space(e):
            raise no_space("the bake's metrics") from e
        raise


def read_rows(job_dir: Path) -> list[dict[str, Any]]:
    """Every complete metrics row, in order; a torn last line (a crash mid-append) is left out."""
    try:
        data = (job_dir / METRICS).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return []
    return list(_complete_rows(data[:data.rfind(b"\n") + 1]))


def _complete_rows(data: bytes) -> Iterator[dict[str, Any]]:
    """The rows of whole lines ``data``; a line that is not a JSON object is skipped."""
    for line in data.splitlines():
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(row, dict):
            yield row


def repair_rows(job_dir: Path) -> None:
    """Cut a torn last line off ``metrics.jsonl`` (the writer's start after a crash)."""
    path = job_dir / METRICS
    try:
        size = path.stat().st_size
        with open(path, "rb+") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end != size:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
    except FileNotFoundError:
        return


@dataclass
class RowSummary:
    """What a status shows of the metrics rows: the train losses' latest, min and max, the last train step."""

    train_rows: int = 0
    latest_loss: float | None = None
    min_loss: float | None = None
    max_loss: float | None = None
    last_train_iter: int = -1

    def add(self, row: dict[str, Any]) -> None:
        if row.get("type", "train") != "train":
            return
        self.train_rows += 1
        step = row.get("iter")
        if isinstance(step, int) and not isinstance(step, bool):
            self.last_train_iter = max(self.last_train_iter, step)
        loss = row.get("loss")
        if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss):
            return
        loss = float(loss)
        self.latest_loss = loss
        self.min_loss = loss if self.min_loss is None else min(self.min_loss, loss)
        self.max_loss = loss if self.max_loss is None else max(self.max_loss, loss)


# path → (inode, bytes summarised, summary): the rows only grow, so a status read parses only new ones
_SUMMARIES: dict[Path, tuple[int, int, RowSummary]] = {}
_SUMMARIES_SIZE = 256


def summarize_rows(job_dir: Path) -> RowSummary:
    """``RowSummary`` of the complete metrics rows; each call reads only the bytes appended since the last."""
    path = job_dir / METRICS
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        _SUMMARIES.pop(path, None)
        return RowSummary()
    try:
        st = os.fstat(fd)
        ino, done, summary = _SUMMARIES.get(path, (st.st_ino, 0, RowSummary()))
        if ino != st.st_ino or st.st_size < done:  # replaced or cut (a reset job): start over
            done, summary = 0, RowSummary()
        if st.st_size > done:
            data = os.pread(fd, st.st_size - done, done)
            end = data.rfind(b"\n") + 1
            summary = copy.copy(summary)
            for row in _complete_rows(data[:end]):
                summary.add(row)
            done += end
    finally:
        os.close(fd)
    if len(_SUMMARIES) >= _SUMMARIES_SIZE and path not in _SUMMARIES:
        _SUMMARIES.clear()
    _SUMMARIES[path] = (st.st_ino, done, summary)
    return summary


def rows_json(job_dir: Path) -> bytes:
    """Every complete metrics row as one JSON array, spliced from the stored lines (each written by orjson)."""
    try:
        data = (job_dir / METRICS).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return b"[]"
    lines = data[:data.rfind(b"\n") + 1].splitlines()
    if all(line.startswith(b"{") and line.endswith(b"}") for line in lines):  # as append_rows writes them
        return b"[" + b",".join(lines) + b"]"
    return orjson.dumps(read_rows(job_dir))  # a line not of our making: only the rows that parse


def last_iter(rows: list[dict[str, Any]], row_type: str = "train") -> int:
    """The highest ``iter`` among the rows of ``row_type`` (-1 when none): a resumed trainer logs
    a row only when its ``iter`` is above the last one of its type."""
    return max((r["iter"] for r in rows if r.get("type") == row_type and isinstance(r.get("iter"), int)),
               default=-1)


# -- checkpoints ---------------------------------------------------------------------------
def checkpoint_steps(job_dir: Path) -> list[int]:
    """The published checkpoints' steps, ascending."""
    try:
        names = os.listdir(job_dir / CHECKPOINTS)
    except (FileNotFoundError, NotADirectoryError):
        return []
    folder = job_dir / CHECKPOINTS
    return sorted(int(n) for n in names if _STEP.fullmatch(n) and (folder / n / CHECKPOINT_INFO).is_file())


def checkpoint_dir(job_dir: Path, step: int) -> Path:
    return job_dir / CHECKPOINTS / str(int(step))


def publish_checkpoint(job_dir: Path, written: Path, step: int) -> Path:
    """Make the fully written folder ``written`` (same file system) the checkpoint ``step``.

    Every file is fsync'd, then the folder is renamed into ``checkpoints/`` and the parent
    fsync'd: readers see the whole checkpoint or none. A checkpoint already published
    for that step is kept (it may have been served) and ``written`` is removed.
    """
    target = checkpoint_dir(job_dir, step)
    try:
        for root, _dirs, files in os.walk(written):
            for name in files:
                fd = os.open(Path(root) / name, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            fsync_dir(Path(root))
        target.parent.mkdir(exist_ok=True)
        if (target / CHECKPOINT_INFO).is_file():
            shutil.rmtree(written, ignore_errors=True)
            return target
        if target.exists():  # a folder without its info file: not published, a leftover
            shutil.rmtree(target)
        os.rename(written, target)
        fsync_dir(target.parent)
    except OSError as e:
        if is_no_space(e):
            raise no_space(f"checkpoint {step} of the bake") from e
        raise
    return target


# -- the trainer's end ---------------------------------------------------------------------
def write_failure(job_dir: Path, message: str, kind: str = "error") -> None:
    """Record why the trainer stopped for good (``kind``: config, data, model, disk, error)."""
    write_json(job_dir, FAILURE, {"error": message, "kind": kind})


def read_failure(job_dir: Path) -> dict[str, Any] | None:
    value = read_json(job_dir, FAILURE)
    return value if isinstance(value, dict) and isinstance(value.get("error"), str) else None


def clear_attempt(job_dir: Path) -> None:
    """Forget the last attempt's failure and scratch (a resumed job keeps rows and checkpoints)."""
    (job_dir / FAILURE).unlink(missing_ok=True)
    shutil.rmtree(job_dir / WORK, ignore_errors=True)
