"""Statistics of a job's committed output: one scan, cached beside the output, extended as it grows.

The cache is two files in the job folder. ``stats.json`` holds the counters and the
committed ``(lines, size)`` they cover, plus the job key (its id) they belong to;
``stats.qhash`` holds the 8-byte hash of every distinct question, in first-seen order,
``qhash_count`` of them valid. A call whose output has not grown reads ``stats.json``
only (O(1)); a grown output is scanned from the cached ``size`` on (the hashes are
loaded to tell new questions from old ones); anything that does not check out — another
job, fewer lines, an index entry that is not the cached size — is scanned from the start.

Entry ``i`` of ``stats.qhash`` is a function of the output alone, so a writer that appends
and a crash that leaves extra entries past ``qhash_count`` can never make it wrong; one
updater at a time holds ``stats.lock``; a caller that finds it held waits, then reads
what the updater saved. Blocking: call it off the event loop.
"""
from __future__ import annotations

import hashlib
import math
import os
from array import array
from pathlib import Path
from typing import Any

import orjson

from .atomic import read_replaced, write_json_atomic
from .locks import FileLock
from .snapshot import CHUNK, Snapshot, take

__all__ = ["STATS_NAME", "QHASH_NAME", "VERSION", "DuplicateCount", "empty", "stats", "summary", "trajectory_key"]

STATS_NAME = "stats.json"
QHASH_NAME = "stats.qhash"
LOCK_NAME = "stats.lock"
VERSION = 2  # 2: duplicate trajectories counted

State = dict[str, Any]


def empty(key: str) -> State:
    return {"version": VERSION, "key": key, "lines": 0, "size": 0, "qhash_count": 0, "question_lines": 0,
            "by_type": {}, "per_stimulus": {}, "trajectories": 0, "failed": 0, "tokens": {},
            "duplicates": DuplicateCount().state()}


def trajectory_key(row: dict[str, Any]) -> int | None:
    """A hash of a trajectory's answer (its text and tool calls); None for a failed one.

    Two trajectories of one stimulus with equal keys are the same answer: at a temperature
    above 0 that means the model server decoded greedily (or fixed a seed) and the second
    request was paid for nothing.
    """
    response = row.get("response")
    if not isinstance(response, dict) or row.get("error"):
        return None
    text = orjson.dumps([response.get("content"), response.get("tool_calls")], option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


class DuplicateCount:
    """Stimuli whose answered trajectories repeat one another, counted over lines in output order.

    A rollout writes a stimulus's trajectories one after another, so only the open stimulus's
    keys are kept: O(k) memory whatever the size. The job (``jobs.rollout``) and the stats scan
    both count with it; the job also keeps which stimuli repeated (``stimuli``, with ``ids``),
    the scan only how many.
    """

    def __init__(self, compared: int = 0, duplicated: int = 0, open_id: Any = None, keys: list[int] | None = None,
                 *, ids: bool = False) -> None:
        self.compared = compared           # stimuli with at least two answered trajectories
        self.duplicated = duplicated       # those of them with two identical answers
        self.stimuli: list[Any] | None = [] if ids else None  # their ids, when kept
        self.open_id, self.keys = open_id, keys or []

    def add(self, stimulus_id: Any, key: int | None) -> None:
        if stimulus_id != self.open_id:
            self.close()
            self.open_id, self.keys = stimulus_id, []
        if key is not None:
            self.keys.append(key)

    def close(self) -> None:
        """The open stimulus is whole: count it."""
        if len(self.keys) >= 2:
            self.compared += 1
            if len(set(self.keys)) < len(self.keys):
                self.duplicated += 1
                if self.stimuli is not None:
                    self.stimuli.append(self.open_id)
        self.open_id, self.keys = None, []

    def totals(self) -> tuple[int, int]:
        """(compared, duplicated) with the open stimulus counted as it stands."""
        closed = DuplicateCount(self.compared, self.duplicated, self.open_id, list(self.keys))
        closed.close()
        return closed.compared, closed.duplicated

    def state(self) -> dict[str, Any]:
        return {"compared": self.compared, "stimuli": self.duplicated, "open": self.open_id, "keys": self.keys}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> DuplicateCount:
        return cls(state["compared"], int(state["stimuli"]), state["open"], list(state["keys"]))


def _qhash(question: str) -> int:
    return int.from_bytes(hashlib.blake2b(question.encode(), digest_size=8).digest(), "little")


def _load(job_dir: Path, key: str) -> State | None:
    try:
        state = orjson.loads(read_replaced(job_dir / STATS_NAME))
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    if not isinstance(state, dict) or state.get("version") != VERSION or state.get("key") != key:
        return None
    return state


def _still_prefix(state: State, snap: Snapshot) -> bool:
    """The cached lines are still the first lines of this output (same count, same end)."""
    lines = state["lines"]
    if not isinstance(lines, int) or lines > snap.lines:
        return False
    return lines == 0 or snap.span(lines - 1, lines)[1] == state["size"]


def _hashes(job_dir: Path, count: int) -> set[int]:
    a: array[int] = array("Q")
    with open(job_dir / QHASH_NAME, "rb") as f:
        a.frombytes(f.read(count * 8))
    if len(a) != count:
        raise ValueError("stats.qhash is shorter than stats.json says")
    return set(a)


def _scan(state: State, snap: Snapshot, seen: set[int], new_hashes: list[int]) -> None:
    """Add lines ``[state.lines, snap.lines)`` to ``state``."""
    by_type: dict[str, int] = state["by_type"]
    per_stimulus: dict[str, int] = state["per_stimulus"]
    tokens: dict[str, int] = state["tokens"]
    duplicates = DuplicateCount.from_state(state["duplicates"])
    tail = b""
    for chunk in snap.chunks(state["size"], snap.size, CHUNK):
        buf = tail + chunk
        cut = buf.rfind(b"\n") + 1
        tail = buf[cut:]
        for raw in buf[:cut].splitlines():
            row = orjson.loads(raw)
            question = row.get("question")
            if isinstance(question, str):
                state["question_lines"] += 1
                h = _qhash(question)
                if h not in seen:
                    seen.add(h)
                    new_hashes.append(h)
            kind = row.get("type")
            if isinstance(kind, str):
                by_type[kind] = by_type.get(kind, 0) + 1
            if "trajectory_id" in row:  # a rollout trajectory
                state["trajectories"] += 1
                sid = str(row.get("stimulus_id"))
                per_stimulus[sid] = per_stimulus.get(sid, 0) + 1
                if row.get("error") or row.get("response") is None:
                    state["failed"] += 1
                duplicates.add(row.get("stimulus_id"), trajectory_key(row))
            n = row.get("tokens")
            if isinstance(n, int) and not isinstance(n, bool):
                tokens[str(n)] = tokens.get(str(n), 0) + 1
    state["lines"], state["size"] = snap.lines, snap.size
    state["duplicates"] = duplicates.state()
    state["qhash_count"] += len(new_hashes)


def _percentile(values: list[tuple[int, int]], total: int, q: float) -> int:
    """Nearest-rank percentile of a sorted (value, count) histogram."""
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value, count in values:
        seen += count
        if seen >= rank:
            return value
    return values[-1][0]


HISTOGRAM_BINS = 20


def histogram(hist: list[tuple[int, int]], bins: int = HISTOGRAM_BINS) -> list[dict[str, int]]:
    """``(value, count)`` pairs (sorted) in at most ``bins`` equal-width bins ``[low, high]`` of whole numbers."""
    low, high = hist[0][0], hist[-1][0]
    width = max(1, math.ceil((high - low + 1) / bins))
    out = [{"low": low + i * width, "high": low + (i + 1) * width - 1, "count": 0}
           for i in range((high - low) // width + 1)]
    for value, count in hist:
        out[(value - low) // width]["count"] += count
    return out


def summary(state: State) -> dict[str, Any]:
    """The answer: counters, distinct questions, trajectories per stimulus, token distribution."""
    hist = sorted((int(v), c) for v, c in state["tokens"].items())
    total = sum(c for _, c in hist)
    tokens: dict[str, Any] | None = None
    if total:
        s = sum(v * c for v, c in hist)
        tokens = {"count": total, "sum": s, "mean": round(s / total, 3), "p50": _percentile(hist, total, 0.5),
                  "p90": _percentile(hist, total, 0.9), "max": hist[-1][0], "histogram": histogram(hist)}
    per = list(state["per_stimulus"].values())
    rollout: dict[str, Any] | None = None
    if state["trajectories"]:
        compared, duplicated = DuplicateCount.from_state(state["duplicates"]).totals()
        rollout = {"trajectories": state["trajectories"], "stimuli": len(per),
                   "failed_trajectories": state["failed"], "compared_stimuli": compared,
                   "duplicate_stimuli": duplicated,
                   "trajectories_per_stimulus": {"min": min(per), "max": max(per),
                                                 "mean": round(state["trajectories"] / len(per), 3)}}
    return {"lines": state["lines"], "bytes": state["size"], "question_lines": state["question_lines"],
            "distinct_questions": state["qhash_count"],
            "repeated_question_lines": state["question_lines"] - state["qhash_count"],
            "by_type": dict(sorted(state["by_type"].items())), "rollout": rollout, "tokens": tokens}


def _save(job_dir: Path, state: State, start: int, new_hashes: list[int]) -> None:
    fd = os.open(job_dir / QHASH_NAME, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if new_hashes:
            os.pwrite(fd, array("Q", new_hashes).tobytes(), start * 8)
        os.fsync(fd)
    finally:
        os.close(fd)
    write_json_atomic(job_dir / STATS_NAME, state)  # after the hashes it counts are durable


def stats(job_dir: Path, key: str) -> dict[str, Any]:
    """The statistics of the committed output of ``job_dir``; ``key`` names the job (its id)."""
    snap = take(job_dir)
    if snap is None:
        return summary(empty(key))
    with snap:
        state = _load(job_dir, key)
        if state is not None and _still_prefix(state, snap) and state["lines"] == snap.lines:
            return summary(state)  # the O(1) path: nothing new
        # One updater at a time; the others wait and then find its work in the cache.
        try:
            lock = FileLock.acquire(job_dir / LOCK_NAME, blocking=True)
        except FileNotFoundError:
            lock = None  # the job folder went away meanwhile (target deleted): answer, cache nothing
        try:
            state = _load(job_dir, key)
            seen: set[int] = set()
            if state is not None and _still_prefix(state, snap):
                if state["lines"] == snap.lines:
                    return summary(state)  # another caller has just done it
                try:
                    seen = _hashes(job_dir, state["qhash_count"])
                except (OSError, ValueError):
                    state = None
            else:
                state = None
            if state is None:
                state, seen = empty(key), set()
            start = state["qhash_count"]
            new_hashes: list[int] = []
            _scan(state, snap, seen, new_hashes)
            if lock is not None:
                try:
                    _save(job_dir, state, start, new_hashes)
                except FileNotFoundError:
                    pass  # deleted while it was counted: nothing to cache
            return summary(state)
        finally:
            if lock is not None:
                lock.release()
