#!/usr/bin/env python3
"""Measure the multi-host deployment that scripts/multihost builds (root; several minutes).

    python scripts/bench/bench_multihost.py            # builds (and removes) its own cluster
    python scripts/bench/bench_multihost.py --pages    # page throughput only
    python scripts/bench/bench_multihost.py --partition   # a cut-off host's job: time to resume elsewhere

1. Page throughput through nginx with 1, 2 and 3 web hosts as upstreams (wrk, 100-line
   pages of ~1 KB lines from a complete output on the GlusterFS volume), beside one
   ``stimserver serve`` on the local disk for scale.
2. Job claims per second across the three workers: many one-line jobs submitted at once,
   the time until every one is complete.
3. Host kill → resume: an LLM job (fake provider, 0.4 s an answer) on one host, every
   process of that host killed; seconds until a worker on another host has claimed it.

The load generator, nginx, glusterd, its bricks and all three hosts share this machine's
cores, so the ratios say more than the absolute numbers.
"""
from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from tests.multihost import cluster  # noqa: E402
from tests.multihost.conftest import Cluster, ProviderThread, hardcoded, oneshot  # noqa: E402
from tests.serverproc import ServerProcess, free_port  # noqa: E402

DURATION, CONNECTIONS = 10, 32
PAGE = "/v1/repo/bench/targets/pages/stim/output?offset=2000&limit=100"


def wrk(url: str) -> float:
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION}s", "-H",
                          f"Authorization: Bearer {cluster.MASTER_KEY}", "-H", "X-User-Id: alice", url],
                         capture_output=True, text=True, timeout=DURATION + 60).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"wrk saw {non2xx.group(1)} errors on {url}:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def lines_file(folder: Path) -> Path:
    src = folder / "pages.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"stimulus_id": i, "question": f"Question {i}?", "pad": "x" * 900}) + b"\n"
                             for i in range(5000)))
    return src


def local_baseline(src: Path, folder: Path) -> float:
    """One ``serve`` on the local disk (no GlusterFS, no nginx): the scale for the rest."""
    data = folder / "local"
    subprocess.run([sys.executable, "-m", "stimserver", "import", "--user", "alice", "--repo", "bench", "--target",
                    "pages", str(src), "--data", str(data), "--quiet"], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    server = ServerProcess(data, free_port(), folder, env={"STIMSERVER_MASTER_KEY": cluster.MASTER_KEY,
                                                           "STIMSERVER_ACCESS_LOG": "false"})
    server.start()
    try:
        return wrk(f"http://127.0.0.1:{server.port}{PAGE}")
    finally:
        server.terminate()


def page_throughput(src: Path) -> dict[int, float]:
    h1 = cluster.host(1)
    h1.sh(sys.executable, "-m", "stimserver", "import", "--user", "alice", "--repo", "bench", "--target", "pages",
          str(src), "--data", str(cluster.DATA), "--quiet", timeout=300)
    found = {}
    for n in (1, 2, 3):
        cluster.start_nginx(list(range(1, n + 1)))
        wrk(f"http://127.0.0.1:{cluster.NGINX_PORT}{PAGE}")  # warm up
        found[n] = wrk(f"http://127.0.0.1:{cluster.NGINX_PORT}{PAGE}")
    cluster.start_nginx()
    return found


def claims_per_second(mh: Cluster, jobs: int = 60) -> float:
    for i in range(jobs):
        mh.make_target("claims", f"j{i}", [hardcoded(1, f"j{i}")])
    started = time.monotonic()
    for i in range(jobs):
        mh.web(1 + i % 3).ok("POST", mh.stim("claims", f"j{i}"))
    for i in range(jobs):
        mh.wait_status(mh.web(1 + i % 3), "claims", f"j{i}", ("complete",), timeout=300)
    return jobs / (time.monotonic() - started)


def kill_to_resume(mh: Cluster, rounds: int = 3) -> list[float]:
    from tests.multihost.test_host_failure import running_host

    mh.provider.fake.latency = 0.4
    took = []
    for r in range(rounds):
        target = f"kill{r}"
        mh.make_target("kills", target, [oneshot(600)], max_concurrency=2)
        job = mh.nginx.ok("POST", mh.stim("kills", target))["job_id"]
        victim = cluster.wait_until(lambda j=job: running_host(j, 1), "the claim", 30, 0.05)
        reader = mh.web(1 if victim.n != 1 else 2)
        cluster.wait_until(lambda t=target, api=reader: api.ok("GET", mh.stim("kills", t))["lines"] >= 100, "lines",
                           60, 0.05)
        cluster.kill_host(victim)
        killed = time.monotonic()
        cluster.wait_until(lambda j=job: running_host(j, 2), "the resume", 90, 0.02)
        took.append(time.monotonic() - killed)
        mh.wait_status(mh.nginx, "kills", target, ("complete",), timeout=120)
        cluster.revive_host(victim)
    return took


def partition_to_resume(mh: Cluster, cap: float = 150) -> float | None:
    """The running host's link cut (no FIN reaches the bricks): seconds until another host resumes
    the job, None if not within ``cap``. The cut host is then fenced (killed) and rebuilt."""
    from tests.multihost.test_host_failure import running_host

    mh.provider.fake.latency = 0.4
    mh.make_target("kills", "cut", [oneshot(2000)], max_concurrency=2)
    job = mh.nginx.ok("POST", mh.stim("kills", "cut"))["job_id"]
    victim = cluster.wait_until(lambda: running_host(job, 1), "the claim", 30, 0.05)
    reader = mh.web(1 if victim.n != 1 else 2)
    cluster.wait_until(lambda: reader.ok("GET", mh.stim("kills", "cut"))["lines"] >= 100, "lines", 60, 0.05)
    cluster.run("ip", "link", "set", f"{victim.name}-v", "down")
    cut = time.monotonic()
    try:
        cluster.wait_until(lambda: running_host(job, 2), "the resume", cap, 0.05)
        took: float | None = time.monotonic() - cut
    except TimeoutError:
        took = None
    cluster.kill_host(victim)  # fence it before it rejoins
    cluster.run("ip", "link", "set", f"{victim.name}-v", "up")
    cluster.revive_host(victim)
    return took


def main() -> None:
    problem = cluster.why_not_possible()
    if problem:
        raise SystemExit(f"bench_multihost: {problem}")
    if shutil.which("wrk") is None:
        raise SystemExit("bench_multihost: wrk is not installed (apt-get install wrk)")
    folder = Path(tempfile.mkdtemp(prefix="stimserver-bench-mh-"))
    src = lines_file(folder)
    local = local_baseline(src, folder)
    cluster.down(quiet=True)
    provider = None
    try:
        cluster.build_storage()
        provider = ProviderThread()
        for h in cluster.HOST_LIST:
            cluster.build_host(h)
        for h in cluster.HOST_LIST:
            cluster.start_processes(h, {**provider.env(), "STIMSERVER_ACCESS_LOG": "false"})
        cluster.start_nginx()
        mh = Cluster(provider)
        if "--partition" in sys.argv[1:]:
            print(f"partition → resume: {partition_to_resume(mh)}", file=sys.stderr)
            return
        pages = page_throughput(src)
        print(f"pages/s through nginx by web hosts: {pages} (local disk: {local:.0f})", file=sys.stderr)
        if "--pages" in sys.argv[1:]:
            return
        claims = claims_per_second(mh)
        resumes = kill_to_resume(mh)
        partition = partition_to_resume(mh)
    finally:
        cluster.down(quiet=True)
        if provider is not None:
            provider.close()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\nmulti-host bench: {os.cpu_count()} cores shared by wrk, nginx, glusterd + 3 bricks and 3 hosts")
    print(f"pages: GET {PAGE} (100 lines of ~1 KB), wrk -t2 -c{CONNECTIONS} -d{DURATION}s\n")
    print("| setup | pages/s | vs 1 web host |")
    print("|---|---:|---:|")
    print(f"| one serve, local disk, no nginx (scale) | {local:,.0f} | {local / pages[1]:.2f} |")
    for n, rate in pages.items():
        print(f"| nginx → {n} web host{'s' if n > 1 else ''} on GlusterFS | {rate:,.0f} | {rate / pages[1]:.2f} |")
    print(f"\n| job claims across 3 workers (60 one-line jobs, submit → all complete) | {claims:.1f} jobs/s |")
    print(f"| host kill → job resumed on another host (median of {len(resumes)}) | {statistics.median(resumes):.2f} s "
          f"(each: {', '.join(f'{t:.2f}' for t in resumes)}) |")
    print(f"| host cut off (link down) → job resumed on another host (ping-timeout {cluster.PING_TIMEOUT} s) | "
          f"{'not within 150 s' if partition is None else f'{partition:.1f} s'} |")


if __name__ == "__main__":
    main()
