"""`stimserver serve --workers N`: one port, several processes, one truth; graceful stop; refusals."""
from __future__ import annotations

import asyncio
import itertools
import re
import signal
import socket
import time
import uuid

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stimserver.store.keys import RECHECK_SECONDS
from stimserver.store.paths import DataPaths
from stimserver.store.records import Records
from stimserver.web.metrics import FOLD_SECONDS
from tests.conftest import import_jsonl
from tests.llm.fake_providers import Slow, openai_server  # noqa: F401  (fixture)
from tests.serverproc import ServerProcess, create_key, free_port, request, stimserver

OUTPUT = "/v1/repo/demo/targets/geo/stim/output"
SPREAD_SECONDS = 30  # how long fresh connections are tried before concluding that a process never answers


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """serve --workers 2 over a data dir holding alice's 500-line output."""
    root = tmp_path_factory.mktemp("workers")
    data = root / "data"
    src = root / "lines.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"stimulus_id": i, "question": f"Q{i}?"}) + b"\n" for i in range(500)))
    import_jsonl(Records(DataPaths(data)), "alice", "demo", "geo", src)
    server = ServerProcess(data, free_port(), root, workers=2).start()
    yield server
    assert server.terminate() == 0


def spread(server: ServerProcess, send) -> tuple[list, dict[str, int]]:
    """Call ``send(request_id)`` on fresh connections until both processes answered some; (results, pid of each).

    Bounded in time: a process that has just been (re)started may need a moment to take connections.
    """
    results, ids = [], []
    deadline = time.monotonic() + SPREAD_SECONDS
    while time.monotonic() < deadline:
        rid = f"spread-{uuid.uuid4().hex[:12]}"
        results.append(send(rid))
        ids.append(rid)
        if len(ids) % 10 == 0:
            log = server.logged(*ids)
            if len({log[r]["pid"] for r in ids}) == 2:
                return results, {r: log[r]["pid"] for r in ids}
            time.sleep(0.02)
    raise AssertionError(f"{len(ids)} connections in {SPREAD_SECONDS} s all went to one process")


def test_workers_are_separate_processes_on_one_port(two):
    _, pids = spread(two, lambda rid: request(two.port, "GET", "/v1/health", {"X-Request-Id": rid})[0])
    assert two.proc.pid not in set(pids.values())  # the parent only supervises


def test_a_key_made_by_the_cli_is_honoured_and_revoked_by_every_process(two):
    token = create_key(two.data_dir, "alice")  # the servers are already running
    auth = {"Authorization": f"Bearer {token}"}
    pages, _ = spread(two, lambda rid: request(two.port, "GET", OUTPUT + "?offset=450&limit=100",
                                               {**auth, "X-Request-Id": rid}))
    assert {status for status, _, _ in pages} == {200}
    bodies = {body for _, _, body in pages}
    assert len(bodies) == 1  # every process serves the same bytes
    page = orjson.loads(bodies.pop())
    assert [line["stimulus_id"] for line in page["output"]] == list(range(450, 500))
    assert page["lines"] == 500 and page["has_more"] is False

    r = stimserver("keys", "revoke", token.split("_")[1], "--data", str(two.data_dir))
    assert r.returncode == 0, r.stderr
    time.sleep(RECHECK_SECONDS + 0.1)  # each process looks at keys.json at most this often (issue 13)
    refused, _ = spread(two, lambda rid: request(two.port, "GET", OUTPUT, {**auth, "X-Request-Id": rid}))
    assert {status for status, _, _ in refused} == {401}


def scrape(port: int) -> dict[tuple, float]:
    text = request(port, "GET", "/metrics")[2].decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_add_up_across_processes(two):
    """Whichever process answers the scrape, it reports the requests of all of them."""
    sent = 0

    def send(rid):
        nonlocal sent
        sent += 1
        return request(two.port, "GET", "/v1/repo/nosuchrepo/tree", {**two.headers(), "X-Request-Id": rid})[0]

    statuses, _ = spread(two, send)
    assert set(statuses) == {404}
    key = ("stimserver_http_requests_total",
           (("method", "GET"), ("route", "/v1/repo/{repo_name}/tree"), ("status", "404")))
    hist = ("stimserver_http_request_duration_seconds_count",
            (("method", "GET"), ("route", "/v1/repo/{repo_name}/tree")))
    time.sleep(FOLD_SECONDS + 0.2)  # each process folds its request counts in at least this often (issue 13)
    for _ in range(6):  # fresh connections: several processes answer
        samples = scrape(two.port)
        assert samples[key] == sent and samples[hist] == sent
        assert samples[("stimserver_jobs", (("kind", "stim"), ("status", "complete")))] == 1


def test_sigterm_drains_requests_in_flight(tmp_path):
    """A slow client is half-way through a 20 MB page when SIGTERM comes: it still gets all of it."""
    data = tmp_path / "data"
    src = tmp_path / "big.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"stimulus_id": i, "text": "x" * 20_000}) + b"\n" for i in range(1000)))
    import_jsonl(Records(DataPaths(data)), "alice", "demo", "big", src)
    server = ServerProcess(data, free_port(), tmp_path, workers=2).start()
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # a slow reader: the server must wait for it
    conn.connect(("127.0.0.1", server.port))
    try:
        conn.sendall(f"GET /v1/repo/demo/targets/big/stim/output?limit=1000 HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {server.master_key}\r\nX-User-Id: alice\r\n\r\n".encode())
        answer = conn.recv(4096)  # the answer has begun: the request is in flight
        server.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # shutdown has begun once the port takes no new connections
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                time.sleep(0.05)
            except ConnectionRefusedError:
                break
        else:
            raise AssertionError("the port still accepts connections after SIGTERM")
        while chunk := conn.recv(1 << 20):
            answer += chunk
    finally:
        conn.close()
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert len(body) == int(re.search(rb"(?i)content-length: (\d+)", head).group(1)) > 20_000_000
    page = orjson.loads(body)
    assert [line["stimulus_id"] for line in page["output"]] == list(range(1000))
    assert server.terminate() == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_refuses_to_start_with_a_clear_message(tmp_path, workers):
    env = {"STIMSERVER_MASTER_KEY": "k" * 20}
    afile = tmp_path / "afile"
    afile.write_text("x")
    for data, expected in [(afile, "is a file"), (afile / "sub", "cannot create data directory")]:
        r = stimserver("serve", "--workers", str(workers), "--port", str(free_port()), "--data", str(data), env=env)
        assert r.returncode == 2 and expected in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]

    if workers > 1:  # the directory the processes' metrics meet in must be usable too
        r = stimserver("serve", "--workers", str(workers), "--port", str(free_port()), "--data",
                       str(tmp_path / "data"), env={**env, "PROMETHEUS_MULTIPROC_DIR": str(afile)})
        assert r.returncode == 2 and "PROMETHEUS_MULTIPROC_DIR" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "data").exists()  # the data directory and key it had made are gone again

    prices = tmp_path / "priced"  # a broken price table: refused, never ignored
    prices.mkdir()
    (prices / "prices.json").write_text('{"version": "x", "models": {"m": {"input": 1}}}')
    r = stimserver("serve", "--workers", str(workers), "--port", str(free_port()), "--data", str(prices), env=env)
    assert r.returncode == 2 and "price table:" in r.stderr and "needs at least" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and sorted(p.name for p in prices.iterdir()) == ["prices.json"]

    running = ServerProcess(tmp_path / "data", free_port(), tmp_path, workers=2).start()
    try:  # a second server on a port that a multi-process server holds
        r = stimserver("serve", "--workers", str(workers), "--port", str(running.port), "--data",
                       str(tmp_path / "data2"), env=env)
        assert r.returncode == 2 and f"port {running.port}" in r.stderr and "already in use" in r.stderr
        assert not (tmp_path / "data2").exists()  # refused before anything was written
        assert request(running.port, "GET", "/v1/health")[0] == 200  # and the running one is untouched
    finally:
        assert running.terminate() == 0


def test_a_worker_that_dies_is_replaced(tmp_path):
    server = ServerProcess(tmp_path / "data", free_port(), tmp_path, workers=2).start()
    try:
        _, pids = spread(server, lambda rid: request(server.port, "GET", "/v1/health", {"X-Request-Id": rid})[0])
        victim = next(iter(set(pids.values())))
        import os

        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "starting another" not in server.stderr.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"worker process {victim} exited (signal SIGKILL); starting another" in server.stderr.read_text()
        _, after = spread(server, lambda rid: request(server.port, "GET", "/v1/health", {"X-Request-Id": rid})[0])
        assert victim not in set(after.values())
    finally:
        assert server.terminate() == 0


# -- jobs across processes -------------------------------------------------------------------

_calls = itertools.count()


def _answer(body: dict) -> str | Slow:
    prompt = body["messages"][-1]["content"]
    if prompt.startswith("SLOW") and next(_calls) == 0:
        return Slow(120)  # the first call hangs until the server behind it stops
    n = int(re.search(r"exactly (\d+)", prompt).group(1))
    return "\n".join(f"{i + 1}. Generated question {uuid.uuid4().hex[:6]}-{i}?" for i in range(n))


async def _api(server: ServerProcess, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    status, _, raw = await asyncio.to_thread(
        request, server.port, method, path, {**server.headers("alice"), "Content-Type": "application/json"},
        orjson.dumps(body) if body is not None else None)
    return status, orjson.loads(raw)


async def _wait(check, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_jobs_run_once_across_processes_and_resume_after_sigterm(tmp_path, openai_server):
    openai_server.script(*[_answer] * 50)
    env = {**openai_server.env(), "STIMSERVER_LLM_MAX_RETRIES": "0", "STIMSERVER_LLM_TIMEOUT": "100"}
    server = ServerProcess(tmp_path / "data", free_port(), tmp_path, workers=2, env=env)
    await asyncio.to_thread(server.start)
    try:
        assert (await _api(server, "POST", "/v1/repo", {"repo_name": "r"}))[0] == 201
        for name in ("u", "v"):
            prompt = {"prompt_name": name, "messages": [{"role": "system", "content": f"prompt {name}"}]}
            assert (await _api(server, "POST", "/v1/repo/r/prompts", prompt))[0] == 201
        targets = {f"fast{i}": [{"type": "hardcoded", "questions": [f"Q{j}?" for j in range(300)]}] for i in range(4)}
        targets["slow"] = [{"type": "hardcoded", "questions": [f"Q{j}?" for j in range(10)]},
                           {"type": "custom", "model": "llama3.1:8b", "numq": 5,
                            "template_content": "SLOW: write exactly ${numq} for ${prompt_u}"}]
        for name, generators in targets.items():
            overrides = {"teacher_prompt": "u", "student_prompt": "v", "generators": generators}
            status, _ = await _api(server, "POST", "/v1/repo/r/targets",
                                   {"target_name": name, "template": "default", "overrides": overrides})
            assert status == 201
        # run requests land on either process, twice each: still one job per target
        for name in list(targets) * 2:
            status, job = await _api(server, "POST", f"/v1/repo/r/targets/{name}/stim")
            assert status == 200 and job["status"] in ("pending", "running", "complete"), job

        def job_file(name):
            return tmp_path / f"data/users/alice/repos/r/targets/{name}/stim/job.json"

        for name in (n for n in targets if n.startswith("fast")):
            async def done(name=name):
                status, job = await _api(server, "GET", f"/v1/repo/r/targets/{name}/stim")
                return job if job["status"] == "complete" else None
            job = await _wait(done, f"{name} to complete")
            assert job["lines"] == 300
            record = orjson.loads(job_file(name).read_bytes())
            assert record.get("attempt", 1) == 1  # claimed by exactly one process, once
            page = (await _api(server, "GET", f"/v1/repo/r/targets/{name}/stim/output?limit=1000"))[1]
            assert [line["stimulus_id"] for line in page["output"]] == list(range(300))

        async def slow_waiting():
            status, job = await _api(server, "GET", "/v1/repo/r/targets/slow/stim")
            return job["status"] == "running" and job["lines"] == 10 and len(openai_server.received) >= 1
        await _wait(slow_waiting, "the slow job to wait on the model")
        assert await asyncio.to_thread(server.terminate) == 0
        record = orjson.loads(job_file("slow").read_bytes())
        assert record["status"] == "pending"  # handed back, not failed

        await asyncio.to_thread(server.start)

        async def slow_done():
            status, job = await _api(server, "GET", "/v1/repo/r/targets/slow/stim")
            return job if job["status"] in ("complete", "failed") else None
        job = await _wait(slow_done, "the slow job to finish after the restart")
        assert job["status"] == "complete" and job["lines"] == 15, job
        page = (await _api(server, "GET", "/v1/repo/r/targets/slow/stim/output?limit=100"))[1]
        assert [line["stimulus_id"] for line in page["output"]] == list(range(15))
    finally:
        if server.proc is not None and server.proc.poll() is None:
            await asyncio.to_thread(server.terminate)


def test_workers_leave_when_the_supervisor_is_killed(tmp_path):
    import os

    server = ServerProcess(tmp_path / "data", free_port(), tmp_path, workers=2).start()
    try:
        _, pids = spread(server, lambda rid: request(server.port, "GET", "/v1/health", {"X-Request-Id": rid})[0])
        os.kill(server.proc.pid, signal.SIGKILL)  # no chance to pass SIGTERM on
        server.proc.wait(30)
        deadline = time.monotonic() + 30
        alive = set(pids.values())
        while alive and time.monotonic() < deadline:
            for pid in list(alive):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    alive.discard(pid)
            time.sleep(0.05)
        assert not alive, f"orphaned workers still running: {alive}"
    finally:
        server.kill()
