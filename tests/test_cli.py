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

from stimserver.api.auth import KeyStore
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


def _answers_health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_serve_creates_master_key_and_prints_how_to_authenticate(tmp_path):
    data = tmp_path / "data"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "stimserver", "serve", "--port", str(port), "--data", str(data)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items() if k != "STIMSERVER_MASTER_KEY"})
    try:
        deadline = time.monotonic() + 30
        while not (data / "master.key").exists():
            assert proc.poll() is None, f"serve exited with {proc.returncode} before creating master.key"
            assert time.monotonic() < deadline, "serve created no master.key within 30 s"
            time.sleep(0.1)
        key = (data / "master.key").read_text().strip()
        assert oct((data / "master.key").stat().st_mode & 0o777) == "0o600"
        while not _answers_health(port):  # ready = answering HTTP, not merely listening
            assert proc.poll() is None, f"serve exited with {proc.returncode} before answering /v1/health"
            assert time.monotonic() < deadline, "serve did not answer /v1/health within 30 s"
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


def tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("problem", ["port-taken", "short-key-file", "parent-is-a-file"])
def test_a_refused_serve_leaves_no_files_behind(tmp_path, problem):
    """Not even a data directory or a master.key: the refusal comes before anything is written."""
    data = tmp_path / "fresh" / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "STIMSERVER_MASTER_KEY"}
    blocker = None
    if problem == "port-taken":
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
    elif problem == "short-key-file":
        (tmp_path / "short.key").write_text("short\n")
        env["STIMSERVER_MASTER_KEY_FILE"] = str(tmp_path / "short.key")
    else:
        (tmp_path / "fresh").write_text("a file where the data directory's parent should be")
    before = tree(tmp_path)
    try:
        r = subprocess.run([sys.executable, "-m", "stimserver", "serve", "--port", str(port), "--data", str(data)],
                           capture_output=True, text=True, timeout=120, env=env)
    finally:
        if blocker:
            blocker.close()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    expected = {"port-taken": "already in use", "short-key-file": "fewer than 16 characters",
                "parent-is-a-file": "cannot create data directory"}[problem]
    assert expected in r.stderr
    assert tree(tmp_path) == before


def test_a_refused_start_removes_what_it_created(tmp_path, monkeypatch):
    """A failure after the data directory and key were made (here: building the app) undoes them."""
    from stimserver.config import Settings
    from stimserver.web import server

    def broken_app(settings):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(server, "_make_app", broken_app)
    settings = Settings.from_env({}, data_dir=tmp_path / "new" / "data", port=free_port())
    assert server.serve(settings) == 2
    assert tree(tmp_path) == []

    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("user data")
    settings = Settings.from_env({}, data_dir=tmp_path / "kept", port=free_port())
    assert server.serve(settings) == 2
    assert tree(tmp_path) == ["kept", "kept/mine.txt"]  # an existing directory keeps its files, loses the key


def test_help_shows_each_options_environment_variable():
    from stimserver.config import SETTINGS

    for command, names in {"serve": ("data_dir", "host", "port", "workers", "access_log"),
                           "worker": ("data_dir", "max_jobs")}.items():
        r = run(command, "--help")
        assert r.returncode == 0
        text = " ".join(r.stdout.split())  # click wraps to the terminal width
        for s in SETTINGS:
            if s.name in names:
                assert s.flag and s.flag.split("/")[0] in text
                assert f"env var: {s.env}" in text, (command, s.env)
    for command in (["keys", "create"], ["keys", "list"], ["import"], ["datasets", "list"]):
        assert "env var: STIMSERVER_DATA" in " ".join(run(*command, "--help").stdout.split())


def test_environment_reaches_generated_options(tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    r = run("serve", "--port", str(free_port()), env={"STIMSERVER_DATA": str(tmp_path / "afile"),
                                                      "STIMSERVER_MASTER_KEY": "k" * 20})
    assert r.returncode == 2 and "STIMSERVER_DATA" in r.stderr and "is a file" in r.stderr, r.stderr
    r = run("worker", "--data", str(tmp_path / "w"), env={"STIMSERVER_MAX_JOBS": "0"})
    assert r.returncode == 2 and "STIMSERVER_MAX_JOBS" in r.stderr


def _estimate_target(data, tmp_path, **config) -> None:
    """alice/r1/t1 with a teacher prompt and a complete stim output of 30 questions."""
    from stimserver.store.paths import DataPaths
    from stimserver.store.records import Records
    from tests.conftest import import_jsonl
    from tests.jobs.conftest import hardcoded, seed_target
    from tests.llm.test_tokens import stim_row

    paths = DataPaths(data)
    seed_target(paths, [hardcoded(30)], **{"num_traj_per_stimulus": 2, "max_tokens": 200, **config})
    src = tmp_path / "stim.jsonl"
    src.write_bytes(b"".join(orjson.dumps(stim_row(i, f"What is the capital of country {i}?")) + b"\n"
                             for i in range(30)))
    import_jsonl(Records(paths), "alice", "r1", "t1", src)


def test_estimate_prints_a_table_or_the_json(tmp_path):
    data = tmp_path / "data"
    _estimate_target(data, tmp_path, model_name="gpt-4o", max_cost_usd=0.01)
    r = run("estimate", "alice", "r1", "t1", "--data", str(data))
    assert r.returncode == 0, r.stderr
    assert "rollout of r1/t1: gpt-4o (openai)" in r.stdout and "30 stimuli x 2 = 60" in r.stdout
    assert "counted by      approximation" in r.stdout
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.split()}
    assert set(rows) >= {"standard", "cached", "batch", "cached_batch", "budget"}
    assert "<- this target" in rows["cached"] and "OVER BUDGET" in rows["budget"]
    answer = orjson.loads(run("estimate", "alice", "r1", "t1", "--json", "--data", str(data)).stdout)
    assert (answer["requests"], answer["mode"], answer["over_budget"]) == (60, "cached", True)
    assert answer["tokens"]["output_total"] == 60 * 200 and answer["cost"]["standard"]["usd"] > 0
    assert f"${answer['cost']['standard']['usd']:,.4f}" in rows["standard"]


def test_estimate_errors_are_one_line(tmp_path):
    data = tmp_path / "data"
    r = run("estimate", "alice", "r1", "t1", "--data", str(data))
    assert r.returncode == 1 and "repo 'r1' not found" in r.stderr and "Traceback" not in r.stderr
    _estimate_target(data, tmp_path)  # no model_name
    r = run("estimate", "alice", "r1", "t1", "--data", str(data))
    assert r.returncode == 1 and "model_name must be configured in target" in r.stderr


def test_estimate_counts_anthropic_tokens_exactly(tmp_path):
    from tests.llm.fake_providers import FakeAnthropic, ProviderThread

    data = tmp_path / "data"
    _estimate_target(data, tmp_path, model_name="claude-sonnet-4-5")
    runner = ProviderThread(FakeAnthropic())
    fake = runner.start()
    try:
        r = run("estimate", "alice", "r1", "t1", "--json", "--data", str(data), env=fake.env())
    finally:
        runner.stop()
    assert r.returncode == 0, r.stderr
    answer = orjson.loads(r.stdout)
    # the fake counts words: the teacher prompt's 12 and a probe turn; each question's 7, minus the probe
    assert answer["tokens"]["counted_by"] == "anthropic_count_tokens" and answer["tokens"]["counted_stimuli"] == 30
    assert (answer["tokens"]["prefix"], answer["tokens"]["stimulus_mean"]) == (12 + 1, 7 - 1)
    assert fake.calls.count("POST /v1/messages/count_tokens") == 1 + 30
