"""The benchmark script keeps working: a tiny run prints both tables (no timing asserted)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_output_small_run(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "bench_output.py"), "--lines", "2000",
                        "--duration", "1", "--reps", "5", "--naive-reps", "2", "--work", str(tmp_path / "w")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| page (limit 100) | stimserver p50 ms" in r.stdout
    assert "| l1000 middle |" in r.stdout
    assert "last-page p50 / first-page p50" in r.stdout


def test_bench_output_compares_with_another_checkout(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench" / "bench_output.py"), "--lines", "2000",
                        "--duration", "1", "--reps", "5", "--naive-reps", "2", "--work", str(tmp_path / "w"),
                        "--before", str(ROOT)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| cell | before | after (this checkout) | after/before |" in r.stdout
    assert "| req/s, l100 first |" in r.stdout and "| p50 ms, last page |" in r.stdout
