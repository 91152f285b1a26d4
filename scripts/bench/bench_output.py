#!/usr/bin/env python3
"""Benchmark the stim output endpoint against a naive reader, in the same run.

    python scripts/bench/bench_output.py                  # 2,000,000 lines, the full run
    python scripts/bench/bench_output.py --lines 50000 --duration 2   # a quick look
    python scripts/bench/bench_output.py --before ../old-checkout     # this code against an older one

It writes a synthetic stim output (stim-shaped lines of ~500 bytes), imports it with
``stimserver import`` (building the index), makes a user key with ``stimserver keys
create``, then starts ``stimserver serve`` (auth and JSON access log on, as deployed)
and scripts/bench/naive_server.py (skips lines up to the offset) side by side, and prints:

1. single-request latency (p50/p99 over sequential keep-alive requests) for the first,
   middle and last page at limit 100, and the last/first ratio;
2. requests/s under load (wrk, or a Python load loop where wrk is missing) at limit
   100 and 1000, at the first and the middle page, with stimserver/naive ratios.

With ``--before TREE`` it also serves the same data with the stimserver of another checkout
(e.g. a ``git worktree`` of an older commit) and prints this code's figures against that
one's, cell by cell, in the same run.

Machines here are noisy: compare only numbers of the same run.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
ROUTE = "/v1/repo/benchrepo/targets/benchtarget/stim/output"
SYSTEM = ("You are a careful, concise assistant for a geography course. Answer accurately, cite the "
          "country and the continent, and say when a question is ambiguous.")
WORDS = ("river mountain capital border coast island desert city population climate language "
         "currency valley lake ocean forest plain plateau region province harbour").split()


def make_jsonl(path: Path, lines: int) -> None:
    rng = random.Random(1234)
    with open(path, "wb") as f:
        batch = []
        for i in range(lines):
            q = "Which " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 22))) + "?"
            user = {"role": "user", "content": q}
            batch.append(orjson.dumps({
                "stimulus_id": i, "question": q, "type": "hardcoded",
                "unconditioned_stimulus": {"messages": [{"role": "system", "content": SYSTEM}, user]},
                "conditioned_stimulus": {"messages": [user]},
            }))
            if len(batch) == 10_000:
                f.write(b"\n".join(batch) + b"\n")
                batch = []
        if batch:
            f.write(b"\n".join(batch) + b"\n")


def stimserver(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stimserver", *args], check=True, text=True,
                          capture_output=True, **kw)


def prepare(work: Path, lines: int) -> tuple[Path, str]:
    data = work / "data"
    marker = work / f"ready-{lines}.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        return Path(info["file"]), info["token"]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    src = work / "stim.jsonl"
    t0 = time.perf_counter()
    make_jsonl(src, lines)
    print(f"wrote {lines:,} lines ({src.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    stimserver("import", "--quiet", "--user", "bench", "--repo", "benchrepo", "--target", "benchtarget",
               str(src), "--data", str(data))
    print(f"stimserver import (validate + index) took {time.perf_counter() - t0:.1f} s")
    src.unlink()
    token = stimserver("keys", "create", "--user", "bench", "--data", str(data)).stdout.strip().splitlines()[-1]
    out = data / "users/bench/repos/benchrepo/targets/benchtarget/stim/output.jsonl"
    marker.write_text(json.dumps({"file": str(out), "token": token}))
    return out, token


def start(cmd: list[str], port: int, token: str, log: Path, tree: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree else None
    proc = subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
                            env=env, cwd=tree)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if get(port, token, ROUTE + "?limit=1")[0] == 200:
                return proc
        except OSError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[0:3]} exited; see {log}")
        time.sleep(0.2)
    raise SystemExit(f"server on port {port} not ready; see {log}")


def get(port: int, token: str, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    c.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    r = c.getresponse()
    body = r.read()
    if conn is None:
        c.close()
    return r.status, body


def latency(port: int, token: str, offsets: dict[str, int], limit: int, reps: dict[str, int]
            ) -> dict[str, tuple[float, float]]:
    """p50/p99 ms per page, sampled round-robin so that drift on a noisy machine hits every page alike."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    times: dict[str, list[float]] = {label: [] for label in offsets}
    for i in range(max(reps.values())):
        for label, offset in offsets.items():
            if i >= reps[label]:
                continue
            t0 = time.perf_counter()
            status, _ = get(port, token, f"{ROUTE}?offset={offset}&limit={limit}", conn)
            times[label].append((time.perf_counter() - t0) * 1000)
            assert status == 200, status
    conn.close()
    out = {}
    for label, values in times.items():
        values.sort()
        out[label] = (statistics.median(values), values[min(len(values) - 1, int(len(values) * 0.99))])
    return out


def throughput(port: int, token: str, offset: int, limit: int, seconds: float) -> float:
    url = f"http://127.0.0.1:{port}{ROUTE}?offset={offset}&limit={limit}"
    if shutil.which("wrk"):
        out = subprocess.run(["wrk", "-t2", "-c32", f"-d{max(1, round(seconds))}s", "--timeout", "60s", "-H",
                              f"Authorization: Bearer {token}", url], capture_output=True, text=True).stdout
        line = next((r for r in out.splitlines() if r.startswith("Requests/sec")), None)
        non2xx = next((r for r in out.splitlines() if "Non-2xx" in r), None)
        if non2xx:
            raise SystemExit(f"errors under load: {non2xx}")
        return float(line.split()[1]) if line else 0.0
    # Fallback: one keep-alive connection in a loop (wrk is the better load generator).
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        get(port, token, f"{ROUTE}?offset={offset}&limit={limit}", conn)
        n += 1
    return n / (time.perf_counter() - t0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/stimserver-bench"))
    ap.add_argument("--duration", type=float, default=10, help="seconds of load per throughput cell")
    ap.add_argument("--reps", type=int, default=1000, help="sequential requests per latency cell")
    ap.add_argument("--naive-reps", type=int, default=5, help="the same for the naive reader's deep pages")
    ap.add_argument("--before", type=Path, default=None,
                    help="another checkout whose stimserver is measured in the same run, for a before/after table")
    args = ap.parse_args()
    if args.lines < 2000:
        raise SystemExit("--lines must be at least 2000")

    out_file, token = prepare(args.work, args.lines)
    total = args.lines
    mid, last = total // 2, total - 100
    p1, p2, p3 = free_port(), free_port(), free_port()
    serve = [sys.executable, "-m", "stimserver", "serve", "--data", str(args.work / "data"), "--port"]
    servers: dict[str, tuple[list[str], int, Path | None]] = {
        "stimserver": ([*serve, str(p1)], p1, None),
        "naive": ([sys.executable, str(HERE / "naive_server.py"), "--port", str(p2), "--file", str(out_file),
                   "--token", token], p2, None),
    }
    if args.before:
        servers["before"] = ([*serve, str(p3)], p3, args.before.resolve())
    lat: dict[str, dict[str, tuple[float, float]]] = {}
    rps: dict[str, dict[str, float]] = {}
    for name, (cmd, port, tree) in servers.items():
        proc = start(cmd, port, token, args.work / f"{name}.log", tree)
        try:
            offsets = {"first": 0, "middle": mid, "last": last}
            reps = {label: args.naive_reps if name == "naive" and offset else args.reps
                    for label, offset in offsets.items()}
            lat[name] = latency(port, token, offsets, 100, reps)
            rps[name] = {}
            for limit in (100, 1000):
                for label, offset in (("first", 0), ("middle", mid)):
                    rps[name][f"l{limit} {label}"] = throughput(port, token, offset, limit, args.duration)
                    # A slow server still owes answers to the requests wrk left behind; one more
                    # request waits behind them, so the next cell starts on an idle server.
                    get(port, token, ROUTE + "?limit=1")
        finally:
            stop(proc)

    print(f"\n{total:,} lines, {out_file.stat().st_size / 1e6:.0f} MB; limit 100 unless said; "
          f"wrk -t2 -c32 -d{args.duration:g}s" if shutil.which("wrk") else "(no wrk: one connection)")
    print("\n| page (limit 100) | stimserver p50 ms | stimserver p99 ms | naive p50 ms | naive p99 ms "
          "| naive/stimserver p50 |")
    print("|---|---:|---:|---:|---:|---:|")
    for label in ("first", "middle", "last"):
        s, n = lat["stimserver"][label], lat["naive"][label]
        print(f"| {label} | {s[0]:.2f} | {s[1]:.2f} | {n[0]:.2f} | {n[1]:.2f} | {n[0] / s[0]:.1f}x |")
    ratio = lat["stimserver"]["last"][0] / lat["stimserver"]["first"][0]
    print(f"\nstimserver last-page p50 / first-page p50 = {ratio:.2f} (target ≤ 1.2)")
    print("\n| load | stimserver req/s | naive req/s | stimserver/naive |")
    print("|---|---:|---:|---:|")
    for key in rps["stimserver"]:
        s, n = rps["stimserver"][key], rps["naive"][key]
        print(f"| {key} | {s:,.0f} | {n:,.1f} | {s / n:,.1f}x |" if n else f"| {key} | {s:,.0f} | 0 | - |")
    if "before" in lat:
        print(f"\n| cell | before | after (this checkout) | after/before |  (before: {args.before})")
        print("|---|---:|---:|---:|")
        for label in ("first", "middle", "last"):
            b, a = lat["before"][label][0], lat["stimserver"][label][0]
            print(f"| p50 ms, {label} page | {b:.3f} | {a:.3f} | {a / b:.2f} |")
        for key in rps["stimserver"]:
            b, a = rps["before"][key], rps["stimserver"][key]
            print(f"| req/s, {key} | {b:,.0f} | {a:,.0f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
