"""Schemathesis against a live stimserver: no 5xx, and every answer as the OpenAPI document says.

The document is fetched from the running server (GET /openapi.json), so what is checked
is what users get. Each operation gets a bounded number of generated requests (valid
and invalid ones) with the master key; the data directory holds a repo with prompts, a
target and a completed stim output so that deep paths answer 200 too, not only 404.
Jobs are not run (``run_jobs`` off): generated targets may name LLM generators, and
these tests stay on loopback.
"""
from __future__ import annotations

import os
import urllib.request

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, seed, settings
from schemathesis.checks import CHECKS as REGISTRY

from stimserver.config import Settings
from stimserver.store.paths import DataPaths
from stimserver.store.records import Records
from tests.aibread_server import ServerThread
from tests.conftest import MASTER_KEY, import_jsonl

EXAMPLES_PER_OPERATION = int(os.environ.get("STIMSERVER_SCHEMATHESIS_EXAMPLES", "12"))  # more for a deep run
SEED = 16  # fixed: the same requests on every run (with derandomize), so a failure reproduces
# Every check schemathesis has (its CLI's --checks all): among them negative_data_rejection (what
# the document forbids must not be accepted) and positive_data_acceptance (what it allows must not
# be refused, unless the refusal is documented).
CHECKS = REGISTRY.get_all()
AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("schemathesis")
    config = Settings.build(data_dir=root / "data", master_key=MASTER_KEY, access_log=False, run_jobs=False)
    server = ServerThread(config).start()
    _seed(server.base_url, Records(DataPaths(config.data_dir)), root)
    yield server
    server.stop()


def _call(base: str, method: str, path: str, body: dict | None = None) -> None:
    request = urllib.request.Request(base + path, method=method, headers={**AUTH, "Content-Type": "application/json"},
                                     data=orjson.dumps(body) if body is not None else None)
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status in (200, 201)


def _seed(base: str, records: Records, root) -> None:
    """Data under the names the document gives as examples, so generated requests reach deep."""
    _call(base, "POST", "/v1/repo", {"repo_name": "demo"})
    for prompt in ("teacher", "retired"):
        _call(base, "POST", "/v1/repo/demo/prompts", {"prompt_name": prompt,
                                                     "messages": [{"role": "system", "content": "Be exact."}]})
    _call(base, "POST", "/v1/repo/demo/targets", {"target_name": "retired", "template": "default", "overrides": {
        "teacher_prompt": "teacher", "student_prompt": "",
        "generators": [{"type": "hardcoded", "questions": ["Capital of France?"]}]}})
    src = root / "lines.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"stimulus_id": i, "question": f"Q{i}?"}) + b"\n" for i in range(150)))
    import_jsonl(records, "admin", "demo", "geo", src)  # a completed stim output of 150 lines
    _complete_rollout(records, "admin", "demo", "geo", lines=120)


def _complete_rollout(records: Records, user: str, repo: str, target: str, lines: int) -> None:
    """A complete rollout job as the rollout kind leaves one: record, lines, failed.json."""
    from stimserver.store import jobrecords, output
    from stimserver.store.answers import write_failed
    from stimserver.store.locks import FileLock

    job_dir = records.paths.job_dir(user, repo, target, "rollout")
    job_dir.mkdir(parents=True)
    stim_job = jobrecords.read_record(records.paths.job_dir(user, repo, target, "stim")) or {}
    config = {"model_name": "m", "num_traj_per_stimulus": 1, "temperature": 1.0, "max_tokens": None,
              "max_concurrency": 10, "extra_kwargs": {}, "stim_job_id": stim_job.get("job_id")}
    rows = [{"stimulus_id": i, "trajectory_id": 0, "question": f"Q{i}?", "stimulus": f"Q{i}?",
             "response": {"role": "assistant", "content": "A.", "finish_reason": "stop",
                          "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}},
             "error": None, "model": "m", "temperature": 1.0, "tokens": 3} for i in range(lines)]
    lock = FileLock.acquire(output.lock_path(job_dir), blocking=True)
    assert lock is not None
    with lock, output.OutputWriter.open(job_dir, lock) as writer:
        writer.append([output.encode(row) for row in rows])
    write_failed(job_dir, [])
    jobrecords.write_record(job_dir, {"job_id": records.next_job_id(), "kind": "rollout", "status": "complete",
                                      "config": config, "expected_lines": lines, "error": None,
                                      "spec": {**config, "stimuli": lines}})


@pytest.fixture(scope="module")
def api_schema(live):
    with urllib.request.urlopen(live.base_url + "/openapi.json", timeout=30) as r:
        doc = orjson.loads(r.read())
    return schemathesis.openapi.from_dict(doc)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@seed(SEED)
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
def test_api_conforms(case, live):
    case.call_and_validate(base_url=live.base_url, headers=AUTH, checks=CHECKS, timeout=30)
