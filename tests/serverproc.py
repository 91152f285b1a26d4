"""``stimserver serve`` as a real subprocess, the way a user (or nginx) meets it.

Output goes to files (never pipes that could fill up); ``access_log()`` parses the JSON
lines written so far. Every process is stopped by its own pid.
"""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stimserver(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stimserver", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def create_key(data_dir: Path, user: str) -> str:
    r = stimserver("keys", "create", "--user", user, "--data", str(data_dir))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None,
            source: str | None = None, host: str = "127.0.0.1", timeout: float = 60) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


class ServerProcess:
    def __init__(self, data_dir: Path, port: int, log_dir: Path, *, workers: int = 1,
                 env: dict[str, str] | None = None, name: str = "stimserver") -> None:
        self.data_dir, self.port, self.workers = data_dir, port, workers
        self.env = {"STIMSERVER_MASTER_KEY": "deploy-master-key-0123456789", **(env or {})}
        self.stdout = log_dir / f"{name}.out"
        self.stderr = log_dir / f"{name}.err"
        self.proc: subprocess.Popen | None = None

    @property
    def master_key(self) -> str:
        return self.env["STIMSERVER_MASTER_KEY"]

    def start(self, wait: bool = True) -> ServerProcess:
        cmd = [sys.executable, "-m", "stimserver", "serve", "--port", str(self.port), "--data", str(self.data_dir),
               "--workers", str(self.workers)]
        with open(self.stdout, "ab") as out, open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, **self.env},
                                         start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"stimserver exited with {self.proc.returncode}: {self.stderr.read_text()}")
            try:
                if request(self.port, "GET", "/v1/health", timeout=5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"stimserver not ready on port {self.port}: {self.stderr.read_text()}")

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for the graceful exit; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("stimserver did not stop within the timeout after SIGTERM") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the server and its workers
            except ProcessLookupError:
                pass
            self.proc.wait(30)

    def access_log(self) -> list[dict]:
        lines = []
        for line in self.stdout.read_bytes().splitlines():
            if line.startswith(b"{"):
                lines.append(orjson.loads(line))
        return lines

    def logged(self, *request_ids: str, timeout: float = 30) -> dict[str, dict]:
        """The access-log lines of these requests, once written (a line follows its response)."""
        deadline = time.monotonic() + timeout
        while True:
            found = {e.get("request_id"): e for e in self.access_log()}
            if all(rid in found for rid in request_ids) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def get_json(self, path: str, user: str = "alice") -> Any:
        """GET ``path`` as ``user``: the JSON of its answer, which must be a 200."""
        code, _, body = request(self.port, "GET", path, headers=self.headers(user))
        assert code == 200, body
        return orjson.loads(body)

    def wait_for_job(self, path: str, done: Callable[[dict], Any], what: str, *, timeout: float = 120,
                     pause: float = 0.02) -> dict:
        """The job status at ``path`` once ``done`` holds of it; a job that fails ends the wait with its error."""
        deadline = time.monotonic() + timeout
        while not done(now := self.get_json(path)):
            assert now["status"] != "failed", now["error"]
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {now}"
            time.sleep(pause)
        return now

    def headers(self, user: str | None = None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.master_key}"}
        if user:
            h["X-User-Id"] = user
        return h
