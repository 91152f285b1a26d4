#!/usr/bin/env python3
"""Benchmark export, search, samples and stats against the shell's tools, in the same run.

    python scripts/bench/bench_export.py                   # 2,000,000 lines (~1.45 GB), the full run
    python scripts/bench/bench_export.py --lines 100000    # a quick look

It builds the same synthetic stim output as scripts/bench/bench_output.py (with ``stimserver
import``) in its own work folder, starts ``stimserver serve`` (auth and access log on,
as deployed) and prints one Markdown table:

1. export: GET …/stim/export read to the end (by http.client, and by curl when it is
   installed), in MB/s, against ``cat FILE > /dev/null`` of the same file (page cache warm);
2. search: a case-insensitive substring over the whole output, following ``next_offset``
   to the end, in MB/s, against ``grep -c -i`` of the same text;
3. sample: latency of GET …/output/sample?n=1000 (median of 20, new seed each time);
4. stats: the first call (one scan, cache written) and the second (the cache alone).

Machines here are shared and noisy: compare only numbers of the same run.
"""
from __future__ import annotations

import argparse
import http.client
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_output import free_port, prepare, start, stop  # noqa: E402  (the sibling script's helpers)

BASE = "/v1/repo/benchrepo/targets/benchtarget/stim"
NEEDLE = "Plateau Harbour Desert"  # rare: a full scan, few matches


def fetch(port: int, token: str, path: str, sink: bool = False) -> tuple[int, bytes, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"})
    r = conn.getresponse()
    size, body = 0, b""
    if sink:
        while chunk := r.read(1 << 20):
            size += len(chunk)
    else:
        body = r.read()
        size = len(body)
    conn.close()
    return r.status, body, size


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "stimserver-bench-export")
    args = ap.parse_args()
    out_file, token = prepare(args.work, args.lines)
    size = out_file.stat().st_size
    mb = size / 1e6
    port = free_port()
    data = out_file.parents[7]
    proc = start([sys.executable, "-m", "stimserver", "serve", "--port", str(port), "--data", str(data)],
                 port, token, args.work / "serve.log")
    rows: list[tuple[str, str, str, str]] = []
    try:
        subprocess.run(["cat", str(out_file)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
        t_cat, _ = timed(lambda: subprocess.run(f"cat '{out_file}' > /dev/null", shell=True, check=True))
        t_exp, (status, _, got) = timed(lambda: fetch(port, token, BASE + "/export", sink=True))
        assert status == 200 and got == size, (status, got, size)
        rows.append(("export, read by Python's http.client (MB/s)", f"{mb / t_exp:,.0f}", f"cat: {mb / t_cat:,.0f}",
                     f"{t_cat / t_exp:.2f}"))
        if shutil.which("curl"):  # a client that is not itself the bottleneck
            t_curl, _ = timed(lambda: subprocess.run(
                ["curl", "-sS", "-o", "/dev/null", "-H", f"Authorization: Bearer {token}",
                 f"http://127.0.0.1:{port}{BASE}/export"], check=True))
            rows.append(("export, read by curl (MB/s)", f"{mb / t_curl:,.0f}", f"cat: {mb / t_cat:,.0f}",
                         f"{t_cat / t_curl:.2f}"))

        t_grep, grep = timed(lambda: subprocess.run(["grep", "-c", "-i", "-F", NEEDLE, str(out_file)],
                                                    capture_output=True, text=True))

        def search_all() -> int:
            offset, found = 0, 0
            while offset is not None:
                q = NEEDLE.replace(" ", "%20")
                status, body, _ = fetch(port, token, f"{BASE}/output/search?q={q}&limit=1000&offset={offset}")
                assert status == 200, body[:200]
                answer = orjson.loads(body)
                found += len(answer["matches"])
                offset = answer["next_offset"]
            return found

        t_search, found = timed(search_all)
        assert str(found) == grep.stdout.strip(), (found, grep.stdout)
        rows.append(("search (MB/s)", f"{mb / t_search:,.0f}", f"grep -c -i: {mb / t_grep:,.0f}",
                     f"{t_grep / t_search:.2f}"))

        lat = []
        for seed in range(20):
            t, (status, _, _) = timed(lambda s=seed: fetch(port, token, f"{BASE}/output/sample?n=1000&seed={s}"))
            assert status == 200
            lat.append(t * 1000)
        rows.append(("sample n=1000 (ms, median of 20)", f"{statistics.median(lat):.1f}", "", ""))

        for name in ("stats.json", "stats.qhash"):
            (out_file.parent / name).unlink(missing_ok=True)
        t1, (status, _, _) = timed(lambda: fetch(port, token, f"{BASE}/output/stats"))
        t2, (status2, _, _) = timed(lambda: fetch(port, token, f"{BASE}/output/stats"))
        assert status == status2 == 200
        rows.append(("stats first call (ms)", f"{t1 * 1000:,.0f}", "", ""))
        rows.append(("stats second call (ms)", f"{t2 * 1000:.1f}", "", f"first/second: {t1 / t2:,.0f}"))
    finally:
        stop(proc)
    print(f"\n{args.lines:,} lines, {mb:,.0f} MB\n")
    print("| measure | stimserver | baseline (same run) | baseline time / stimserver time |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
