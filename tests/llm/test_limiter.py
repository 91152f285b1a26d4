"""The provider limiter on its own: budgets, the shared pause, bounded retries, usage counts."""
from __future__ import annotations

import asyncio

import pytest

from stimserver.llm import limiter as limiter_mod
from stimserver.llm.errors import Answer, LLMError
from stimserver.llm.limiter import Limits, ProviderLimiter, Usage, limiter_for


def answering(starts: list[float], tokens: int = 0):
    async def attempt(retries: int) -> Answer:
        starts.append(asyncio.get_running_loop().time())
        return Answer("ok", tokens, 0)
    return attempt


async def test_requests_per_minute_holds_back_the_next_request(monkeypatch):
    monkeypatch.setattr(limiter_mod, "WINDOW", 0.3)
    limiter = ProviderLimiter("p", Limits(max_concurrent=10, requests_per_minute=3))
    starts: list[float] = []
    await asyncio.gather(*[limiter.run(answering(starts), provider="openai", model="m") for _ in range(5)])
    starts.sort()
    assert starts[3] - starts[0] >= 0.25  # the 4th waited for the first to leave the window


async def test_tokens_per_minute_holds_back_once_spent(monkeypatch):
    monkeypatch.setattr(limiter_mod, "WINDOW", 0.3)
    limiter = ProviderLimiter("p", Limits(max_concurrent=1, tokens_per_minute=100))
    starts: list[float] = []
    for _ in range(3):
        await limiter.run(answering(starts, tokens=60), provider="openai", model="m")
    assert starts[2] - starts[1] >= 0.25  # 120 tokens spent: the third waited


async def test_a_rate_limit_pauses_other_requests_of_the_provider():
    limiter = ProviderLimiter("p", Limits(max_concurrent=10, max_retries=2))
    loop = asyncio.get_running_loop()
    refused = asyncio.Event()
    refused_at: list[float] = []

    async def refused_once(retries: int) -> Answer:
        if retries == 0:
            refused_at.append(loop.time())
            refused.set()
            raise LLMError("rate limited", status=429, transient=True, retry_after=0.3)
        return Answer("ok", 5, 7)

    usage = Usage()
    first = asyncio.create_task(limiter.run(refused_once, provider="openai", model="m", usage=usage))
    await refused.wait()
    starts: list[float] = []
    await limiter.run(answering(starts), provider="openai", model="m")  # another job, same provider
    await first
    assert starts[0] - refused_at[0] >= 0.29  # it waited out the other job's retry-after
    assert usage.as_dict() == {"requests": 1, "input_tokens": 5, "output_tokens": 7, "retries": 1,
                               "rate_limited": 1, "cached_input_tokens": 0, "cache_write_tokens": 0,
                               "cost_usd": 0.0, "price_table": None, "cost_unknown": None}  # no price table given


async def test_permanent_errors_are_not_retried_and_transient_ones_are_bounded():
    limiter = ProviderLimiter("p", Limits(max_retries=2))
    seen: list[int] = []

    async def failing(status: int, transient: bool):
        async def attempt(retries: int) -> Answer:
            seen.append(retries)
            raise LLMError(f"status {status}", status=status, transient=transient, retry_after=0.0)
        return attempt

    with pytest.raises(LLMError, match="status 401"):
        await limiter.run(await failing(401, False), provider="openai", model="m")
    assert seen == [0]
    seen.clear()
    with pytest.raises(LLMError, match="status 503"):
        await limiter.run(await failing(503, True), provider="openai", model="m")
    assert seen == [0, 1, 2]


async def test_one_limiter_per_provider_and_key():
    limits = Limits()
    a = limiter_for("openai", "http://x/v1", "key-1", limits)
    assert limiter_for("openai", "http://x/v1", "key-1", limits) is a
    assert limiter_for("openai", "http://x/v1", "key-2", limits) is not a
    assert limiter_for("anthropic", "http://x/v1", "key-1", limits) is not a
    assert "key-1" not in repr(a.name)


def test_a_usage_file_saved_before_the_cache_fields_loads_with_them_at_zero():
    old = {"requests": 3, "input_tokens": 30, "output_tokens": 9, "retries": 1, "rate_limited": 0}
    usage = Usage.from_dict(old)
    assert usage.as_dict() == {**old, "cached_input_tokens": 0, "cache_write_tokens": 0, "cost_usd": 0.0,
                               "price_table": None, "cost_unknown": "the job's first 3 answers were counted before "
                                                                   "stimserver priced answers"}
    new = {**old, "cached_input_tokens": 20, "cache_write_tokens": 5, "cost_usd": 0.5, "price_table": "v1",
           "cost_unknown": None}
    assert Usage.from_dict(new).as_dict() == new


async def test_cached_tokens_add_up_in_the_usage():
    limiter = ProviderLimiter("p", Limits())
    usage = Usage()

    async def cached(retries: int) -> Answer:
        return Answer("ok", 100, 3, cached_input_tokens=80, cache_write_tokens=15)

    for _ in range(2):
        await limiter.run(cached, provider="anthropic", model="m", usage=usage)
    assert (usage.input_tokens, usage.cached_input_tokens, usage.cache_write_tokens) == (200, 160, 30)
