"""The shipped demo data has rollouts a newcomer can page at once, made on a real model.

scripts/make_demo_data.py made them through the real pipeline against SmolLM2-135M-Instruct
(scripts/local-model): nothing in them is hand-written, and sampling sampled.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from stimserver.config import Settings

from .aibread_server import ServerThread
from .conftest import MASTER_KEY

DATA = Path(__file__).resolve().parents[1] / "data"
MODEL = "smollm2-135m-instruct"


def _all_rows(rollout, target: str) -> list[dict]:
    rows, offset = [], 0
    while True:
        page = rollout.get_output(target, repo_name="demo", offset=offset, limit=100, user_id="demo")
        rows += page.output
        offset += 100
        if not page.has_more:
            return rows


def test_the_demo_rollouts_page_through_the_official_client(tmp_path):
    shutil.copytree(DATA, tmp_path / "data")
    server = ServerThread(Settings.build(data_dir=tmp_path / "data", master_key=MASTER_KEY, access_log=False)).start()
    try:
        rollout = server.client(MASTER_KEY).targets.rollout
        french = rollout.get("french", repo_name="demo", user_id="demo")
        geography = rollout.get("geography", repo_name="demo", user_id="demo")
        rows = {"french": _all_rows(rollout, "french"), "geography": _all_rows(rollout, "geography")}
    finally:
        server.stop()
    assert french.status == "complete" and french.lines == french.total_expected == 240
    assert geography.status == "complete" and geography.lines == geography.total_expected == 80
    for status in (french, geography):
        extra = status.model_extra or {}
        assert extra["stim_outdated"] is False and extra["warning"] is None
        assert status.config["model_name"] == MODEL and status.config["num_traj_per_stimulus"] == 2
        assert status.config["temperature"] == 1.0
    assert [(r["stimulus_id"], r["trajectory_id"]) for r in rows["french"]] == [(s, t) for s in range(120)
                                                                                for t in range(2)]
    assert rows["french"][0]["unconditioned_stimulus"]["messages"][0] == {
        "role": "system", "content": "Answer in French only."}
    for row in rows["french"] + rows["geography"]:
        assert row["error"] is None and row["model"] == MODEL and row["response"]["content"].strip()
        assert row["tokens"] == row["response"]["usage"]["total_tokens"]
    # sampled: the two trajectories of (nearly) every stimulus differ
    duplicated = (french.model_extra or {})["duplicate_stimuli"]
    differ = sum(a["response"]["content"] != b["response"]["content"]
                 for a, b in zip(rows["french"][::2], rows["french"][1::2], strict=True))
    assert differ == 120 - duplicated and differ >= 110
