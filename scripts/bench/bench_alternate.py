#!/usr/bin/env python3
"""stimserver and a baseline server side by side, their wrk runs alternated, medians compared.

    python scripts/bench/bench_alternate.py --data DATA --baseline "python aiohttp_floor.py --port {port} --file F"
    python scripts/bench/bench_alternate.py ... --rounds 8 --seconds 3 --deep 1000000 --baseline-token T

Why: on a shared VM the speed of the machine itself drifts by 10-40 % within a minute, so two
cells measured a minute apart in separate fresh starts (as ../shared/bench/run_bench.sh does)
differ by more than the 5 % or 15 % an issue asks about. Here both servers run at once (the idle
one costs nothing), and each round runs every page on both, in ABBA order across rounds, so a
drift hits both alike. Printed per page: the median req/s of each server, the median of the
pairwise ratios, the server's CPU time per request (from /proc: user + system of the server and
its children, which on a saturated server is the cost of a request with the client's share taken
out), and the median p99 / p50. Then the deep page against the first, per server.

scripts/bench/bench_reference.sh runs this after the reference harness, with aiohttp_floor as the
baseline. Needs wrk.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROUTE = "/v1/repo/benchrepo/targets/benchtarget/stim/output"
TICK_SECONDS = 1 / os.sysconf("SC_CLK_TCK")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Run:
    """One wrk run against one server."""
    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    cpu_us: float  # the server's CPU time per request


@dataclass
class Server:
    name: str
    port: int
    token: str
    argv: list[str]
    process: subprocess.Popen | None = None
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def url(self, offset: int, limit: int) -> str:
        return f"http://127.0.0.1:{self.port}{ROUTE}?offset={offset}&limit={limit}"


def parse_wrk(text: str) -> tuple[float, int, float, float]:
    """(req/s, requests, p50 ms, p99 ms) from ``wrk --latency`` output."""
    rps = float(re.search(r"Requests/sec:\s*([0-9.]+)", text).group(1))
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    pct = {m.group(1): float(m.group(2)) * _UNITS[m.group(3)]
           for m in re.finditer(r"^\s*(50|99)%\s+([0-9.]+)(us|ms|s)\s*$", text, re.M)}
    return rps, requests, pct["50"], pct["99"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and of every live descendant (``serve --workers N``)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()  # after "pid (comm) "
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) * TICK_SECONDS
    family, total = {pid}, 0.0
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in family and child not in family:
                family.add(child)
                grew = True
    for member in family:
        total += times.get(member, 0.0)
    return total


def wait_ready(server: Server, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(server.url(0, 1), headers={"Authorization": f"Bearer {server.token}"})
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
            raise SystemExit(f"{server.name} exited with {server.process.returncode} before it answered")
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{server.name} did not answer within {timeout:.0f} s")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wrk(server: Server, offset: int, limit: int, seconds: float, threads: int, conns: int) -> Run:
    before = cpu_seconds(server.process.pid)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", "--timeout", "30s", "--latency",
                          "-H", f"Authorization: Bearer {server.token}", server.url(offset, limit)],
                         capture_output=True, text=True, timeout=seconds + 120)
    used = cpu_seconds(server.process.pid) - before
    rps, requests, p50, p99 = parse_wrk(out.stdout)
    return Run(rps, requests, p50, p99, used / max(requests, 1) * 1e6)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def tables(servers: list[Server], pages: list[tuple[str, int, int]], rounds: int, seconds: float) -> str:
    """The comparison tables (markdown) of the runs kept in ``servers``."""
    a, b = servers
    lines = [f"Alternated: {a.name} and {b.name} running side by side, {rounds} rounds of {seconds:g} s per page "
             f"and server (ABBA order); medians over the rounds.", "",
             f"| page | {a.name} req/s | {b.name} req/s | {a.name} / {b.name} (median of pairs, range) | "
             f"CPU µs per request, {a.name} / {b.name} | {b.name} CPU / {a.name} CPU | "
             f"p99 / p50, {a.name} / {b.name} |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for page, _, _ in pages:
        ra, rb = a.runs[page], b.runs[page]
        pairs = [x.rps / y.rps * 100 for x, y in zip(ra, rb, strict=True)]
        cpu_a, cpu_b = median([r.cpu_us for r in ra]), median([r.cpu_us for r in rb])
        tail_a, tail_b = median([r.p99_ms / r.p50_ms for r in ra]), median([r.p99_ms / r.p50_ms for r in rb])
        lines.append(f"| {page} | {median([r.rps for r in ra]):,.0f} | {median([r.rps for r in rb]):,.0f} | "
                     f"{median(pairs):.1f} % ({min(pairs):.0f}–{max(pairs):.0f} %) | {cpu_a:.0f} / {cpu_b:.0f} | "
                     f"{cpu_b / cpu_a * 100:.1f} % | {tail_a:.2f}x / {tail_b:.2f}x |")
    first = pages[0][0]
    deep = [page for page, offset, limit in pages if offset > 0 and limit == pages[0][2]]
    if deep:
        lines += ["", f"| server | {deep[0]} / {first}, req/s (median of pairs, range) | "
                      f"{first} CPU / {deep[0]} CPU |", "|---|---:|---:|"]
        for server in servers:
            pairs = [d.rps / f.rps * 100 for f, d in zip(server.runs[first], server.runs[deep[0]], strict=True)]
            cpu = median([r.cpu_us for r in server.runs[first]]) / median([r.cpu_us for r in server.runs[deep[0]]])
            lines.append(f"| {server.name} | {median(pairs):.1f} % ({min(pairs):.0f}–{max(pairs):.0f} %) | "
                         f"{cpu * 100:.1f} % |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="stimserver data directory (with benchrepo/benchtarget)")
    ap.add_argument("--token", help="stimserver bearer token (default: the file DATA/token)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--port", type=int, default=8110)
    ap.add_argument("--baseline", required=True, help="the baseline's command; {port} is replaced")
    ap.add_argument("--baseline-name", default="aiohttp_floor")
    ap.add_argument("--baseline-port", type=int, default=8106)
    ap.add_argument("--baseline-token", default=os.environ.get("STIMBENCH_TOKEN", "bench-token"))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--deep", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--conns", type=int, default=32)
    args = ap.parse_args()

    token = args.token or Path(args.data, "token").read_text().strip()
    servers = [
        Server("stimserver", args.port, token, [sys.executable, "-m", "stimserver", "serve", "--port", str(args.port),
                                                "--data", args.data, "--workers", str(args.workers)]),
        Server(args.baseline_name, args.baseline_port, args.baseline_token,
               shlex.split(args.baseline.replace("{port}", str(args.baseline_port)))),
    ]
    pages = [("o0_l100", 0, 100), (f"o{args.deep}_l100", args.deep, 100), ("o0_l1000", 0, 1000)]
    for server in servers:
        if not port_free(server.port):
            raise SystemExit(f"port {server.port} is in use; not starting {server.name}")
    try:
        for server in servers:
            server.process = subprocess.Popen(server.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                              start_new_session=True)
        for server in servers:
            wait_ready(server)
            for _, offset, limit in pages:  # warm both servers on every page
                wrk(server, offset, limit, 1, args.threads, args.conns)
            server.runs = {page: [] for page, _, _ in pages}
        for round_no in range(args.rounds):
            order = servers if round_no % 2 == 0 else servers[::-1]
            for page, offset, limit in pages:
                for server in order:
                    server.runs[page].append(wrk(server, offset, limit, args.seconds, args.threads, args.conns))
            print(f"  round {round_no + 1}/{args.rounds}: " + ", ".join(
                f"{s.name} {s.runs[pages[0][0]][-1].rps:,.0f}" for s in servers) + f" req/s at {pages[0][0]}",
                file=sys.stderr)
        print(tables(servers, pages, args.rounds, args.seconds))
    finally:
        for server in servers:
            if server.process is not None and server.process.poll() is None:
                os.killpg(server.process.pid, signal.SIGTERM)
                try:
                    server.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(server.process.pid, signal.SIGKILL)
                    server.process.wait()


if __name__ == "__main__":
    main()
