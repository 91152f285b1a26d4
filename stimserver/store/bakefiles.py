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
    bakes/<b>/bake/evals/<step>.json     the evaluation of one checkpoint, asked for by a user (as eval.json)
    bakes/<b>/bake/evals/<step>.request.json   that request, until it is done or has failed
    bakes/<b>/bake/evals/<step>.failed.json    why it failed (the end of the evaluator's log)
    bakes/<b>/bake/evals/<step>.log      the evaluator's output; <step>.lock: held while it runs

Rules that keep a crash harmless: a metrics row, once its line is complete, is never
rewritten (a resumed trainer logs a row only when its ``iter`` is above the last row of its
``type``, ``train`` or ``eval``); a
checkpoint is written in ``work/`` and published by one rename, so a listed checkpoint is
complete and never changes; every other file is replaced atomically.

A checkpoint's evaluation (``evals/``) is computed by ``python -m stimserver.train.evaluate_checkpoint``
when a user asks for it (the request file, which the job runner's scan finds), written once by an
exclusive create and never replaced. The final checkpoint's evaluation is ``eval.json`` itself.
"""
from __future__ import annotations

import copy
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .atomic import create_json_exclusive, fsync_dir, is_no_space, no_space, write_all, write_json_atomic
from .locks import is_locked

__all__ = ["TRAIN_DATA", "METRICS", "CHECKPOINTS", "WORK", "PLAN", "EVAL_BEFORE", "EVAL", "FAILURE", "LOG",
           "CHECKPOINT_INFO", "read_json", "write_json", "append_rows", "read_rows", "repair_rows", "last_iter",
           "RowSummary", "summarize_rows", "rows_json",
           "checkpoint_steps", "checkpoint_dir", "publish_checkpoint", "write_failure", "read_failure",
           "clear_attempt", "EVALS", "EvaluationState", "evaluation_file", "checkpoint_evaluation",
           "evaluation_state", "evaluation_statuses", "request_evaluation", "store_evaluation",
           "end_evaluation_request", "evaluation_requests"]

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


# -- a checkpoint's evaluation, on request ---------------------------------------------------------
EVALS = "evals"
_EVAL_FILE = re.compile(r"([0-9]{1,12})\.(json|request\.json|failed\.json)")


def evaluation_file(job_dir: Path, step: int, suffix: str = "json") -> Path:
    """``evals/<step>.<suffix>``: ``json`` (the result), ``request.json``, ``failed.json``, ``log``, ``lock``."""
    return job_dir / EVALS / f"{int(step)}.{suffix}"


def _read_object(path: Path) -> dict[str, Any] | None:
    try:
        value = orjson.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def checkpoint_evaluation(job_dir: Path, step: int) -> dict[str, Any] | None:
    """The stored evaluation of checkpoint ``step`` (the shape of ``eval.json``), or None.

    ``eval.json`` when the bake's own end-of-training evaluation is of that checkpoint, else
    ``evals/<step>.json``.
    """
    final = read_json(job_dir, EVAL)
    if isinstance(final, dict) and final.get("checkpoint") == step:
        return final
    found = _read_object(evaluation_file(job_dir, step))
    return found if found is not None and found.get("checkpoint") == step else None


@dataclass
class EvaluationState:
    """Where the evaluation of one checkpoint stands: ``not_started``, ``pending``, ``running``,
    ``complete`` (``evaluation`` holds it) or ``failed`` (``error`` says why)."""

    status: str
    evaluation: dict[str, Any] | None = None
    error: str | None = None
    requested_at: str | None = None
    finished_at: str | None = None


def evaluation_state(job_dir: Path, step: int) -> EvaluationState:
    """The state of checkpoint ``step``'s evaluation, from its files. Blocking."""
    found = checkpoint_evaluation(job_dir, step)
    if found is not None:
        return EvaluationState("complete", evaluation=found, requested_at=found.get("requested_at"),
                               finished_at=found.get("evaluated_at"))
    request = _read_object(evaluation_file(job_dir, step, "request.json"))
    if request is not None:
        running = is_locked(evaluation_file(job_dir, step, "lock"))
        return EvaluationState("running" if running else "pending", requested_at=request.get("requested_at"))
    failure = _read_object(evaluation_file(job_dir, step, "failed.json"))
    if failure is not None:
        error = failure.get("error")
        return EvaluationState("failed", error=error if isinstance(error, str) else "the evaluation failed",
                               requested_at=failure.get("requested_at"), finished_at=failure.get("failed_at"))
    return EvaluationState("not_started")


def evaluation_statuses(job_dir: Path) -> dict[int, str]:
    """``{step: status}`` of every checkpoint with an evaluation, asked for or done (``eval.json``'s too)."""
    out: dict[int, str] = {}
    final = read_json(job_dir, EVAL)
    if isinstance(final, dict) and isinstance(final.get("checkpoint"), int):
        out[final["checkpoint"]] = "complete"
    try:
        names = os.listdir(job_dir / EVALS)
    except (FileNotFoundError, NotADirectoryError):
        return out
    for step in sorted({int(m.group(1)) for n in names if (m := _EVAL_FILE.fullmatch(n))}):
        if step not in out:
            state = evaluation_state(job_dir, step).status
            if state != "not_started":
                out[step] = state
    return dict(sorted(out.items()))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def request_evaluation(job_dir: Path, step: int, job_id: Any = None) -> bool:
    """Ask for checkpoint ``step``'s evaluation; False when it is already asked for (nothing written).

    The request file is created exclusively, so of two racing requests one writes it. A previous
    failure is forgotten (asking again is the retry). Raises ``NoSpace`` on a full disk.
    """
    (job_dir / EVALS).mkdir(exist_ok=True)
    created = create_json_exclusive(evaluation_file(job_dir, step, "request.json"),
                                    {"checkpoint": int(step), "job_id": job_id, "requested_at": _now()})
    if created:
        evaluation_file(job_dir, step, "failed.json").unlink(missing_ok=True)
    return created


def store_evaluation(job_dir: Path, step: int, evaluation: dict[str, Any]) -> dict[str, Any]:
    """Write checkpoint ``step``'s evaluation once (durable, exclusive); what is stored after the call.

    An evaluation already stored is kept as it is (it may have been served) and returned.
    """
    (job_dir / EVALS).mkdir(exist_ok=True)
    request = _read_object(evaluation_file(job_dir, step, "request.json")) or {}
    value = {**evaluation, "checkpoint": int(step), "requested_at": request.get("requested_at"),
             "evaluated_at": _now()}
    path = evaluation_file(job_dir, step)
    if create_json_exclusive(path, value):
        return value
    return _read_object(path) or value


def end_evaluation_request(job_dir: Path, step: int, error: str | None = None) -> None:
    """Close checkpoint ``step``'s request: with ``error``, record the failure first. Blocking."""
    request_path = evaluation_file(job_dir, step, "request.json")
    if error is not None:
        request = _read_object(request_path) or {}
        write_json_atomic(evaluation_file(job_dir, step, "failed.json"),
                          {"checkpoint": int(step), "error": error, "requested_at": request.get("requested_at"),
                           "failed_at": _now()})
    request_path.unlink(missing_ok=True)
    fsync_dir(request_path.parent)


def evaluation_requests(users: Path) -> list[tuple[Path, int]]:
    """Every open evaluation request under ``users`` (the data directory's users folder), oldest first:
    (the bake's job folder, the checkpoint step). Bakes being deleted (hidden folders) are left out."""
    found: list[tuple[float, Path, int]] = []
    for path in users.glob(f"*/repos/*/bakes/*/bake/{EVALS}/*.request.json"):
        parts = path.relative_to(users).parts
        match = _EVAL_FILE.fullmatch(parts[-1])
        if match is None or any(part.startswith(".") for part in parts):
            continue
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            continue
        found.append((mtime, path.parent.parent, int(match.group(1))))
    found.sort(key=lambda item: item[0])
    return [(job_dir, step) for _, job_dir, step in found]
