"""The stimserver command, run as a user would run it (subprocesses)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest

from stimserver.auth import KeyStore
from stimserver.store import output


def run(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stimserver", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**os.environ, **(env or {})})


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("serve", "keys", "import"):
        assert cmd in r.stdout


def test_keys_create_prints_token_last_and_list_hides_it(tmp_path):
    data = tmp_path / "data"
    r = run("keys", "create", "--user", "alice", "--note", "laptop", "--data", str(data))
    assert r.returncode == 0
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("ssk_") and " " not in token
    assert KeyStore(data / "keys.json").user_for(token) == "alice"
    listing = run("keys", "list", "--data", str(data))
    assert "alice" in listing.stdout and "laptop" in listing.stdout and token not in listing.stdout
    key_id = token.split("_")[1]
    assert run("keys", "revoke", key_id, "--data", str(data)).returncode == 0
    assert KeyStore(data / "keys.json").user_for(token) is None
    row = run("keys", "list", "--data", str(data)).stdout.splitlines()[1]
    assert row.startswith(key_id) and row.split()[3] != "-"  # the revoked column has a time now


def test_keys_errors_are_one_line(tmp_path):
    r = run("keys", "create", "--user", "../root", "--data", str(tmp_path))
    assert r.returncode != 0 and "Traceback" not in r.stderr and "user" in r.stderr
    r = run("keys", "revoke", "nope", "--data", str(tmp_path))
    assert r.returncode != 0 and "no key with id" in r.stderr


def test_import_builds_index_and_refuses_bad_lines(tmp_path):
    data = tmp_path / "data"
    good = tmp_path / "good.jsonl"
    good.write_bytes(b"".join(orjson.dumps({"stimulus_id": i}) + b"\n" for i in range(1000)))
    r = run("import", "--user", "u", "--repo", "r", "--target", "t", str(good), "--data", str(data))
    assert r.returncode == 0, r.stderr
    assert "imported 1000 lines" in r.stdout
    assert "100%" in r.stderr  # the progress bar
    jdir = data / "users/u/repos/r/targets/t/stim"
    assert output.line_count(jdir) == 1000

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"a": 1}\n{"a": 2}\n["not", "an", "object"]\n')
    r = run("import", "--user", "u", "--repo", "r2", "--target", "t", str(bad), "--data", str(data), "--quiet")
    assert r.returncode != 0 and "line 3" in r.stderr and "nothing was written" in r.stderr
    assert not (data / "users/u/repos/r2").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_creates_master_key_and_prints_how_to_authenticate(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stimserver", "serve", "--port", str(port), "--data", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if k != "STIMSERVER_MASTER_KEY"})
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not (data / "master.key").exists():
            time.sleep(0.1)
        key = (data / "master.key").read_text().strip()
        assert oct((data / "master.key").stat().st_mode & 0o777) == "0o600"
        while time.time() < deadline:  # ready = answering HTTP, not merely listening
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert "Authorization: Bearer $(cat" in err and "master.key" in err
    assert key not in out + err  # the key itself is never printed
    assert proc.returncode == 0


@pytest.mark.parametrize("problem", ["port-taken", "data-is-a-file"])
def test_serve_refuses_clearly(tmp_path, problem):
    data = tmp_path / "data"
    port = free_port()
    blocker = None
    if problem == "port-taken":
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
    else:
        data.write_text("not a directory")
    try:
        r = run("serve", "--port", str(port), "--data", str(data), env={"STIMSERVER_MASTER_KEY": "k" * 20})
    finally:
        if blocker:
            blocker.close()
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert ("already in use" in r.stderr) if problem == "port-taken" else ("is a file" in r.stderr)
