#!/usr/bin/env python3
"""A bounded load generator for stimserver's paged output, with realistic access patterns.

    python scripts/bench/loadtest.py prepare --data ./lt-data --lines 200000     # sample data + a key
    python scripts/bench/loadtest.py run --url http://127.0.0.1:8080 --token TOKEN \\
        --repo benchrepo --target benchtarget --requests 20000 --duration 30 --concurrency 16

``run`` keeps ``--concurrency`` clients busy, each one with an access pattern (``--mix``
divides the clients among them, e.g. scan=2,deep=1,status=1):

    scan    a client reads the whole output from offset 0, page after page, as the
            documented paging loop does (offset += limit until has_more is false)
    deep    one page at a random offset (a client resuming somewhere in the middle)
    status  one GET of the job status (a client polling a running job)

It stops by itself at ``--requests`` requests or ``--duration`` seconds, whichever comes
first, and prints requests/s, latency percentiles and error counts per pattern (``--json``
for a machine-readable copy). It only targets loopback addresses unless given
``--allow-remote``: point it at a server you run, never at someone else's.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

MAX_REQUESTS = 10_000_000
MAX_DURATION = 3600.0
PATTERNS = ("scan", "deep", "status")
REQUEST_TIMEOUT = 60.0


class Refused(Exception):
    """The run cannot start (bad target, bad key, ...): nothing was sent, or only the probe."""


def loopback_only(url: str) -> None:
    """Raise Refused unless every address ``url``'s host resolves to is a loopback address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise Refused(f"cannot resolve {parts.hostname!r}: {e}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not address.is_loopback:
            raise Refused(f"{parts.hostname} resolves to {address}, which is not a loopback address; "
                          "load tests target only this machine unless you pass --allow-remote")


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # seconds, successful or not
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    bytes: int = 0

    def add(self, seconds: float, outcome: str, ok: bool, nbytes: int) -> None:
        self.latencies.append(seconds)
        self.statuses[outcome] = self.statuses.get(outcome, 0) + 1
        if not ok:
            self.errors[outcome] = self.errors.get(outcome, 0) + 1
        self.bytes += nbytes


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[rank]


class LoadTest:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = args.url.rstrip("/")
        target = f"/v1/repo/{quote(args.repo, safe='')}/targets/{quote(args.target, safe='')}/{args.kind}"
        self.status_url = self.base + target
        self.output_url = self.status_url + "/output"
        self.headers = {"Authorization": f"Bearer {args.token}", "Accept": "application/json"}
        if args.user:
            self.headers["X-User-Id"] = args.user
        self.rng = random.Random(args.seed)
        self.weights = args.mix
        self.issued = 0
        self.deadline = 0.0
        self.lines = 0
        self.stats = {p: Stats() for p in PATTERNS}

    def _budget(self) -> bool:
        """Take one request from the budget; False once the count or the time is used up."""
        if self.issued >= self.args.requests or time.monotonic() >= self.deadline:
            return False
        self.issued += 1
        return True

    async def _get(self, session, pattern: str, url: str, params: dict[str, int] | None = None) -> dict | None:
        import aiohttp

        started = time.perf_counter()
        try:
            async with session.get(url, params=params, headers=self.headers) as r:
                body = await r.read()
                seconds = time.perf_counter() - started
                ok = 200 <= r.status < 300
                self.stats[pattern].add(seconds, str(r.status), ok, len(body))
                return json.loads(body) if ok else None
        except (TimeoutError, aiohttp.ClientError, ValueError) as e:
            self.stats[pattern].add(time.perf_counter() - started, type(e).__name__, False, 0)
            return None

    def assign(self) -> list[str]:
        """The pattern of each client: ``--mix`` divides the clients, every weighted pattern gets one at least."""
        n = self.args.concurrency
        active = [p for p in PATTERNS if self.weights[p] > 0]
        total = sum(self.weights[p] for p in active)
        shares = {p: self.weights[p] / total * n for p in active}
        counts = {p: int(shares[p]) for p in active}
        for p in sorted(active, key=lambda p: shares[p] - counts[p], reverse=True)[:n - sum(counts.values())]:
            counts[p] += 1
        for p in active:  # room permitting, no weighted pattern is left without a client
            if counts[p] == 0 and n >= len(active):
                donor = max(active, key=lambda q: counts[q])
                counts[donor] -= 1
                counts[p] += 1
        return [p for p in active for _ in range(counts[p])]

    async def _client(self, session, pattern: str) -> None:
        limit = self.args.limit
        while True:
            if pattern == "scan":  # the whole output, page after page, then from the start again
                offset = 0
                while True:
                    if not self._budget():
                        return
                    page = await self._get(session, "scan", self.output_url, {"offset": offset, "limit": limit})
                    if page is None or not page.get("has_more"):
                        break
                    offset += page.get("limit", limit)
            elif pattern == "deep":
                if not self._budget():
                    return
                offset = self.rng.randrange(max(self.lines, 1))
                await self._get(session, "deep", self.output_url, {"offset": offset, "limit": limit})
            else:
                if not self._budget():
                    return
                await self._get(session, "status", self.status_url)

    async def run(self) -> dict:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
        connector = aiohttp.TCPConnector(limit=self.args.concurrency)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            try:
                async with session.get(self.output_url, params={"limit": 1}, headers=self.headers) as r:
                    body = await r.read()
            except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                raise Refused(f"probe GET {self.output_url}?limit=1 failed: {type(e).__name__}: {e}") from None
            if r.status != 200:
                raise Refused(f"probe GET {self.output_url}?limit=1 answered {r.status}: {body[:300]!r}")
            probe = json.loads(body)
            self.lines = probe.get("lines") or 0
            started = time.monotonic()
            self.deadline = started + self.args.duration
            clients = [asyncio.create_task(self._client(session, pattern)) for pattern in self.assign()]
            await asyncio.wait_for(asyncio.gather(*clients), self.args.duration + REQUEST_TIMEOUT + 5)
            elapsed = time.monotonic() - started
        return self.report(elapsed, probe)

    def report(self, elapsed: float, probe: dict) -> dict:
        def row(stats: Stats) -> dict:
            lat = sorted(stats.latencies)
            n = len(lat)
            return {"requests": n, "rps": round(n / elapsed, 1) if elapsed else 0.0,
                    "p50_ms": round(percentile(lat, 50) * 1000, 2), "p90_ms": round(percentile(lat, 90) * 1000, 2),
                    "p99_ms": round(percentile(lat, 99) * 1000, 2), "max_ms": round((lat[-1] if lat else 0) * 1000, 2),
                    "mb_per_s": round(stats.bytes / elapsed / 1e6, 2) if elapsed else 0.0,
                    "errors": dict(sorted(stats.errors.items()))}

        total = Stats()
        for s in self.stats.values():
            total.latencies += s.latencies
            total.bytes += s.bytes
            for k, v in s.errors.items():
                total.errors[k] = total.errors.get(k, 0) + v
        overall = row(total)
        return {"url": self.output_url, "lines": self.lines, "status": probe.get("status"),
                "concurrency": self.args.concurrency, "limit": self.args.limit, "seconds": round(elapsed, 2),
                "requests": overall["requests"], "rps": overall["rps"], "errors": overall["errors"],
                "overall": overall, "patterns": {p: row(s) for p, s in self.stats.items() if s.latencies}}


def print_report(result: dict) -> None:
    errors = sum(result["errors"].values())
    print(f"{result['requests']:,} requests in {result['seconds']:.2f} s = {result['rps']:,.1f} req/s "
          f"(concurrency {result['concurrency']}, limit {result['limit']}, {result['lines']:,} lines, "
          f"{errors} errors)")
    print(f"{'pattern':<8}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'MB/s':>8}  errors")
    for name, row in [*result["patterns"].items(), ("all", result["overall"])]:
        errs = ", ".join(f"{k}: {v}" for k, v in row["errors"].items()) or "-"
        print(f"{name:<8}{row['requests']:>10,}{row['rps']:>10,.1f}{row['p50_ms']:>9.2f}{row['p90_ms']:>9.2f}"
              f"{row['p99_ms']:>9.2f}{row['max_ms']:>9.2f}{row['mb_per_s']:>8.1f}  {errs}")


def parse_mix(text: str) -> dict[str, float]:
    weights = {p: 0.0 for p in PATTERNS}
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in weights:
            raise argparse.ArgumentTypeError(f"unknown pattern {name!r}; patterns: {', '.join(PATTERNS)}")
        try:
            weights[name] = float(value or 1)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad weight in {item!r}") from None
        if weights[name] < 0:
            raise argparse.ArgumentTypeError(f"weights must be >= 0: {item!r}")
    if sum(weights.values()) <= 0:
        raise argparse.ArgumentTypeError("at least one weight must be above 0")
    return weights


def bounded(kind, lo, hi):
    def parse(text: str):
        value = kind(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}")
        return value
    return parse


def prepare(args: argparse.Namespace) -> int:
    """Write a synthetic stim output, import it with `stimserver import`, print a fresh key."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_output import make_jsonl

    args.data.mkdir(parents=True, exist_ok=True)
    src = args.data.parent / f".loadtest-{os.getpid()}.jsonl"
    try:
        make_jsonl(src, args.lines)
        run = [sys.executable, "-m", "stimserver"]
        subprocess.run([*run, "import", "--quiet", "--user", args.user, "--repo", args.repo, "--target", args.target,
                        str(src), "--data", str(args.data)], check=True, stdout=sys.stderr)  # stdout: the key only
    finally:
        src.unlink(missing_ok=True)
    key = subprocess.run([*run, "keys", "create", "--user", args.user, "--note", "loadtest", "--data", str(args.data)],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    print(f"imported {args.lines:,} lines as {args.user}/{args.repo}/{args.target} into {args.data}; a key of "
          f"{args.user}:", file=sys.stderr)
    print(key)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the load (the default)")
    r.add_argument("--url", default="http://127.0.0.1:8080", help="stimserver or nginx in front of it")
    r.add_argument("--token", default=os.environ.get("STIMSERVER_TOKEN"),
                   help="API key (env STIMSERVER_TOKEN)")
    r.add_argument("--user", default=None, help="X-User-Id to send (with the master key)")
    r.add_argument("--repo", required=True)
    r.add_argument("--target", required=True)
    r.add_argument("--kind", default="stim", choices=("stim",))
    r.add_argument("--requests", type=bounded(int, 1, MAX_REQUESTS), default=10_000, help="stop after this many")
    r.add_argument("--duration", type=bounded(float, 0.1, MAX_DURATION), default=30.0,
                   help="stop after this many seconds")
    r.add_argument("--concurrency", type=bounded(int, 1, 1024), default=16, help="requests in flight")
    r.add_argument("--limit", type=bounded(int, 1, 1000), default=100, help="lines per page")
    r.add_argument("--mix", type=parse_mix, default=parse_mix("scan=1,deep=1,status=1"),
                   help="how the clients divide among the patterns, e.g. scan=2,deep=1,status=0")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--json", action="store_true", help="print the result as one JSON object")
    r.add_argument("--allow-remote", action="store_true",
                   help="allow a target that is not a loopback address (only a server you run!)")
    p = sub.add_parser("prepare", help="make a data directory with one large output and a key")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--lines", type=bounded(int, 1, 50_000_000), default=200_000)
    p.add_argument("--user", default="bench")
    p.add_argument("--repo", default="benchrepo")
    p.add_argument("--target", default="benchtarget")
    args = ap.parse_args(argv)
    if args.command == "prepare":
        return prepare(args)
    if not args.token:
        ap.error("--token (or STIMSERVER_TOKEN) is required")
    args.token = args.token.strip()
    if not args.token.isprintable() or " " in args.token:
        ap.error("--token must be one key, without spaces or line breaks")
    try:
        if not args.allow_remote:
            loopback_only(args.url)
        result = asyncio.run(LoadTest(args).run())
    except Refused as e:
        print(f"loadtest: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
