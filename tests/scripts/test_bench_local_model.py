"""The local-model benchmark keeps working: a tiny run against a fake provider prints its tables."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.llm.fake_providers import FakeOpenAI, ProviderThread, Reply

ROOT = Path(__file__).resolve().parents[2]


def test_bench_local_model_small_run():
    runner = ProviderThread(FakeOpenAI(api_key=None))
    fake = runner.start()
    fake.latency = 0.01
    fake.default = lambda body: Reply("Une réponse en quelques mots.")
    try:
        r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "bench_local_model.py"),
                            "--model-url", f"{fake.url}/v1", "--model", "bench-model", "--stimuli", "3",
                            "--trajectories", "2", "--rounds", "2", "--skip-sweep", "--concurrency", "2",
                            "--time-limit", "240"],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    finally:
        runner.stop()
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "| round | client |" in out
    assert out.count("| bare |") == 2 and out.count("| stimserver |") == 2
    assert "| ratio stimserver / bare (goal >= 0.95) " in out
    assert "| concurrency used " in out and "| 2 (--concurrency) |" in out
    assert "3 stimuli × 2 trajectories = 6" in out
    # a warm-up request, then 2 rounds of 6 from each client: the same requests both ways
    assert len(fake.received) == 1 + 2 * 6 + 2 * 6
    assert fake.max_in_flight <= 2
    shapes = {(tuple(sorted(b.body)), b.body["messages"][0]["content"], b.body["temperature"], b.body["max_tokens"],
               b.body.get("generation_config")) for b in fake.received}
    assert shapes == {(("generation_config", "max_tokens", "messages", "model", "temperature"),
                       "Answer in French only.", 1.0, 32, '{"do_sample": true}')}
