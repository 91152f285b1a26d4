"""The shipped demo data has a rollout a newcomer can page at once (made by scripts/make_demo_data.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

from stimserver.config import Settings

from .aibread_server import ServerThread
from .conftest import MASTER_KEY

DATA = Path(__file__).resolve().parents[1] / "data"


def test_the_demo_geography_rollout_pages_through_the_official_client(tmp_path):
    shutil.copytree(DATA, tmp_path / "data")
    server = ServerThread(Settings.build(data_dir=tmp_path / "data", master_key=MASTER_KEY, access_log=False)).start()
    try:
        rollout = server.client(MASTER_KEY).targets.rollout
        status = rollout.get("geography", repo_name="demo", user_id="demo")
        assert status.status == "complete" and status.lines == status.total_expected == 80
        assert (status.model_extra or {})["stim_outdated"] is False
        assert status.config["model_name"] == "demo-tutor" and status.config["num_traj_per_stimulus"] == 2
        rows, offset = [], 0
        while True:
            page = rollout.get_output("geography", repo_name="demo", offset=offset, limit=30, user_id="demo")
            rows += page.output
            offset += 30
            if not page.has_more:
                break
    finally:
        server.stop()
    assert [(r["stimulus_id"], r["trajectory_id"]) for r in rows] == [(s, t) for s in range(40) for t in range(2)]
    assert rows[0]["question"] == "What is the capital of Australia?"
    assert rows[0]["response"]["content"] == "Canberra." and rows[1]["response"]["content"].startswith(
        "The answer is Canberra")
    assert all(r["error"] is None and r["tokens"] == r["response"]["usage"]["total_tokens"] for r in rows)
