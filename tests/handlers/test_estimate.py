"""GET …/rollout/estimate: the figures before a rollout, the errors, and what a running rollout adds."""
from __future__ import annotations

import shutil

import orjson
import pytest

from stimserver.config import Settings
from stimserver.store.answers import write_usage
from stimserver.store.atomic import write_json_atomic
from stimserver.store.frozen import freeze
from stimserver.store.paths import DataPaths
from stimserver.store.records import Records
from tests.conftest import MASTER_KEY, import_jsonl
from tests.jobs.conftest import hardcoded, seed_target
from tests.llm.fake_providers import anthropic_server  # noqa: F401  (fixture)
from tests.llm.test_tokens import TEACHER, stim_row, write_stimuli

URL = "/v1/repo/r1/targets/t1/rollout/estimate"
ALICE = {"Authorization": f"Bearer {MASTER_KEY}", "X-User-Id": "alice"}
QUESTIONS = ["Name a city in France", "Name a river in Peru", "Name a lake in Kenya", "Name a hill in Rome"]
COUNT_CALL = "POST /v1/messages/count_tokens"


@pytest.fixture
def settings(tmp_path, anthropic_server):  # noqa: F811
    return Settings.build(data_dir=tmp_path / "data", master_key=MASTER_KEY, access_log=False, run_jobs=False,
                          anthropic_base_url=anthropic_server.url, anthropic_api_key=anthropic_server.api_key)


def seed(paths: DataPaths, tmp_path, *, stim: bool = True, **config) -> None:
    """Target t1 of alice/r1 (teacher prompt TEACHER, 2 trajectories, max_tokens 100) and its complete stim output."""
    config = {"model_name": "claude-sonnet-4-5", "num_traj_per_stimulus": 2, "max_tokens": 100, **config}
    seed_target(paths, [hardcoded(len(QUESTIONS))], teacher_messages=[{"role": "system", "content": TEACHER}],
                **config)
    if stim:
        src = tmp_path / "stim.jsonl"
        src.write_bytes(b"".join(orjson.dumps(stim_row(i, q)) + b"\n" for i, q in enumerate(QUESTIONS)))
        import_jsonl(Records(paths), "alice", "r1", "t1", src)


async def get(client, status: int = 200, headers: dict | None = None) -> dict:
    r = await client.get(URL, headers=ALICE if headers is None else headers)
    body = await r.json()
    assert r.status == status, body
    return body


async def test_the_estimate_before_a_rollout(client, paths, tmp_path, anthropic_server):  # noqa: F811
    seed(paths, tmp_path)
    body = await get(client)
    # the fake counts words: a prefix of 12 words (+ the one-word probe turn), questions of 5 words (- the probe)
    assert (body["repo"], body["target"], body["model"], body["provider"]) == ("r1", "t1", "claude-sonnet-4-5",
                                                                                 "anthropic")
    assert (body["stimuli"], body["num_traj_per_stimulus"], body["requests"]) == (4, 2, 8)
    tokens = body["tokens"]
    assert tokens["counted_by"] == "anthropic_count_tokens" and tokens["counted_stimuli"] == 4
    assert (tokens["prefix"], tokens["stimulus_mean"], tokens["input_total"]) == (13, 4.0, 8 * (13 + 4))
    assert (tokens["output_per_request"], tokens["output_total"]) == (100, 800)
    standard = (136 * 3 + 800 * 15) / 1e6  # claude-sonnet-4-5: input 3, output 15 USD per million
    assert body["cost"]["standard"] == {"usd": standard, "low_usd": 136 * 3 / 1e6, "high_usd": standard,
                                        "unknown": None}
    assert body["cost"]["cached"] == body["cost"]["standard"]  # 13 tokens: under the 1,024 Anthropic caches
    assert body["cost"]["batch"]["usd"] == pytest.approx(standard / 2)
    assert (body["mode"], body["batch"], body["cache"], body["estimate_usd"]) == ("cached", False, "5m", standard)
    assert (body["max_cost_usd"], body["over_budget"], body["stimuli_from"], body["run"]) == (None, False, "stim",
                                                                                              None)
    assert anthropic_server.calls.count(COUNT_CALL) == 1 + 4
    assert await get(client) == body  # counted once per stimuli file: asked again, nothing is sent
    assert anthropic_server.calls.count(COUNT_CALL) == 1 + 4


async def test_batch_and_a_budget(client, paths, tmp_path):
    seed(paths, tmp_path, batch=True, max_cost_usd=0.001)
    body = await get(client)
    assert (body["mode"], body["batch"], body["max_cost_usd"]) == ("cached_batch", True, 0.001)
    assert body["high_usd"] == body["cost"]["cached_batch"]["high_usd"] > 0.001 and body["over_budget"] is True


async def test_the_errors(client, paths, tmp_path):
    assert (await get(client, 404))["message"] == "repo 'r1' not found"
    seed(paths, tmp_path, stim=False)
    missing = await client.get("/v1/repo/r1/targets/nope/rollout/estimate", headers=ALICE)
    assert missing.status == 404 and (await missing.json())["code"] == "RESOURCE_NOT_FOUND"
    no_stim = await get(client, 400)
    assert no_stim["message"].startswith("Stim job must complete before running rollout")
    assert "not known yet" in no_stim["message"] and no_stim["code"] == "INVALID_INPUT"
    write_json_atomic(paths.job_dir("alice", "r1", "t1", "stim") / "job.json", {"job_id": 1, "status": "running"})
    running = await get(client, 400)
    assert "the stim job of target 't1' is running" in running["message"]
    seed(paths, tmp_path, model_name=None)
    assert (await get(client, 400))["message"].startswith("model_name must be configured in target")
    assert (await get(client, 401, headers={}))["code"] == "UNAUTHORIZED"


async def test_during_a_rollout(client, paths, tmp_path):
    seed(paths, tmp_path)
    stim_dir, rollout_dir = (paths.job_dir("alice", "r1", "t1", kind) for kind in ("stim", "rollout"))
    freeze(stim_dir, rollout_dir)
    write_json_atomic(rollout_dir / "job.json", {"job_id": 9, "kind": "rollout", "status": "running",
                                                 "expected_lines": 8, "config": {}})
    write_stimuli(rollout_dir, [{"stimulus_id": 0, "trajectory_id": t} for t in range(2)])  # 2 committed lines
    write_usage(rollout_dir, {"requests": 3, "input_tokens": 51, "output_tokens": 60, "cost_usd": 0.003,
                              "price_table": "2026-12-06"})
    shutil.rmtree(stim_dir)  # the stim job re-run or deleted since: the rollout still has its own stimuli
    body = await get(client)
    assert body["stimuli_from"] == "rollout" and body["requests"] == 8
    assert body["run"] == {"job_id": 9, "status": "running", "requests": 8, "answered": 3, "committed": 2,
                           "remaining": 5, "spent_usd": 0.003, "cost_unknown": None, "mean_usd_per_request": 0.001,
                           "mean_output_tokens": 20.0, "projected_usd": 0.008}


async def test_a_provider_that_cannot_count_gives_an_approximation(client, paths, tmp_path,
                                                                   anthropic_server):  # noqa: F811
    seed(paths, tmp_path)
    await anthropic_server.close()
    body = await get(client)
    assert body["tokens"]["counted_by"] == "approximation"
    assert "count_tokens failed" in body["tokens"]["notes"][0] and anthropic_server.api_key not in str(body)
    assert body["cost"]["standard"]["usd"] > 0


async def test_a_local_model_is_approximated_and_unpriced(client, paths, tmp_path):
    seed(paths, tmp_path, model_name="smollm2-135m-instruct")
    body = await get(client)
    assert body["provider"] == "openai" and body["tokens"]["counted_by"] == "approximation"
    assert body["tokens"]["output_source"] == "max_tokens"
    assert body["cost"] is None and "no price for model 'smollm2-135m-instruct'" in body["cost_unknown"]
