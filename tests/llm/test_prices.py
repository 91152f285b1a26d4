"""Dollars per answer and per job (issue 28): the price table, its override file, the formula,
the job's sum through usage.json and the status, and the metric."""
from __future__ import annotations

import json
from importlib import resources

import orjson
import pytest

from stimserver.handlers.jobs import usage_fields
from stimserver.llm.errors import Answer
from stimserver.llm.limiter import Usage
from stimserver.llm.prices import AnswerCost, PriceTable, answer_cost, load_prices, parse_prices, shipped_prices
from stimserver.web.metrics import count_llm_cost


def test_the_shipped_table_has_a_version_a_date_and_prices():
    raw = json.loads((resources.files("stimserver") / "llm" / "prices.json").read_text())
    assert raw["version"] == shipped_prices().version and raw["date"]
    assert "per million tokens" in raw["note"] and "list prices" in raw["note"]
    table = shipped_prices()
    for name in ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", "gpt-4o", "gpt-4o-mini", "gpt-4.1",
                 "gpt-4.1-mini"):
        price = table.lookup(name)
        assert price is not None and price.input > 0 and price.output > price.input, name
        assert price.cache_read is not None and price.cache_read < price.input and price.batch_discount == 0.5
        if name.startswith("claude"):
            assert price.cache_write_5m is not None and price.cache_write_1h is not None
            assert price.input < price.cache_write_5m < price.cache_write_1h


def test_lookup_exact_then_the_longest_prefix_with_a_snapshot_suffix():
    table = shipped_prices()
    assert table.lookup("gpt-4o") is table.models["gpt-4o"]
    assert table.lookup("gpt-4o-mini") is table.models["gpt-4o-mini"]  # not gpt-4o's price
    assert table.lookup("gpt-4o-mini-2024-07-18") is table.models["gpt-4o-mini"]
    assert table.lookup("gpt-4o-2024-08-06") is table.models["gpt-4o"]
    assert table.lookup("claude-sonnet-4-5-20250929") is table.models["claude-sonnet-4-5"]
    assert table.lookup("Claude-Haiku-4-5") is table.models["claude-haiku-4-5"]
    # An unlisted model is never priced as a listed one it happens to start with.
    assert table.lookup("claude-sonnet-4-6") is None
    assert table.lookup("gpt-4.1-nano") is None
    assert table.lookup("smollm2-135m-instruct") is None


def test_the_data_directory_file_overrides_and_adds(tmp_path):
    assert load_prices(tmp_path) is shipped_prices()  # no file: the shipped table
    (tmp_path / "prices.json").write_text(json.dumps({"version": "ours-3", "models": {
        "gpt-4o": {"input": 1.0, "output": 4.0}, "SmolLM2-135M-Instruct": {"input": 0.01, "output": 0.02}}}))
    table = load_prices(tmp_path)
    assert table.version == "ours-3"
    gpt = table.lookup("gpt-4o")
    assert gpt is not None and (gpt.input, gpt.output, gpt.cache_read) == (1.0, 4.0, None)
    assert table.lookup("smollm2-135m-instruct") is not None
    assert table.lookup("claude-haiku-4-5") is shipped_prices().models["claude-haiku-4-5"]  # kept


@pytest.mark.parametrize(("content", "says"), [
    ("{", "not valid JSON"),
    ('{"models": {}}', '"version" must be'),
    ('{"version": "x", "models": {"m": {"input": 1}}}', 'needs at least "input" and "output"'),
    ('{"version": "x", "models": {"m": {"input": 1, "output": -2}}}', "output is not a price"),
    ('{"version": "x", "models": {"m": {"input": 1, "output": 2, "cache_wrte_5m": 1}}}', "unknown fields"),
])
def test_a_broken_override_file_is_an_error_not_ignored(tmp_path, content, says):
    (tmp_path / "prices.json").write_text(content)
    with pytest.raises(ValueError, match=says):
        load_prices(tmp_path)


def test_the_anthropic_convention_prices_reads_and_writes_by_ttl():
    # 1,500 prompt tokens: 200 read from the cache, 300 written to it, 1,000 neither.
    answer = Answer("x", 1500, 50, cached_input_tokens=200, cache_write_tokens=300)
    table = shipped_prices()
    five = answer_cost(table, "claude-sonnet-4-5-20250929", answer, "5m")
    assert five == AnswerCost(pytest.approx((1000 * 3 + 200 * 0.3 + 300 * 3.75 + 50 * 15) / 1e6), table.version)
    hour = answer_cost(table, "claude-sonnet-4-5", answer, "1h")
    assert hour.usd == pytest.approx((1000 * 3 + 200 * 0.3 + 300 * 6 + 50 * 15) / 1e6)


def test_the_openai_convention_prices_cached_input():
    answer = Answer("x", 1000, 100, cached_input_tokens=400)
    cost = answer_cost(shipped_prices(), "gpt-4o", answer)
    assert cost.usd == pytest.approx((600 * 2.5 + 400 * 1.25 + 100 * 10) / 1e6) and cost.unknown is None


def test_no_price_is_none_and_says_why():
    table = PriceTable("v9", {"m": shipped_prices().models["gpt-4o"]})
    cost = answer_cost(table, "smollm2-135m-instruct", Answer("x", 10, 10))
    assert cost == AnswerCost(None, "v9", "no price for model 'smollm2-135m-instruct' in the price table v9 "
                                          "(add it to DATA/prices.json)")
    # A price the answer needs and the table lacks: unknown too, not priced as plain input.
    cost = answer_cost(load_prices_from({"version": "v2", "models": {"m": {"input": 1, "output": 2}}}), "m",
                       Answer("x", 10, 10, cached_input_tokens=5))
    assert cost.usd is None and cost.unknown is not None and "no cache_read price for model 'm'" in cost.unknown


def load_prices_from(raw: dict) -> PriceTable:
    return PriceTable(*parse_prices(raw, "test"))


def saved_and_restored(usage: Usage) -> Usage:
    return Usage.from_dict(orjson.loads(orjson.dumps(usage.as_dict())))


def test_the_jobs_sum_survives_a_save_and_restore():
    usage = Usage()
    usage.add_cost(AnswerCost(0.25, "v1"))
    usage.add_cost(AnswerCost(0.5, "v1"))
    restored = saved_and_restored(usage)
    assert restored == usage and restored.cost_usd == 0.75 and restored.price_table == "v1"
    restored.add_cost(AnswerCost(0.125, "v2"))  # the table changed between runs: both named
    again = saved_and_restored(restored)
    assert again.cost_usd == 0.875 and again.price_table == "v1, v2" and again.cost_unknown is None
    fields = usage_fields(again.as_dict())
    assert (fields["cost_usd"], fields["price_table"], fields["cost_unknown"]) == (0.875, "v1, v2", None)


def test_one_unpriced_answer_makes_the_jobs_cost_unknown():
    usage = Usage(requests=2)
    usage.add_cost(AnswerCost(0.25, "v1"))
    usage.add_cost(AnswerCost(None, "v1", "no price for model 'x'"))
    usage.add_cost(AnswerCost(0.25, "v1"))
    restored = saved_and_restored(usage)
    assert restored.cost_unknown == "no price for model 'x'"
    fields = usage_fields(restored.as_dict())
    assert fields["cost_usd"] is None and fields["cost_unknown"] == "no price for model 'x'"  # never the partial 0.5


def test_usage_files_from_before_costs():
    old = {"requests": 3, "input_tokens": 30, "output_tokens": 9, "retries": 0, "rate_limited": 0}
    usage = Usage.from_dict(old)
    assert usage.cached_input_tokens == 0 and usage.cost_usd == 0.0 and usage.price_table is None
    assert usage.cost_unknown == "the job's first 3 answers were counted before stimserver priced answers"
    usage.add_cost(AnswerCost(0.5, "v1"))  # a resume adds priced answers: still no total shown
    fields = usage_fields(saved_and_restored(usage).as_dict())
    assert fields["cost_usd"] is None and fields["cost_unknown"] == usage.cost_unknown
    assert fields["requests"] == 3 and fields["input_tokens"] == 30
    # One that never answered anything costs 0; a job with no usage file shows 0 too.
    assert usage_fields({"requests": 0, "retries": 2})["cost_usd"] == 0.0
    assert usage_fields(None) == {"requests": 0, "input_tokens": 0, "output_tokens": 0, "retries": 0,
                                  "rate_limited": 0, "cached_input_tokens": 0, "cache_write_tokens": 0,
                                  "cost_usd": 0.0, "price_table": None, "cost_unknown": None}


def test_the_status_schema_takes_the_cost_fields():
    from stimserver.schemas.jobs import JobUsage
    usage = Usage(requests=1)
    usage.add_cost(AnswerCost(0.1, "v1"))
    assert JobUsage.model_validate(usage_fields(usage.as_dict())).cost_usd == pytest.approx(0.1)
    usage.add_cost(AnswerCost(None, "v1", "why"))
    shown = JobUsage.model_validate(usage_fields(usage.as_dict()))
    assert shown.cost_usd is None and shown.cost_unknown == "why" and shown.price_table == "v1"


async def test_priced_answers_count_into_the_metric(tmp_path):
    from stimserver.store.paths import DataPaths
    from stimserver.web.metrics import Metrics

    def value(text: str) -> float:
        line = [x for x in text.splitlines()
                if x.startswith('stimserver_llm_cost_usd_total{model="metric-test",provider="openai"}')]
        return float(line[0].rsplit(" ", 1)[1]) if line else 0.0

    metrics = Metrics(DataPaths(tmp_path))
    before = value((await metrics.exposition()).decode())
    count_llm_cost("openai", "metric-test", 0.25)
    count_llm_cost("openai", "metric-test", 0.5)
    assert value((await metrics.exposition()).decode()) == pytest.approx(before + 0.75)
