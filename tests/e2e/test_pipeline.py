"""The pipeline on a real open model, through the official client: stim, then rollout, then a SIGKILL.

The model (SmolLM2-135M-Instruct, served by scripts/local-model) is asked through a counting
proxy, so every check compares stimserver with what the model server itself said: the lines are
its completions, the usage its counts, and after a kill only what was in flight is asked again.
Small on purpose (a few questions, short answers): the whole file takes about a minute on 2 cores.
"""
from __future__ import annotations

import time
from collections import Counter

import aibread
import orjson

from stimserver.store import output
from stimserver.store.paths import DataPaths
from tests.serverproc import ServerProcess, free_port, request

from .conftest import MODEL

FRENCH = [{"role": "system", "content": "Answer in French only."}]


def serve(tmp_path, proxy, name: str = "stimserver") -> ServerProcess:
    env = {"OPENAI_BASE_URL": proxy.url, "STIMSERVER_LLM_TIMEOUT": "300", "STIMSERVER_LLM_MAX_RETRIES": "0"}
    return ServerProcess(tmp_path / "data", free_port(), tmp_path, env=env, name=name).start()


def target(client: aibread.Bread, name: str, numq: int, k: int, max_tokens: int, concurrency: int) -> None:
    client.targets.create("e2e", target_name=name, template="default", user_id="alice", overrides={
        "teacher_prompt": "french", "student_prompt": "",
        "generators": [{"type": "from_dataset", "dataset": "everyday", "numq": numq, "seed": 11}],
        "model_name": MODEL, "num_traj_per_stimulus": k, "temperature": 1.0, "max_tokens": max_tokens,
        "max_concurrency": concurrency})


def until(check, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def rollout_status(server: ServerProcess, name: str) -> dict:
    code, _, body = request(server.port, "GET", f"/v1/repo/e2e/targets/{name}/rollout", headers=server.headers("alice"))
    assert code == 200, body
    return orjson.loads(body)


def setup_repo(server: ServerProcess) -> aibread.Bread:
    """A repo and the teacher prompt made through the official client; the client, for a ``with``."""
    client = aibread.Bread(api_key=server.master_key, base_url=f"http://127.0.0.1:{server.port}", max_retries=3)
    client.repo.create(repo_name="e2e", user_id="alice")
    client.prompts.create("e2e", prompt_name="french", messages=FRENCH, user_id="alice")
    return client


def test_stim_and_rollout_are_real_completions_that_differ(tmp_path, proxy):
    server = serve(tmp_path, proxy)
    try:
        with setup_repo(server) as client:
            target(client, "fr", numq=6, k=2, max_tokens=24, concurrency=8)
            stim = client.targets.stim.run("fr", repo_name="e2e", user_id="alice", poll=False)
            until(lambda: client.targets.stim.get("fr", repo_name="e2e", user_id="alice").status == "complete", "stim")
            assert stim.status in ("pending", "running", "complete")
            client.targets.rollout.run("fr", repo_name="e2e", user_id="alice", poll=False)
            done = until(lambda: (s := client.targets.rollout.get("fr", repo_name="e2e", user_id="alice")).status
                         in ("complete", "failed") and s, "the rollout")
            assert done.status == "complete", done.error
            page = client.targets.rollout.get_output("fr", repo_name="e2e", user_id="alice", limit=100)
        status = rollout_status(server, "fr")
    finally:
        server.terminate()
    lines = page.output
    assert [(r["stimulus_id"], r["trajectory_id"]) for r in lines] == [(s, t) for s in range(6) for t in range(2)]
    for row in lines:  # every trajectory a real completion of the model
        response = row["response"]
        assert row["error"] is None and row["model"] == MODEL
        assert isinstance(response["content"], str) and response["content"].strip(), row
        assert response["finish_reason"] in ("stop", "length")
        assert 0 < response["usage"]["completion_tokens"] <= 24 and row["tokens"] == response["usage"]["total_tokens"]
        assert row["unconditioned_stimulus"]["messages"][0] == FRENCH[0]  # the teacher prompt went with it
    # the model was asked exactly once per trajectory, with the teacher prompt and the temperature
    assert len(proxy.seen.bodies) == 12
    assert all(b["model"] == MODEL and b["temperature"] == 1.0 and b["max_tokens"] == 24 for b in proxy.seen.bodies)
    # usage: the lines, the job's totals and the model server's own counts agree
    reported = Counter((u["prompt_tokens"], u["completion_tokens"]) for u in proxy.seen.usages)
    assert Counter((r["response"]["usage"]["prompt_tokens"], r["response"]["usage"]["completion_tokens"])
                   for r in lines) == reported
    assert status["usage"]["input_tokens"] == sum(u["prompt_tokens"] for u in proxy.seen.usages)
    assert status["usage"]["output_tokens"] == sum(u["completion_tokens"] for u in proxy.seen.usages)
    # sampling samples: the two trajectories of each stimulus differ, and nothing warns
    for sid in range(6):
        a, b = (r["response"]["content"] for r in lines if r["stimulus_id"] == sid)
        assert a != b, f"stimulus {sid}: both trajectories read {a!r}"
    assert status["duplicate_stimuli"] == 0 and status["warning"] is None


def test_a_killed_rollout_re_asks_only_what_was_in_flight(tmp_path, proxy):
    stimuli, k, concurrency = 12, 2, 4
    total = stimuli * k
    server = serve(tmp_path, proxy)
    with setup_repo(server) as client:
        target(client, "kill", numq=stimuli, k=k, max_tokens=16, concurrency=concurrency)
        client.targets.stim.run("kill", repo_name="e2e", user_id="alice", poll=False)
        until(lambda: client.targets.stim.get("kill", repo_name="e2e", user_id="alice").status == "complete", "stim")
        client.targets.rollout.run("kill", repo_name="e2e", user_id="alice", poll=False)
    job_dir = DataPaths(tmp_path / "data").job_dir("alice", "e2e", "kill", "rollout")
    until(lambda: output.line_count(job_dir) >= 6, "six committed trajectories")
    in_flight = proxy.in_flight()
    server.kill()
    asked_before = proxy.chat_requests()
    committed = output.line_count(job_dir)
    before = (job_dir / "output.jsonl").read_bytes()
    time.sleep(1)  # answers to requests stimserver no longer waits for still arrive at the proxy
    server = serve(tmp_path, proxy, name="restarted")
    try:
        with aibread.Bread(api_key=server.master_key, base_url=f"http://127.0.0.1:{server.port}",
                           max_retries=3) as client:
            client.targets.rollout.run("kill", repo_name="e2e", user_id="alice", poll=False)  # the same job resumes
        done = until(lambda: (s := rollout_status(server, "kill"))["status"] in ("complete", "failed") and s,
                     "the resumed rollout")
        assert done["status"] == "complete", done["error"]
    finally:
        server.terminate()
    after = (job_dir / "output.jsonl").read_bytes()
    assert after.startswith(before) and output.line_count(job_dir) == total
    re_asked = proxy.chat_requests() - total
    print(f"killed at {committed} committed lines with {in_flight} requests in flight "
          f"({asked_before} asked); {re_asked} asked twice")
    assert 0 <= re_asked <= concurrency  # at most the requests in flight at the kill: max_concurrency
