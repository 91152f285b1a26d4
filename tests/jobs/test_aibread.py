"""The official `aibread` client against a real stimserver: run, poll status, page all output."""
from __future__ import annotations

import time

import pytest

from stimserver.handlers import jobs as jobs_handlers

from .conftest import hardcoded, seed_target


def test_run_without_polling_then_poll_and_page(bread, paths):
    seed_target(paths, [hardcoded(5), {"type": "from_dataset", "dataset": "arithmetic", "numq": 137, "seed": 4,
                                       "rollout_with_conditioned": True}], user="admin")
    started = bread.targets.stim.run("t1", repo_name="r1", poll=False)
    assert started.status in ("pending", "running", "complete") and isinstance(started.job_id, int)
    deadline = time.monotonic() + 60
    while (status := bread.targets.stim.get("t1", repo_name="r1")).status != "complete":
        assert status.status in ("pending", "running") and status.job_id == started.job_id
        assert time.monotonic() < deadline, "the job did not complete"
        time.sleep(0.05)
    assert status.lines == 142 and status.progress_percent == 100.0 and status.error is None
    rows, offset = [], 0
    while True:
        page = bread.targets.stim.get_output("t1", repo_name="r1", offset=offset, limit=50)
        assert page.lines == 142 and page.status == "complete"
        rows += page.output
        offset += 50
        if not page.has_more:
            break
    assert [row["stimulus_id"] for row in rows] == list(range(142))
    assert rows[0]["unconditioned_stimulus"]["messages"][-1] == {"role": "user", "content": "Q0?"}
    assert rows[141]["trajectory_override_stimulus"] == rows[141]["conditioned_stimulus"]
    again = bread.targets.stim.run("t1", repo_name="r1", poll=False)
    assert (again.status, again.job_id) == ("complete", started.job_id)


def test_a_quick_job_returns_from_a_polling_run_without_sleeping(bread, paths, monkeypatch):
    monkeypatch.setattr(jobs_handlers, "POST_WAIT_SECONDS", 60.0)
    seed_target(paths, [hardcoded(20)], user="admin")
    stim = bread.targets.stim
    monkeypatch.setattr(stim, "_sleep", lambda seconds: pytest.fail("the client had to poll"))
    result = stim.run("t1", repo_name="r1")  # poll=True, the default
    assert result.status == "complete" and result.lines == 20


def test_a_target_without_prompts_is_a_bad_request(bread, paths):
    import aibread

    seed_target(paths, [hardcoded(1)], user="admin", teacher=None)
    with pytest.raises(aibread.BadRequestError, match="Target must have generators and teacher prompt"):
        bread.targets.stim.run("t1", repo_name="r1", poll=False)
