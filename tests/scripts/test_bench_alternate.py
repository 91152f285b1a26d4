"""scripts/bench/bench_alternate.py: its wrk parsing, its CPU accounting, and a tiny real run (no timing asserted)."""
from __future__ import annotations

import importlib.util
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


alternate = _load("bench_alternate")

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:8110/v1/repo/benchrepo/targets/benchtarget/stim/output?offset=0&limit=100
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.21ms    1.10ms  15.10ms   71.22%
    Req/Sec     3.81k   412.77     4.62k    68.33%
  Latency Distribution
     50%  850.00us
     75%    4.71ms
     90%    5.62ms
     99%    1.20s
  22791 requests in 3.00s, 1.04GB read
Requests/sec:   7593.41
Transfer/sec:    355.97MB
"""


def test_parse_wrk_reads_rate_count_and_percentiles_in_any_unit():
    assert alternate.parse_wrk(WRK_OUTPUT) == (7593.41, 22791, 0.85, 1200.0)


def test_cpu_seconds_counts_live_children():
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n"
                              "print('done', flush=True)\ntime.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        before = alternate.cpu_seconds(os.getpid())
        assert child.stdout.readline() == "done\n"
        assert alternate.cpu_seconds(os.getpid()) - before >= 0.3  # the child's spin, not this process's
        assert alternate.cpu_seconds(child.pid) >= 0.4
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NAIVE = ROOT / "scripts" / "bench" / "naive_server.py"


def test_a_tiny_run_against_the_naive_server_prints_both_tables(tmp_path):
    bench_output = _load("bench_output")
    output, token = bench_output.prepare(tmp_path / "w", 2000)
    data = tmp_path / "w" / "data"
    port, baseline_port = _free_port(), _free_port()
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "bench_alternate.py"), "--data", str(data),
                        "--token", token, "--port", str(port), "--baseline-port", str(baseline_port),
                        "--baseline-name", "naive", "--baseline-token", token, "--deep", "1000",
                        "--rounds", "2", "--seconds", "1",
                        "--baseline", f"{sys.executable} {NAIVE} --port {{port}} "
                                      f"--file {output} --token {token}"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in r.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"page", "o0_l100", "o1000_l100", "o0_l1000", "server", "stimserver", "naive"}
    number = r"[0-9][0-9,]*(?:\.[0-9]+)?"
    assert re.fullmatch(rf"\| o0_l100 \| {number} \| {number} \| {number} % \({number}–{number} %\) \| "
                        rf"{number} / {number} \| {number} % \| {number}x / {number}x \|", rows["o0_l100"])
    assert re.fullmatch(rf"\| naive \| {number} % \({number}–{number} %\) \| {number} % \|", rows["naive"])
    assert "round 2/2" in r.stderr
    for p in (port, baseline_port):  # both servers were stopped
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", p)) != 0
