"""A job's LLM answer logs and its usage file. Blocking.

Files of one job (beside ``job.json``)::

    answers-<name>.jsonl   one JSON object per answered request, appended and fsync'd
    usage.json             the job's running usage totals, replaced atomically
    duplicates.json        a rollout's stimuli whose trajectories repeat one another (``{"compared": n,
                           "stimuli": [...]}``), replaced like failed.json
    failed.json            a rollout's failed request numbers (``{"requests": [...]}``), replaced
                           atomically; derived from its answer log, so rebuilt when the job resumes

An answer log line is ``{"request": <n>, "answer": <JSON>}``: request ``n`` of the log's
plan (e.g. generator 2's chunk 7), and what the kind kept of its answer (for a stim
generator, the parsed questions), with its bill (``"billed"``: tokens and cost) when the
provider answered: the job's usage is rebuilt from the bills when it resumes
(``read_bills``), so a crash never loses or doubles the cost of a logged answer. A request
counts as done once its line is durable; lines may be in any order, and a request appears at
most once (a later line for the same ``n``, which a caller never writes, would be ignored). A
torn last line — the process died mid-write — is cut off when the log is opened, so only
requests that were in flight are asked again.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from .atomic import fsync_dir, read_replaced, write_json_atomic

__all__ = ["AnswerLog", "USAGE_FILE", "FAILED_FILE", "DUPLICATES_FILE", "answer_log_path", "read_usage", "write_usage",
           "write_failed", "write_duplicates", "read_bills"]

USAGE_FILE = "usage.json"
FAILED_FILE = "failed.json"
DUPLICATES_FILE = "duplicates.json"


def answer_log_path(job_dir: Path, name: str) -> Path:
    return job_dir / f"answers-{name}.jsonl"


class AnswerLog:
    """One append-only answer log, open for appending by the job's writer (who holds its lock)."""

    def __init__(self, path: Path, done: dict[int, Any], fd: int) -> None:
        self.path = path
        self.done = done        # request number -> its answer, as logged
        self._fd = fd

    @classmethod
    def open(cls, job_dir: Path, name: str) -> AnswerLog:
        """Read what is logged (cutting a torn tail) and open the log for appending."""
        path = answer_log_path(job_dir, name)
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            data = _read_all(fd)
            end = data.rfind(b"\n") + 1
            if end < len(data):  # a torn write: the request was in flight, so it is asked again
                os.ftruncate(fd, end)
                os.fsync(fd)
            done: dict[int, Any] = {}
            for raw in data[:end].splitlines():
                try:
                    entry = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # cannot happen short of a disk fault; the request is asked again
                if isinstance(entry, dict) and isinstance(entry.get("request"), int):
                    done.setdefault(entry["request"], entry.get("answer"))
            if created:
                fsync_dir(job_dir)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, done, fd)

    def append(self, request: int, answer: Any) -> None:
        """Log request ``request``'s answer durably (one write, then fsync) before anyone uses it."""
        line = orjson.dumps({"request": request, "answer": answer}) + b"\n"
        written = os.write(self._fd, line)
        if written != len(line):  # O_APPEND writes of a few KiB are whole unless the disk is full
            raise OSError(f"short write to {self.path.name}")
        os.fsync(self._fd)
        self.done[request] = answer

    def append_many(self, answers: list[tuple[int, Any]]) -> None:
        """Log several answers with one write and one fsync (a batch's results); a torn write keeps
        the whole lines before the tear, which ``open`` reads as usual."""
        if not answers:
            return
        data = b"".join(orjson.dumps({"request": n, "answer": a}) + b"\n" for n, a in answers)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            if written <= 0:
                raise OSError(f"short write to {self.path.name}")
            view = view[written:]
        os.fsync(self._fd)
        for n, a in answers:
            self.done.setdefault(n, a)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_bills(job_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """The bills logged beside a job's answers (``"billed"``: tokens and cost), each request's once,
    and how many answers were logged without one (by a version that logged none)."""
    bills: list[dict[str, Any]] = []
    unbilled = 0
    for path in sorted(job_dir.glob("answers-*.jsonl")):
        seen: set[int] = set()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        for raw in data.splitlines():
            try:
                entry = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # a torn last line: its request is asked again
            if not isinstance(entry, dict) or not isinstance(entry.get("request"), int) or entry["request"] in seen:
                continue
            seen.add(entry["request"])
            answer = entry.get("answer")
            if not isinstance(answer, dict):
                continue
            if isinstance(answer.get("billed"), dict):
                bills.append(answer["billed"])
            elif "response" in answer and answer["response"] is not None or "questions" in answer:
                unbilled += 1
    return bills, unbilled


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def write_usage(job_dir: Path, usage: dict[str, Any]) -> None:
    write_json_atomic(job_dir / USAGE_FILE, usage)


def write_failed(job_dir: Path, requests: list[int]) -> None:
    write_json_atomic(job_dir / FAILED_FILE, {"requests": sorted(requests)})


def write_duplicates(job_dir: Path, compared: int, stimuli: list[int]) -> None:
    """``compared`` stimuli had two or more answered trajectories; in ``stimuli`` some of them were identical."""
    write_json_atomic(job_dir / DUPLICATES_FILE, {"compared": compared, "stimuli": sorted(stimuli)})


def read_usage(job_dir: Path) -> dict[str, Any] | None:
    """The usage file's content, or None when the job has none (yet)."""
    try:
        raw = read_replaced(job_dir / USAGE_FILE)  # rewritten while the job runs, maybe on another host
    except FileNotFoundError:
        return None
    value = orjson.loads(raw)
    return value if isinstance(value, dict) else None
