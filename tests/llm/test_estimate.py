"""The estimate's formulas, against numbers worked out by hand and against pricing the answers one by one."""
from __future__ import annotations

import pytest

from stimserver.llm.errors import Answer
from stimserver.llm.estimate import (
    RolloutPlan,
    estimate,
    min_cacheable,
    output_per_request,
    run_figures,
)
from stimserver.llm.prices import ModelPrice, PriceTable, answer_cost, shipped_prices
from stimserver.llm.tokens import ANTHROPIC, TokenCounts

# 1,000 stimuli with one 3,000-token prefix and 20 tokens of their own each
COUNTS = TokenCounts(ANTHROPIC, stimuli=1000, scanned=1000, counted=64, prefixes=((1000.0, 3000),),
                     stimulus_tokens=20_000.0)


def plan(**fields) -> RolloutPlan:
    base = {"model": "claude-sonnet-4-5", "provider": "anthropic", "num_traj_per_stimulus": 2, "max_tokens": 500,
            "max_concurrency": 16, "cache": "5m"}
    return RolloutPlan(**{**base, **fields})


def test_anthropic_by_hand():
    # claude-sonnet-4-5: input 3, output 15, cache_read 0.3, cache_write_5m 3.75 per million; batch × 0.5
    got = estimate(COUNTS, plan(), shipped_prices())
    assert got["requests"] == 2000
    tokens = got["tokens"]
    assert tokens["input_total"] == 3000 * 2000 + 20 * 2000 == 6_040_000
    assert (tokens["prefix"], tokens["prefixes"], tokens["stimulus_mean"]) == (3000, 1, 20.0)
    assert tokens["input_per_request"] == 3020.0
    assert (tokens["output_per_request"], tokens["output_source"], tokens["output_total"]) == (500, "max_tokens",
                                                                                               1_000_000)
    cost = got["cost"]
    assert cost["standard"] == {"usd": 33.12, "low_usd": 18.12, "high_usd": 33.12, "unknown": None}
    # one write of the prefix, 1,999 reads; the 40,000 stimulus tokens uncached
    cached = 40_000 * 3 + 3000 * 1999 * 0.3 + 3000 * 3.75
    worst = 40_000 * 3 + 3000 * (2000 - 16) * 0.3 + 3000 * 16 * 3.75  # the first 16 (max_concurrency) all write
    assert cost["cached"] == {"usd": pytest.approx((cached + 15e6) / 1e6), "low_usd": pytest.approx(cached / 1e6),
                              "high_usd": pytest.approx((worst + 15e6) / 1e6), "unknown": None}
    assert cost["batch"] == {"usd": 16.56, "low_usd": 9.06, "high_usd": 16.56, "unknown": None}
    every_write = 40_000 * 3 + 3000 * 2000 * 3.75  # in a batch no request is assumed to read the cache
    assert cost["cached_batch"] == {"usd": pytest.approx((cached + 15e6) / 2e6),
                                    "low_usd": pytest.approx(cached / 2e6),
                                    "high_usd": pytest.approx((every_write + 15e6) / 2e6), "unknown": None}
    assert got["mode"] == "cached" and got["estimate_usd"] == cost["cached"]["usd"]
    assert got["high_usd"] == cost["cached"]["high_usd"] and got["over_budget"] is False
    assert got["price_table"] == shipped_prices().version and got["cost_unknown"] is None


def test_the_estimate_prices_as_the_answers_will_be_priced():
    """Each answer of the rollout priced by prices.answer_cost (the first writes the prefix, the others
    read it, max_tokens out) sums to the estimate: the same formula, not a look-alike."""
    table = shipped_prices()
    for ttl, batch in (("5m", False), ("1h", False), ("5m", True)):
        total = 0.0
        for n in range(2000):
            first = n == 0
            answer = Answer("", 3020, 500, cached_input_tokens=0 if first else 3000,
                            cache_write_tokens=3000 if first else 0)
            total += answer_cost(table, "claude-sonnet-4-5", answer, ttl, batch=batch).usd
        got = estimate(COUNTS, plan(cache=ttl, batch=batch), table)
        assert got["estimate_usd"] == pytest.approx(total, rel=1e-6)


def test_a_prefix_under_the_models_minimum_is_never_cached():
    assert min_cacheable("claude-haiku-4-5-20251001", "anthropic") == 4096
    assert min_cacheable("claude-sonnet-4-5", "anthropic") == 1024
    got = estimate(COUNTS, plan(model="claude-haiku-4-5"), shipped_prices())
    assert got["cost"]["cached"] == got["cost"]["standard"]
    assert got["tokens"]["min_cacheable_prefix"] == 4096
    assert any("under the 4096-token minimum" in note for note in got["notes"])


def test_openai_reads_a_long_prefix_in_128_token_steps_and_may_read_nothing():
    counts = TokenCounts(ANTHROPIC, 100, 100, 100, ((100.0, 1100),), 1000.0)
    got = estimate(counts, plan(model="gpt-4o", provider="openai", num_traj_per_stimulus=1, max_tokens=100),
                   shipped_prices())
    # gpt-4o: input 2.5, output 10, cache_read 1.25; 1,024 of the 1,100 prefix tokens read by the 99 later requests
    inputs = 100 * 1100 + 1000
    read = 1024 * 99
    assert got["cost"]["cached"]["usd"] == pytest.approx(((inputs - read) * 2.5 + read * 1.25 + 10_000 * 10) / 1e6)
    assert got["cost"]["cached"]["high_usd"] == got["cost"]["standard"]["usd"]  # best effort: maybe no hit at all
    assert got["mode"] == "cached"  # OpenAI caches by itself


def test_without_max_tokens():
    assert output_per_request(plan(max_tokens=None)) == (4096, "default")
    assert output_per_request(plan(provider="openai", max_tokens=None)) == (4096, "unbounded")
    got = estimate(COUNTS, plan(provider="openai", model="gpt-4o", max_tokens=None), shipped_prices())
    assert got["tokens"]["output_source"] == "unbounded"
    assert any("no bound on output" in note for note in got["notes"])


def test_a_model_without_a_price_has_no_cost_and_says_why():
    got = estimate(COUNTS, plan(model="smollm2-135m-instruct", provider="openai", max_cost_usd=5.0), shipped_prices())
    assert got["cost"] is None and got["estimate_usd"] is None and got["high_usd"] is None
    assert "no price for model 'smollm2-135m-instruct'" in got["cost_unknown"]
    assert got["over_budget"] is None  # a budget, and no way to know


def test_a_missing_rate_leaves_only_its_modes_unknown():
    table = PriceTable("t1", {"m": ModelPrice(input=1.0, output=2.0)})
    got = estimate(COUNTS, plan(model="m"), table)
    assert got["cost"]["standard"]["usd"] == pytest.approx((6_040_000 + 2_000_000) / 1e6)
    assert got["cost"]["batch"]["usd"] is None and "no batch_discount" in got["cost"]["batch"]["unknown"]
    assert got["cost"]["cached"]["usd"] is None and "no cache_read" in got["cost"]["cached"]["unknown"]


def test_the_chosen_mode_and_the_budget():
    assert plan(batch=True).mode == "cached_batch"
    assert plan(cache="off").mode == "standard" and plan(cache="off", batch=True).mode == "batch"
    got = estimate(COUNTS, plan(batch=True, max_cost_usd=9.0), shipped_prices())
    assert got["mode"] == "cached_batch" and got["batch"] is True and got["max_cost_usd"] == 9.0
    assert got["high_usd"] == got["cost"]["cached_batch"]["high_usd"] > 9.0 and got["over_budget"] is True
    assert estimate(COUNTS, plan(batch=True, max_cost_usd=100.0), shipped_prices())["over_budget"] is False
    off = estimate(COUNTS, plan(cache="off"), shipped_prices())
    assert off["estimate_usd"] == off["cost"]["standard"]["usd"]
    assert any("STIMSERVER_ANTHROPIC_CACHE is off" in note for note in off["notes"])


def test_run_figures_project_from_the_answered_requests():
    # remaining counts from the usage file's answers, the same file the spending comes from
    job = {"job_id": 7, "status": "running", "expected_lines": 2000}
    usage = {"requests": 120, "input_tokens": 362_400, "output_tokens": 12_000, "cost_usd": 1.2,
             "price_table": "2026-12-06"}
    got = run_figures(job, 100, usage, 2000)
    assert got == {"job_id": 7, "status": "running", "requests": 2000, "answered": 120, "committed": 100,
                   "remaining": 1880, "spent_usd": 1.2, "cost_unknown": None, "mean_usd_per_request": 0.01,
                   "mean_output_tokens": 100.0, "projected_usd": pytest.approx(1.2 + 1880 * 0.01)}
    unknown = run_figures(job, 100, {**usage, "cost_usd": None, "cost_unknown": "no price for model 'x'"}, 2000)
    assert unknown["spent_usd"] is None and unknown["projected_usd"] is None and unknown["cost_unknown"]
    fresh = run_figures({"job_id": 8, "status": "pending", "expected_lines": 2000}, 0, None, 2000)
    assert (fresh["answered"], fresh["remaining"], fresh["spent_usd"], fresh["projected_usd"]) == (0, 2000, 0.0, None)
