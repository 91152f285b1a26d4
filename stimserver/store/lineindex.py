"""The line-offset index: a dense sidecar that makes any page one seek away.

Format of ``output.idx`` (after Kafka's offset index, with line numbers as keys):
a flat array of 8-byte little-endian unsigned integers, one per line of
``output.jsonl``. Entry ``i`` is the byte offset just past line ``i``'s ``\\n``,
so line ``i`` spans ``[entry[i-1], entry[i])`` (``entry[-1]`` is 0) and the number
of indexed lines is ``size // 8``. Entries strictly increase and the last one never
exceeds the data's size, because a writer appends (and fsyncs) the data first and
the index entry second.

The data file is the truth; the index is disposable. ``recover`` checks the indexed
prefix cheaply (monotonic entries, a sample of them landing just after a newline),
keeps what checks out, and scans only the rest of the data: each complete line must
be a JSON object, and whatever follows the last good line — a torn write, garbage —
is cut off (and kept beside the data as ``*.corrupt-<time>`` when it is not empty).
"""
from __future__ import annotations

import operator
import os
import time
from array import array
from dataclasses import dataclass
from typing import Any

import orjson

from .atomic import write_all
from .changes import notice

__all__ = ["ENTRY_SIZE", "read_entry", "read_span", "count_entries", "append_entries", "recover",
           "RecoveryReport", "InvalidLine", "parse_line"]

ENTRY_SIZE = 8
_SCAN_CHUNK = 1 << 22
_SAMPLES = 64


class InvalidLine(ValueError):
    """A line that is not a single JSON object."""


def _entries(raw: bytes) -> array[int]:
    a = array("Q")
    a.frombytes(raw)
    if array("Q", [1]).tobytes()[0] != 1:  # big-endian host: the file is little-endian
        a.byteswap()
    return a


def _to_bytes(values: array[int]) -> bytes:
    if array("Q", [1]).tobytes()[0] != 1:
        values = array("Q", values)
        values.byteswap()
    return values.tobytes()


def count_entries(idx_fd: int) -> int:
    return os.fstat(idx_fd).st_size // ENTRY_SIZE


def read_entry(idx_fd: int, i: int) -> int:
    """End offset of line ``i``; -1 → 0 (the start of the file)."""
    if i < 0:
        return 0
    raw = os.pread(idx_fd, ENTRY_SIZE, i * ENTRY_SIZE)
    if len(raw) != ENTRY_SIZE:
        raise EOFError(f"index entry {i} is past the end of the index")
    return int.from_bytes(raw, "little")


def read_span(idx_fd: int, start: int, stop: int) -> tuple[int, int]:
    """Byte range ``[begin, end)`` of lines ``[start, stop)``: two 8-byte reads."""
    return read_entry(idx_fd, start - 1), read_entry(idx_fd, stop - 1)


def append_entries(idx_fd: int, ends: list[int]) -> None:
    write_all(idx_fd, _to_bytes(array("Q", ends)))


@dataclass
class RecoveryReport:
    lines: int            # lines indexed after recovery
    data_size: int        # bytes of data kept
    kept_entries: int     # index entries trusted as they were
    scanned_lines: int    # lines (re)indexed by scanning the data
    cut_bytes: int        # bytes cut from the end of the data
    saved_to: str | None  # where the cut bytes were kept, if any

    @property
    def repaired(self) -> bool:
        return self.scanned_lines > 0 or self.cut_bytes > 0 or self.kept_entries != self.lines


def _trusted_prefix(entries: array[int], data_fd: int, data_size: int) -> int:
    """How many leading entries can be trusted without rescanning their lines."""
    n = len(entries)
    if n == 0:
        return 0
    # Monotonic, positive, within the data: C-speed pairwise comparison in chunks.
    good = 0
    step = 1 << 16
    prev = 0
    while good < n:
        chunk = entries[good:good + step]
        if chunk[0] <= prev or not all(map(operator.lt, chunk, chunk[1:])):
            seq = [prev, *chunk]
            k = next(j for j in range(len(chunk)) if seq[j + 1] <= seq[j])
            good += k
            break
        prev = chunk[-1]
        good += len(chunk)
    while good and entries[good - 1] > data_size:
        good -= 1
    if good == 0:
        return 0
    # A sample of entries must land just past a newline; the last trusted one must too.
    picks = sorted({(good - 1) * s // _SAMPLES for s in range(_SAMPLES + 1)})
    last_ok = 0
    for i in picks:
        if os.pread(data_fd, 1, entries[i] - 1) != b"\n":
            return last_ok
        last_ok = i + 1
    return good


def parse_line(line: bytes, number: int) -> dict[str, Any]:
    """One output line as a JSON object; InvalidLine naming ``number`` otherwise."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise InvalidLine(f"line {number}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise InvalidLine(f"line {number}: not a JSON object")
    return value


def _save_cut(data_path: str, raw: bytes) -> str:
    """Keep cut bytes in a new ``<data>.corrupt-<time>-<pid>[-n]`` file; its name.

    Never overwrites an earlier one, and never leaves an empty or partial file: when the
    bytes cannot be saved (a full disk) the file goes and the error propagates, so the
    caller cuts nothing.
    """
    base = f"{data_path}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    for n in range(1000):
        name = base if n == 0 else f"{base}-{n}"
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            continue
        try:
            write_all(fd, raw)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(name)
            raise
        os.close(fd)
        return name
    raise FileExistsError(f"{base}: too many saved tails")


def recover(data_path: str | os.PathLike[str], idx_path: str | os.PathLike[str]) -> RecoveryReport:
    """Make ``output.idx`` agree with ``output.jsonl``; call only while no writer runs."""
    data_fd = os.open(data_path, os.O_RDWR | os.O_CREAT, 0o644)
    idx_fd = os.open(idx_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        data_size = os.fstat(data_fd).st_size
        idx_size = os.fstat(idx_fd).st_size
        entries = _entries(os.pread(idx_fd, idx_size - idx_size % ENTRY_SIZE, 0))
        kept = _trusted_prefix(entries, data_fd, data_size)
        if kept * ENTRY_SIZE != idx_size:
            os.ftruncate(idx_fd, kept * ENTRY_SIZE)
        pos = entries[kept - 1] if kept else 0
        del entries
        scanned = 0
        new_ends: list[int] = []
        tail = b""
        bad = False
        while not bad and pos + len(tail) < data_size:
            chunk = os.pread(data_fd, _SCAN_CHUNK, pos + len(tail))
            if not chunk:
                break
            buf = tail + chunk
            start = 0
            while (nl := buf.find(b"\n", start)) != -1:
                try:
                    parse_line(buf[start:nl], kept + scanned + 1)
                except InvalidLine:
                    bad = True  # everything from this line on is cut below
                    break
                scanned += 1
                new_ends.append(pos + nl + 1)
                start = nl + 1
            pos += start
            tail = buf[start:]
            if len(new_ends) >= 65536:
                append_entries(idx_fd, new_ends)
                new_ends.clear()
        append_entries(idx_fd, new_ends)
        cut = data_size - pos
        saved = None
        if cut > 0:
            saved = _save_cut(os.fspath(data_path), os.pread(data_fd, cut, pos))
            os.ftruncate(data_fd, pos)
        os.fsync(data_fd)
        os.fsync(idx_fd)
        if kept * ENTRY_SIZE != idx_size or cut > 0 or scanned:
            notice(os.fspath(data_path))  # cut or grown in place: cached open outputs look again
        lines = count_entries(idx_fd)
        return RecoveryReport(lines=lines, data_size=pos, kept_entries=kept, scanned_lines=scanned,
                              cut_bytes=cut, saved_to=saved)
    finally:
        os.close(data_fd)
        os.close(idx_fd)
