"""SIGKILL a real ``stimserver serve`` in the middle of a rollout, start it again, count what the provider was asked.

The fake OpenAI-compatible provider runs in this process (its own thread), so it outlives
the server: every request it ever received is counted. After the restart the job must
complete with exactly ``total_expected`` lines, in order, with every line committed
before the kill unchanged, and the provider must have been asked at most
``total_expected`` plus the requests in flight at the kill (at most ``max_concurrency``).
"""
from __future__ import annotations

from collections import Counter

import orjson

from stimserver.jobs import JobRef
from stimserver.store import output
from stimserver.store.paths import DataPaths
from tests.jobs.conftest import hardcoded, lines_of, seed_target
from tests.llm.fake_providers import FakeOpenAI, ProviderThread, Reply
from tests.serverproc import ServerProcess, free_port, request

STIMULI, K, CONCURRENCY = 120, 2, 8
ROLLOUT = JobRef("alice", "r1", "t1", "rollout")


def wait(server: ServerProcess, kind: str, done, what: str) -> dict:
    return server.wait_for_job(f"/v1/repo/r1/targets/t1/{kind}", done, what)


def test_a_killed_rollout_resumes_without_asking_twice(tmp_path):
    provider = ProviderThread(FakeOpenAI(api_key=None))
    fake = provider.start()
    try:
        fake.latency = 0.03
        fake.default = lambda body: Reply(f"Answer to {body['messages'][-1]['content']}")
        data = tmp_path / "data"
        paths = DataPaths(data)
        seed_target(paths, [hardcoded(STIMULI)], model_name="llama3.1:8b", num_traj_per_stimulus=K,
                    max_concurrency=CONCURRENCY)
        env = {"OPENAI_BASE_URL": f"{fake.url}/v1", "STIMSERVER_LLM_MAX_RETRIES": "0"}
        server = ServerProcess(data, free_port(), tmp_path, env=env).start()
        try:
            posted = request(server.port, "POST", "/v1/repo/r1/targets/t1/stim", headers=server.headers("alice"))
            assert posted[0] == 200
            wait(server, "stim", lambda s: s["status"] == "complete", "the stim job")
            code, _, body = request(server.port, "POST", "/v1/repo/r1/targets/t1/rollout",
                                    headers=server.headers("alice"))
            assert code == 200, body
            job_id = orjson.loads(body)["job_id"]
            wait(server, "rollout", lambda s: (s["lines"] or 0) >= 40, "some committed trajectories")
            server.kill()  # SIGKILL, mid-flight
        finally:
            server.kill()
        before = lines_of(paths, ROLLOUT)
        asked_before = len(fake.received)
        assert 40 <= len(before) < STIMULI * K

        server = ServerProcess(data, free_port(), tmp_path, env=env, name="restarted").start()
        try:
            done = wait(server, "rollout", lambda s: s["status"] == "complete", "the resumed rollout")
        finally:
            server.terminate()
        assert done["job_id"] == job_id and done["lines"] == done["total_expected"] == STIMULI * K
        lines = lines_of(paths, ROLLOUT)
        assert output.line_count(ROLLOUT.job_dir(paths)) == STIMULI * K
        assert [(line["stimulus_id"], line["trajectory_id"]) for line in lines] == [
            (s, t) for s in range(STIMULI) for t in range(K)]  # none lost, duplicated or renumbered
        assert lines[:len(before)] == before  # committed lines unchanged
        assert all(line["response"]["content"] == f"Answer to {line['question']}" for line in lines)
        asked = Counter(r.body["messages"][-1]["content"] for r in fake.received)
        assert len(fake.received) <= STIMULI * K + CONCURRENCY, (asked_before, len(fake.received))
        assert all(K <= asked[f"Q{s}?"] for s in range(STIMULI))
        # Stimuli whose trajectories were all committed before the kill were never asked after it.
        after = Counter(r.body["messages"][-1]["content"] for r in fake.received[asked_before:])
        first_open = len(before) // K
        assert not [q for q in after if int(q[1:-1]) < first_open]
    finally:
        provider.stop()
