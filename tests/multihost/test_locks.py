"""Locks across hosts: an flock taken through one FUSE client excludes every other, so each
job is claimed by exactly one runner of all the hosts."""
from __future__ import annotations

import re
import subprocess
import sys

from . import cluster
from .conftest import hardcoded

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""
TRY = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("taken")
except BlockingIOError:
    print("busy")
"""


def try_from(n: int, path: str) -> str:
    return cluster.host(n).sh(sys.executable, "-c", TRY, path).stdout.strip()


def test_an_flock_on_one_host_excludes_the_others(mh):
    path = str(cluster.DATA / "probe.lock")
    holder = subprocess.Popen([*cluster.host(1).enter(), sys.executable, "-c", HOLD, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert (try_from(2, path), try_from(3, path)) == ("busy", "busy")
    finally:
        holder.stdin.close()
        holder.wait(30)
        holder.stdout.close()
    assert try_from(2, path) == "taken"  # released when the holder's descriptor closed


def test_every_job_is_claimed_by_exactly_one_runner_of_all_hosts(mh):
    targets = [f"c{i}" for i in range(12)]
    for t in targets:
        mh.make_target("claims", t, [hardcoded(30, t)])
    for i, t in enumerate(targets):  # run requests spread over the three web hosts
        mh.web(1 + i % 3).ok("POST", mh.stim("claims", t))
    records = [mh.wait_status(mh.web(1 + i % 3), "claims", t, ("complete", "failed")) for i, t in enumerate(targets)]
    assert [r["status"] for r in records] == ["complete"] * len(targets)
    ids = {r["job_id"] for r in records}
    started: dict[int, list[str]] = {}
    for h in cluster.HOST_LIST:
        for m in re.finditer(r"job (\d+) \S+ started \(attempt (\d+)\)", h.log("worker").read_text()):
            if int(m.group(1)) in ids:
                started.setdefault(int(m.group(1)), []).append(f"{h.name} attempt {m.group(2)}")
    assert sorted(started) == sorted(ids)
    assert all(len(runs) == 1 for runs in started.values()), started
    for i, t in enumerate(targets):  # and every line is there once, read from any host
        lines = mh.all_lines(mh.web(3 - i % 3), "claims", t)
        assert [line["question"] for line in lines] == [f"{t} {k}?" for k in range(30)]


COUNT = """
import sys
from pathlib import Path
from stimserver.store.jobrecords import next_job_id
from stimserver.store.paths import DataPaths
paths = DataPaths(Path(sys.argv[1]))
print(" ".join(str(next_job_id(paths)) for _ in range(100)))
"""


def test_job_ids_are_unique_across_hosts(mh):
    """The counter is rewritten in place under its flock: each host must read the other's bytes
    (without direct I/O, GlusterFS FUSE served stale page-cache bytes and ids repeated)."""
    env = {"PYTHONPATH": str(cluster.ROOT)}
    procs = [subprocess.Popen([*cluster.host(n).enter(), "env", *(f"{k}={v}" for k, v in env.items()),
                               sys.executable, "-c", COUNT, str(cluster.DATA / "counter-test")],
                              stdout=subprocess.PIPE, text=True) for n in (1, 2, 3)]
    ids = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        ids += [int(x) for x in out.split()]
    assert sorted(ids) == list(range(1, 301))
