"""A frozen copy of another job's complete output: what a rollout reads its stimuli from. Blocking.

Files (in the reading job's folder)::

    stimuli.jsonl   the stim job's output.jsonl, as it was when the rollout was submitted
    stimuli.idx     its output.idx

Both are hard links to the stim job's files when the file system allows, else copies
(fsync'd). Links are safe because a complete output is never written in place again: a
re-run or ``DELETE …/stim/output`` unlinks the files (``jobrecords.reset_output``), an
import swaps in a new folder, and a crash repair only ever cuts bytes past the committed
lines, which a complete output has none of. So the stimuli a running or resumed rollout
reads stay the ones it was submitted with, whatever happens to the stim job later.
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from . import lineindex
from .atomic import fsync_dir, is_no_space, no_space
from .output import DATA_NAME, INDEX_NAME, open_pair

__all__ = ["FROZEN_DATA", "FROZEN_INDEX", "freeze", "FrozenLines"]

FROZEN_DATA = "stimuli.jsonl"
FROZEN_INDEX = "stimuli.idx"

_LINK_FAILURES = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP)


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
        return
    except OSError as e:
        if e.errno not in _LINK_FAILURES:
            raise
    try:
        with open(src, "rb") as fin, open(dest, "xb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
    except OSError as e:
        dest.unlink(missing_ok=True)
        if is_no_space(e):
            raise no_space("the rollout's copy of the stimuli") from e
        raise


def freeze(src_job_dir: Path, dest_dir: Path) -> int:
    """Link (or copy) ``src_job_dir``'s output into ``dest_dir``; the number of lines frozen.

    FileNotFoundError when the source has no output (it was removed meanwhile).
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    for name in (FROZEN_DATA, FROZEN_INDEX):
        (dest_dir / name).unlink(missing_ok=True)
    _link_or_copy(src_job_dir / INDEX_NAME, dest_dir / FROZEN_INDEX)
    _link_or_copy(src_job_dir / DATA_NAME, dest_dir / FROZEN_DATA)
    fsync_dir(dest_dir)
    return (dest_dir / FROZEN_INDEX).stat().st_size // lineindex.ENTRY_SIZE


class FrozenLines:
    """Reads line ``i`` of a frozen output: two index entries and one data read."""

    def __init__(self, job_dir: Path) -> None:
        pair = open_pair(job_dir, FROZEN_DATA, FROZEN_INDEX)
        if pair is None:
            raise FileNotFoundError(f"no frozen stimuli in {job_dir}")
        self._data_fd, self._idx_fd = pair
        self.lines = lineindex.count_entries(self._idx_fd)

    def line(self, i: int) -> dict[str, Any]:
        begin, end = lineindex.read_span(self._idx_fd, i, i + 1)
        raw = os.pread(self._data_fd, end - begin, begin)
        if len(raw) != end - begin:
            raise EOFError(f"the frozen stimuli end before line {i}")
        return lineindex.parse_line(raw, i)

    def close(self) -> None:
        for fd in (self._idx_fd, self._data_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._idx_fd = self._data_fd = -1

    def __enter__(self) -> FrozenLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
