"""Schemathesis against a live, seeded stimserver: every check, every phase, a fixed seed.

The document is fetched from the running server (GET /openapi.json), so what is checked is
what users get. The run is schemathesis's own command line with tests/web/schemathesis.toml:
- checks: all of them, with ``positive_data_acceptance`` replaced by the same check less the
  refusals the document states in words (tests/web/schemathesis_hooks.py);
- phases: examples, coverage (boundary values: just outside every minimum and maximum, huge
  integers, empty and over-long strings), fuzzing, and stateful (the document's links from
  each create to what it made, so job, export and search operations run on targets that exist);
- a fixed seed with deterministic generation, so a failure reproduces.
The data (tests/web/seeded_server.py) puts a complete stim and rollout under the names the
document gives as examples. Its summary (requests, statuses) is printed for the record.
"""
from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import MASTER_KEY
from tests.web.schemathesis_hooks import documented_refusal
from tests.web.seeded_server import start

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = os.environ.get("STIMSERVER_SCHEMATHESIS_EXAMPLES")  # more for a deep run by hand


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("schemathesis"))
    yield server
    server.stop()


def test_api_conforms(live, tmp_path):
    report = tmp_path / "report"
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run",
               f"{live.base_url}/openapi.json", "--checks", "all", "--exclude-checks", "positive_data_acceptance",
               "-H", f"Authorization: Bearer {MASTER_KEY}", "--no-color",
               "--report", "ndjson", "--report-dir", str(report)]
    if EXAMPLES:
        command += ["--max-examples", EXAMPLES]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.web.schemathesis_hooks",
                               "PYTHONPATH": str(ROOT)})
    statuses = _statuses(report)
    print(f"schemathesis: {sum(statuses.values())} requests; statuses {dict(sorted(statuses.items()))}")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert sum(statuses.values()) > 2000, "the run sent far fewer requests than it should: a vacuous run"
    assert 200 in statuses and 201 in statuses and 422 in statuses


def _statuses(report: Path) -> collections.Counter[int]:
    """Response statuses from schemathesis's ndjson report."""
    counts: collections.Counter[int] = collections.Counter()
    for file in report.glob("*.ndjson"):
        for line in file.read_bytes().splitlines():
            for status in _walk_statuses(orjson.loads(line)):
                counts[status] += 1
    return counts


def _walk_statuses(event: object):
    if isinstance(event, dict):
        response = event.get("response")
        if isinstance(response, dict) and isinstance(response.get("status_code"), int):
            yield response["status_code"]
        for value in event.values():
            if isinstance(value, (dict, list)):
                yield from _walk_statuses(value)
    elif isinstance(event, list):
        for value in event:
            yield from _walk_statuses(value)


@pytest.mark.parametrize("op, status, body, allowed", [
    ("stim_output_search", 422, {"message": "x", "detail": [{"type": "value_error.pattern"}]}, True),
    ("stim_output_search", 422, {"message": "x", "detail": [{"type": "type_error.integer"}]}, False),
    ("rollout_run", 400, {"message": "model_name must be configured in target"}, True),
    ("targets_create", 400, {"message": "anything"}, False),
    ("targets_create", 422, {"message": "x", "detail": [{"type": "value_error.template"}]}, True),
    ("repo_create", 422, {"message": "x", "detail": [{"type": "value_error.template"}]}, False),
])
def test_only_the_documented_refusals_are_forgiven(op, status, body, allowed):
    assert documented_refusal(op, status, orjson.dumps(body)) is allowed
