"""Seeded samples of a job's committed lines, read through the index.

``n`` distinct line numbers are drawn uniformly without replacement with a generator
seeded by ``(seed, lines)`` — the same lines for the same seed while the line count is
the same, whatever process asks — and each line is read with two index entries and one
data read: O(n) work, whatever the output's size. Blocking: call it off the event loop.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from .snapshot import take

__all__ = ["Sample", "draw", "sample"]


@dataclass
class Sample:
    lines: int = 0  # committed lines the sample was drawn from
    rows: list[tuple[int, bytes]] = field(default_factory=list)  # (line number, stored line), by line number


def draw(seed: int, lines: int, n: int) -> list[int]:
    """``min(n, lines)`` distinct line numbers in ``[0, lines)``, sorted; a pure function of its arguments."""
    rng = random.Random(f"stimserver-sample:{seed}:{lines}")  # str seeds hash the same in every process
    return sorted(rng.sample(range(lines), min(n, lines)))  # sampling a range is O(n), not O(lines)


def sample(job_dir: Path, seed: int, n: int) -> Sample:
    snap = take(job_dir)
    if snap is None:
        return Sample()
    with snap:
        return Sample(snap.lines, [(i, snap.line(i)) for i in draw(seed, snap.lines, n)])
