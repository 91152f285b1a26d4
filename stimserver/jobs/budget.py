"""A target's budget, ``max_cost_usd``: its rollout stops before its cost could pass it.

The job's cost so far is its usage's ``cost_usd`` (the answers the provider billed, priced
by ``llm.prices``; it continues across resumes like the usage). Before a request goes out
its worst case is reserved: its prompt at one token per 2 bytes (more tokens than any
tokenizer in use gives ordinary text) at the dearest of the input and cache-write prices,
plus ``max_tokens`` of output (the Messages API's default when the target sets none), times
the batch discount for a batch. A request whose worst case does not fit waits for those in
flight to be answered and logged (they are paid for: never asked again), then the job fails
with ``BudgetExhausted``; its committed lines are kept, and raising ``max_cost_usd`` on the
target, then POSTing the job, resumes it.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from ..llm import DEFAULT_MAX_TOKENS, Usage
from ..llm.prices import PER, PRICES_FILE, ModelPrice, PriceTable, load_prices
from .kinds import ConfigProblem, ResumableFailure

__all__ = ["Budget", "BudgetExhausted", "worst_case_usd", "check_priced", "BYTES_PER_TOKEN_AT_MOST"]

BYTES_PER_TOKEN_AT_MOST = 2


class BudgetExhausted(ResumableFailure):
    """The next request could take the job past ``max_cost_usd``."""


def worst_case_usd(price: ModelPrice, prompt_bytes: int, max_tokens: int | None, *, batch: bool = False) -> float:
    """The most one request could cost: see the module's docstring."""
    tokens = -(-prompt_bytes // BYTES_PER_TOKEN_AT_MOST)
    input_rate = max(price.input, price.cache_write_5m or 0.0, price.cache_write_1h or 0.0)
    usd = tokens * input_rate + (max_tokens or DEFAULT_MAX_TOKENS) * price.output
    if batch and price.batch_discount is not None:
        usd *= price.batch_discount
    return usd / PER


def check_priced(data_root: Path, model: str, *, batch: bool = False) -> None:
    """A budget needs prices: refuse the run (``ConfigProblem``, a 400) when the table cannot price ``model``."""
    try:
        price = load_prices(data_root).lookup(model)
    except ValueError as e:
        raise ConfigProblem(str(e)) from None
    if price is None:
        raise ConfigProblem(f"max_cost_usd needs a price for model {model!r}, and the price table has none: add it "
                            f"to DATA/{PRICES_FILE} (docs/cost.md)")
    if batch and price.batch_discount is None:
        raise ConfigProblem(f"max_cost_usd with batch: true needs the batch_discount of model {model!r} in the "
                            f"price table: add it to DATA/{PRICES_FILE} (docs/cost.md)")


class Budget:
    """``limit`` dollars for a job whose cost so far is ``usage.cost_usd``, and what is reserved now."""

    def __init__(self, limit: float, usage: Usage, prices: PriceTable) -> None:
        self.limit = limit
        self.usage = usage
        self.prices = prices
        self.reserved = 0.0
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def worst(self, model: str, prompt_bytes: int, max_tokens: int | None, *, batch: bool = False) -> float:
        """``worst_case_usd`` of one request to ``model`` (whose price ``check_priced`` made sure of)."""
        price = self.prices.lookup(model)
        if price is None:
            raise ResumableFailure(f"max_cost_usd is set, but the price table has no price for model {model!r}: "
                                   f"add it to DATA/{PRICES_FILE}")
        return worst_case_usd(price, prompt_bytes, max_tokens, batch=batch)

    @property
    def spent(self) -> float:
        return self.usage.cost_usd

    def fits(self, usd: float) -> bool:
        return self.spent + self.reserved + usd <= self.limit

    def exhausted(self, usd: float) -> BudgetExhausted:
        return BudgetExhausted(
            f"stopped before the cost could pass max_cost_usd ${self.limit:g}: ${self.spent:.4f} spent, and the next "
            f"request could cost up to ${usd:.4f}")

    @asynccontextmanager
    async def spending(self, usd: float) -> AsyncIterator[None]:
        """Reserve ``usd`` for one request; ``BudgetExhausted`` (after the ones in flight end) if it cannot fit."""
        while not self.fits(usd):
            if self._in_flight == 0:
                raise self.exhausted(usd)
            await self._idle.wait()  # their real cost is known then, usually below the reserve
        self.reserved += usd
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.reserved -= usd
            self._in_flight -= 1
            if self._in_flight == 0:
                self.reserved = 0.0  # no float drift
                self._idle.set()
