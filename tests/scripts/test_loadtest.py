"""scripts/bench/loadtest.py: bounded, loopback-only, and it reports what it measured."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aibread_server import ServerThread
from tests.conftest import MASTER_KEY

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "loadtest.py"


def loadtest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=180)


def run_loadtest(url: str, token: str, *, repo: str, target: str, user: str | None = None, requests: int = 200,
                 duration: float = 20, concurrency: int = 4, extra: tuple[str, ...] = ()) -> dict:
    args = ["run", "--url", url, "--token", token, "--repo", repo, "--target", target, "--requests", str(requests),
            "--duration", str(duration), "--concurrency", str(concurrency), "--json", *extra]
    if user:
        args += ["--user", user]
    r = loadtest(*args)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def server(bread_server, make_job):
    make_job(lines=1234, user="alice", repo="demo", target="geo")
    return bread_server


def test_stops_at_the_request_count_with_every_pattern(server):
    result = run_loadtest(server.base_url, MASTER_KEY, user="alice", repo="demo", target="geo", requests=400,
                          duration=60, concurrency=8)
    assert result["requests"] == 400 and result["errors"] == {}
    assert result["lines"] == 1234 and result["status"] == "complete"
    assert set(result["patterns"]) == {"scan", "deep", "status"}
    for row in result["patterns"].values():
        assert row["requests"] > 0 and 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert sum(row["requests"] for row in result["patterns"].values()) == 400


def test_stops_at_the_time_limit(server):
    result = run_loadtest(server.base_url, MASTER_KEY, user="alice", repo="demo", target="geo", requests=10_000_000,
                          duration=1, concurrency=2, extra=("--mix", "scan=1"))
    assert 0 < result["requests"] < 10_000_000  # the time limit, not the count, ended it
    assert set(result["patterns"]) == {"scan"}


def test_counts_errors_and_prints_a_table(server, user_key):
    bob = user_key("bob")["Authorization"].split()[1]
    r = loadtest("run", "--url", server.base_url, "--token", bob, "--repo", "demo", "--target", "geo")
    assert r.returncode == 2 and "404" in r.stderr  # the probe: bob has no such repo; nothing else is sent
    r = loadtest("run", "--url", server.base_url, "--token", MASTER_KEY, "--user", "alice", "--repo", "demo",
                 "--target", "geo", "--requests", "50", "--duration", "30", "--limit", "1000")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "50 requests in" in out and "req/s" in out and "p99 ms" in out and "0 errors" in out


def test_errors_under_load_are_counted(tmp_path, make_job):
    from stimserver.config import Settings

    make_job(lines=500, user="alice", repo="demo", target="geo")
    small = Settings.build(data_dir=tmp_path / "data", master_key=MASTER_KEY, access_log=False, max_page_size=50,
                           default_page_size=10)
    server = ServerThread(small).start()  # pages of 100 are refused (422); status polls are fine
    try:
        result = run_loadtest(server.base_url, MASTER_KEY, user="alice", repo="demo", target="geo", requests=90,
                              extra=("--limit", "100", "--mix", "deep=1,status=1"))
    finally:
        server.stop()
    assert result["requests"] == 90
    assert result["patterns"]["deep"]["errors"] == {"422": result["patterns"]["deep"]["requests"]}
    assert result["patterns"]["status"]["errors"] == {}
    assert result["errors"] == {"422": result["patterns"]["deep"]["requests"]}


@pytest.mark.parametrize("url", ["http://192.0.2.10:8080", "http://8.8.8.8", "ftp://127.0.0.1/"])
def test_refuses_non_loopback_targets_without_sending(url):
    r = loadtest("run", "--url", url, "--token", "t", "--repo", "r", "--target", "t", "--requests", "1")
    assert r.returncode == 2 and ("loopback" in r.stderr or "not an http" in r.stderr)


def test_bounds_are_enforced():
    r = loadtest("run", "--token", "t", "--repo", "r", "--target", "t", "--duration", "100000")
    assert r.returncode == 2 and "duration" in r.stderr
    r = loadtest("run", "--token", "t", "--repo", "r", "--target", "t", "--requests", "0")
    assert r.returncode == 2 and "requests" in r.stderr


def test_prepare_makes_data_and_a_key(tmp_path):
    r = loadtest("prepare", "--data", str(tmp_path / "data"), "--lines", "300", "--user", "u", "--repo", "r",
                 "--target", "t")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip().splitlines()[-1]
    assert r.stdout.strip() == token and token.startswith("ssk_")
    assert (tmp_path / "data/users/u/repos/r/targets/t/stim/output.jsonl").stat().st_size > 0


def test_a_bad_token_or_unreachable_server_is_a_clear_refusal():
    r = loadtest("run", "--token", "two\nlines", "--repo", "r", "--target", "t")
    assert r.returncode == 2 and "one key" in r.stderr and "Traceback" not in r.stderr
    from tests.serverproc import free_port

    r = loadtest("run", "--url", f"http://127.0.0.1:{free_port()}", "--token", "t", "--repo", "r", "--target", "t")
    assert r.returncode == 2 and "probe" in r.stderr and "Traceback" not in r.stderr
