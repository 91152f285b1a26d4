#!/usr/bin/env python3
"""Direct pread on the event loop vs aiofiles (a thread hop), for page-sized reads.

    python scripts/bench/bench_pageread.py [--file PATH]

The page path reads one byte range per request. aiofiles runs each call in a worker
thread, which keeps the loop free during a long read but costs a hop (submit, wake,
callback) on every call. This prints the median cost per read for several sizes, from
a warm page cache (the steady state of a paging server), so the cut-over size in
store/output.py (INLINE_READ_BYTES) rests on a measurement.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

import aiofiles

SIZES = [4 << 10, 50 << 10, 500 << 10, 1 << 20, 4 << 20, 16 << 20]


async def direct(fd: int, size: int, offset: int) -> bytes:
    return os.pread(fd, size, offset)


async def via_aiofiles(f, size: int, offset: int) -> bytes:
    await f.seek(offset)
    return await f.read(size)


async def measure(path: str, reps: int) -> list[tuple[int, float, float]]:
    fd = os.open(path, os.O_RDONLY)
    file_size = os.fstat(fd).st_size
    rows = []
    async with aiofiles.open(path, "rb") as f:
        for size in SIZES:
            if size > file_size:
                break
            offsets = [(i * 7919 * 4096) % (file_size - size + 1) for i in range(reps)]
            t_direct, t_thread = [], []
            for off in offsets:
                t0 = time.perf_counter()
                await direct(fd, size, off)
                t_direct.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await via_aiofiles(f, size, off)
                t_thread.append(time.perf_counter() - t0)
            rows.append((size, statistics.median(t_direct) * 1e6, statistics.median(t_thread) * 1e6))
    os.close(fd)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", help="a large file to read (default: a 64 MiB temp file)")
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    tmp = None
    path = args.file
    if path is None:
        tmp = tempfile.NamedTemporaryFile(delete=False)
        tmp.write(os.urandom(1 << 20) * 64)
        tmp.close()
        path = tmp.name
    with open(path, "rb") as f:  # warm the page cache
        while f.read(1 << 24):
            pass
    try:
        rows = asyncio.run(measure(path, args.reps))
    finally:
        if tmp:
            os.unlink(tmp.name)
    print("| read size | direct pread µs (median) | aiofiles µs (median) | aiofiles/direct |")
    print("|---:|---:|---:|---:|")
    for size, d, t in rows:
        print(f"| {size >> 10:,} KiB | {d:,.1f} | {t:,.1f} | {t / d:.1f}x |")


if __name__ == "__main__":
    main()
