"""store.sample and store.stats: uniform seeded samples; statistics cached and extended, never wrong."""
from __future__ import annotations

import os
from collections import Counter

import orjson
import pytest

from stimserver.store import output, sample, stats
from stimserver.store.locks import FileLock


def write(job_dir, rows) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock.acquire(output.lock_path(job_dir), blocking=True)
    try:
        with output.OutputWriter.open(job_dir, lock) as w:
            w.append([output.encode(r) for r in rows])
    finally:
        lock.release()


def test_draw_is_a_function_of_seed_and_lines():
    assert sample.draw(42, 1000, 10) == sample.draw(42, 1000, 10)
    assert sample.draw(42, 1000, 10) != sample.draw(42, 1001, 10)
    assert sample.draw(1, 5, 10) == [0, 1, 2, 3, 4]
    assert sample.draw(1, 0, 10) == []
    big = sample.draw(7, 10**12, 1000)  # O(n): a trillion lines cost nothing
    assert len(set(big)) == 1000 and all(0 <= i < 10**12 for i in big)


def test_draw_is_uniform_over_many_seeds():
    """Chi-square of how often each of 50 lines is drawn (5 per seed, 4,000 seeds): each line 400 times expected."""
    lines, n, seeds = 50, 5, 4000
    counts = Counter(i for seed in range(seeds) for i in sample.draw(seed, lines, n))
    expected = seeds * n / lines
    chi2 = sum((counts[i] - expected) ** 2 / expected for i in range(lines))
    # 49 degrees of freedom: the 99.9th percentile is 85.4; a biased draw lands far beyond
    assert chi2 < 85.4, chi2
    assert all(len(set(sample.draw(seed, lines, n))) == n for seed in range(100))


def test_sample_reads_the_lines(tmp_path):
    rows = [{"stimulus_id": i, "question": f"q{i}"} for i in range(300)]
    write(tmp_path / "stim", rows)
    got = sample.sample(tmp_path / "stim", 3, 20)
    assert got.lines == 300 and len(got.rows) == 20
    assert all(orjson.loads(raw) == rows[i] for i, raw in got.rows)
    assert [i for i, _ in got.rows] == sample.draw(3, 300, 20)


def rollout_rows():
    rows = []
    for sid in range(4):
        for tid in range(3):
            failed = sid == 2 and tid == 1
            rows.append({"stimulus_id": sid, "trajectory_id": tid, "question": f"q{sid % 3}",
                         "response": None if failed else {"role": "assistant", "content": "x"},
                         **({"error": "too long"} if failed else {}), "tokens": 10 * (sid + 1) + tid})
    return rows


def test_stats_of_a_rollout_fixture(tmp_path):
    write(tmp_path / "rollout", rollout_rows())
    got = stats.stats(tmp_path / "rollout", "job-1")
    tokens = sorted(r["tokens"] for r in rollout_rows())
    assert got["lines"] == 12 and got["question_lines"] == 12
    assert got["distinct_questions"] == 3 and got["repeated_question_lines"] == 9
    assert got["by_type"] == {}
    assert got["rollout"] == {"trajectories": 12, "stimuli": 4, "failed_trajectories": 1,
                              "compared_stimuli": 4, "duplicate_stimuli": 4,  # every answer is "x"
                              "trajectories_per_stimulus": {"min": 3, "max": 3, "mean": 3.0}}
    assert got["tokens"] == {"count": 12, "sum": sum(tokens), "mean": round(sum(tokens) / 12, 3),
                             "p50": tokens[5], "p90": tokens[10], "max": tokens[-1],
                             "histogram": stats.histogram(sorted(Counter(tokens).items()))}
    assert sum(b["count"] for b in got["tokens"]["histogram"]) == 12


def test_stats_are_cached_and_extended(tmp_path, monkeypatch):
    job = tmp_path / "stim"
    rows = [{"stimulus_id": i, "question": f"q{i % 7}", "type": "a" if i % 2 else "b"} for i in range(100)]
    write(job, rows[:60])
    first = stats.stats(job, "job-1")
    assert first["lines"] == 60 and first["distinct_questions"] == 7

    scanned: list[tuple[int, int]] = []
    real = stats._scan

    def spy(state, snap, seen, new):
        scanned.append((state["size"], snap.size))
        return real(state, snap, seen, new)

    monkeypatch.setattr(stats, "_scan", spy)
    assert stats.stats(job, "job-1") == first and scanned == []  # unchanged: the cache alone
    write(job, rows[60:])
    grown = stats.stats(job, "job-1")
    assert scanned == [(first["bytes"], grown["bytes"])]  # only the new lines were read
    write(tmp_path / "fresh", rows)
    assert grown == stats.stats(tmp_path / "fresh", "job-1")  # the same as one scan of it all
    assert stats.stats(job, "job-2")["lines"] == 100 and scanned[-1][0] == 0  # another job: from the start


@pytest.mark.parametrize("damage", ["truncated", "replaced", "garbage"])
def test_a_cache_that_does_not_check_out_is_rebuilt(tmp_path, damage):
    job = tmp_path / "stim"
    rows = [{"stimulus_id": i, "question": f"q{i}"} for i in range(50)]
    write(job, rows)
    stats.stats(job, "k")
    if damage == "truncated":
        os.truncate(job / stats.QHASH_NAME, 8)
        write(job, [{"stimulus_id": 50, "question": "new"}])
        assert stats.stats(job, "k")["distinct_questions"] == 51
    elif damage == "replaced":  # the output is not the one the cache counted
        for name in (output.DATA_NAME, output.INDEX_NAME):
            (job / name).unlink()
        write(job, rows[:10] + [{"stimulus_id": 99, "question": "other" * 9}] * 45)
        assert stats.stats(job, "k")["distinct_questions"] == 11
    else:
        (job / stats.STATS_NAME).write_bytes(b"{not json")
        assert stats.stats(job, "k")["distinct_questions"] == 50


def test_a_job_folder_deleted_meanwhile_answers_without_caching(tmp_path, monkeypatch):
    import shutil

    job = tmp_path / "stim"
    write(job, [{"stimulus_id": i, "question": f"q{i}"} for i in range(30)])
    real = stats._load

    def vanish(job_dir, key):
        shutil.rmtree(job_dir, ignore_errors=True)  # the target is deleted while the scan starts
        return real(job_dir, key)

    monkeypatch.setattr(stats, "_load", vanish)
    assert stats.stats(job, "k")["lines"] == 30
    assert not job.exists()


HISTOGRAMS = {
    "one-value": ([(7, 3)], [{"low": 7, "high": 7, "count": 3}]),
    "narrow": ([(1, 1), (3, 2)], [{"low": 1, "high": 1, "count": 1}, {"low": 2, "high": 2, "count": 0},
                                  {"low": 3, "high": 3, "count": 2}]),
    "wide": ([(0, 1), (99, 1), (100, 5)], [{"low": 0, "high": 5, "count": 1}] + [
        {"low": 6 * i, "high": 6 * i + 5, "count": 0} for i in range(1, 16)] + [
        {"low": 96, "high": 101, "count": 6}]),
}


@pytest.mark.parametrize("hist,bins", HISTOGRAMS.values(), ids=HISTOGRAMS.keys())
def test_token_histogram_bins(hist, bins):
    got = stats.histogram(hist)
    assert got == bins and len(got) <= stats.HISTOGRAM_BINS
    assert sum(b["count"] for b in got) == sum(c for _, c in hist)


def _trajectories(contents: list[list[str | None]]) -> list[dict]:
    return [{"stimulus_id": sid, "trajectory_id": tid, "question": f"q{sid}",
             "response": None if text is None else {"role": "assistant", "content": text},
             **({"error": "refused"} if text is None else {})}
            for sid, texts in enumerate(contents) for tid, text in enumerate(texts)]


def test_duplicate_trajectories_are_counted_per_stimulus(tmp_path):
    """Identical answers of one stimulus count it once; a failed one is not an answer; one answer compares nothing."""
    rows = _trajectories([["a", "b"], ["c", "c"], ["d", None], ["e", "e", "f"], ["g", "h", "h"]])
    write(tmp_path / "r", rows)
    got = stats.stats(tmp_path / "r", "job-1")["rollout"]
    assert (got["compared_stimuli"], got["duplicate_stimuli"]) == (4, 3)


def test_duplicates_are_counted_alike_when_the_output_grows_mid_stimulus(tmp_path):
    rows = _trajectories([["a", "a"], ["b", "c", "c"], ["d", "e"]])
    write(tmp_path / "r", rows[:3])  # the second stimulus is cut after its first trajectory
    first = stats.stats(tmp_path / "r", "job-1")["rollout"]
    assert (first["compared_stimuli"], first["duplicate_stimuli"]) == (1, 1)
    write(tmp_path / "r", rows[3:])  # appended
    grown = stats.stats(tmp_path / "r", "job-1")["rollout"]
    assert (grown["compared_stimuli"], grown["duplicate_stimuli"]) == (3, 2)
