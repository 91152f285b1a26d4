"""The rollout benchmark keeps working: a tiny run prints its table (no timing asserted)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_rollout_small_run():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "bench_rollout.py"), "--stimuli", "15",
                        "--trajectories", "2", "--latency", "0.01", "--concurrency", "4"],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| stimuli × trajectories" in r.stdout and "15 × 2 = 30 requests (provider saw 30)" in r.stdout
    assert "| lines committed / expected               | 30 / 30 |" in r.stdout
    assert "| page latency median / p95 / max" in r.stdout
