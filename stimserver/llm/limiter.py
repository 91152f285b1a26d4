"""One limiter per provider (kind, base URL, API key) in a process, shared by all its jobs.

It owns the retries: the SDKs are built with ``max_retries=0`` so that every attempt, and
every 429/529, passes through here. A request waits for

* a provider-wide slot (``STIMSERVER_LLM_MAX_CONCURRENT``),
* the optional requests-per-minute and tokens-per-minute budgets (sliding 60 s window;
  tokens are counted from the answers, so a burst may overshoot by the requests in flight),
* the end of a pause: a 429 or 529 pauses *every* request to that provider for its
  ``retry-after`` (or an exponential backoff when it gives none), then all recover.

Other transient failures (connection, timeout, 408/409/5xx) back off that request alone.
After ``max_retries`` retries the last error is raised, saying how many retries it took,
so a provider that keeps refusing fails the job with a message that says so. Each failed
attempt logs one line (provider, model, status, attempt; never a key).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import RATE_LIMIT_STATUSES, Answer, LLMError
from .prices import AnswerCost

__all__ = ["Usage", "USAGE_COUNTS", "Limits", "ProviderLimiter", "limiter_for", "record_answer", "with_cost",
           "billed", "LISTENERS", "COST_LISTENERS"]

log = logging.getLogger("stimserver.llm")

BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
RETRY_AFTER_MAX = 120.0
WINDOW = 60.0

Listener = Callable[[str, str, str, int, int], None]
LISTENERS: list[Listener] = []
"""Called as ``(provider, model, outcome, input_tokens, output_tokens)`` after each attempt;
``outcome`` is ``ok``, ``rate_limited``, ``retried`` or ``failed``. ``metrics`` subscribes."""

CostListener = Callable[[str, str, float], None]
COST_LISTENERS: list[CostListener] = []
"""Called as ``(provider, model, usd)`` after each answer the price table prices. ``metrics`` subscribes."""


# The integer counts of a ``Usage``, as its file and the job status carry them.
USAGE_COUNTS = ("requests", "input_tokens", "output_tokens", "retries", "rate_limited", "cached_input_tokens",
                "cache_write_tokens")


@dataclass
class Usage:
    """What one job's requests cost; ``retries`` and ``rate_limited`` count failed attempts.

    ``input_tokens`` counts every prompt token; ``cached_input_tokens`` (read from the prompt
    cache) and ``cache_write_tokens`` (written to it) are parts of it (``errors.Answer``).
    ``cost_usd`` sums the answers' costs (``llm.prices``); ``price_table`` names the table
    version(s) used and ``cost_unknown`` says why some answer had no price: the job's cost is
    then unknown, never the partial sum. A usage file saved before costs were counted loads
    with the cost unknown when it had answers (0 when it had none); one saved before the
    cache fields existed loads with them at 0.
    """

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    retries: int = 0
    rate_limited: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    price_table: str | None = None
    cost_unknown: str | None = None

    def add_cost(self, cost: AnswerCost) -> None:
        """One answer's cost (``prices.answer_cost``) into the job's sum."""
        tables = self.price_table.split(", ") if self.price_table else []
        if cost.table not in tables:
            self.price_table = ", ".join([*tables, cost.table])
        if cost.usd is None:
            self.cost_unknown = self.cost_unknown or cost.unknown
        else:
            self.cost_usd += cost.usd

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "retries": self.retries, "rate_limited": self.rate_limited,
                "cached_input_tokens": self.cached_input_tokens, "cache_write_tokens": self.cache_write_tokens,
                "cost_usd": self.cost_usd, "price_table": self.price_table, "cost_unknown": self.cost_unknown}

    @classmethod
    def from_billed(cls, entries: Iterable[dict[str, Any]], *, retries: int = 0, rate_limited: int = 0) -> Usage:
        """The usage of the answers a job logged with their bills (``billed``), each counted once."""
        usage = cls(retries=retries, rate_limited=rate_limited)
        for bill in entries:
            usage.requests += 1
            for name in ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens"):
                value = bill.get(name)
                if type(value) is int and value > 0:
                    setattr(usage, name, getattr(usage, name) + value)
            raw_usd, table = bill.get("cost_usd"), bill.get("price_table")
            if not isinstance(table, str) and raw_usd is None:
                continue  # never priced (no price table was in use): no cost to count
            usd = float(raw_usd) if isinstance(raw_usd, (int, float)) and not isinstance(raw_usd, bool) else None
            why = bill.get("cost_unknown")
            unknown = str(why) if why else (None if usd is not None else "an answer was logged without its price")
            usage.add_cost(AnswerCost(usd, str(table or "unknown"), unknown))
        return usage

    @classmethod
    def from_dict(cls, raw: object) -> Usage:
        if not isinstance(raw, dict):
            return cls()
        usage = cls(**{k: raw[k] for k in USAGE_COUNTS if type(raw.get(k)) is int})
        cost = raw.get("cost_usd")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            usage.cost_usd = float(cost)
        elif usage.requests:
            usage.cost_unknown = (f"the job's first {usage.requests} answers were counted before stimserver "
                                  "priced answers")
        for name in ("price_table", "cost_unknown"):
            if isinstance(raw.get(name), str) and not getattr(usage, name):
                setattr(usage, name, raw[name])
        return usage


@dataclass(frozen=True)
class Limits:
    max_concurrent: int = 64
    requests_per_minute: int = 0   # 0: no budget
    tokens_per_minute: int = 0
    max_retries: int = 4


class ProviderLimiter:
    """The shared gate of one provider; ``run`` sends one request through it, with retries."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.max_concurrent)
        self._paused_until = 0.0
        self._starts: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._token_sum = 0

    def _backoff(self, retry: int) -> float:
        return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** retry)

    async def _admit(self) -> None:
        """Wait for the pause to end and the per-minute budgets to have room."""
        while True:
            now = time.monotonic()
            wait = self._paused_until - now
            while self._starts and self._starts[0] <= now - WINDOW:
                self._starts.popleft()
            while self._tokens and self._tokens[0][0] <= now - WINDOW:
                self._token_sum -= self._tokens.popleft()[1]
            rpm, tpm = self.limits.requests_per_minute, self.limits.tokens_per_minute
            if rpm and len(self._starts) >= rpm:
                wait = max(wait, self._starts[0] + WINDOW - now)
            if tpm and self._token_sum >= tpm and self._tokens:
                wait = max(wait, self._tokens[0][0] + WINDOW - now)
            if wait <= 0:
                self._starts.append(now)
                return
            await asyncio.sleep(wait)

    async def run(self, attempt: Callable[[int], Awaitable[Answer]], *, provider: str, model: str,
                  usage: Usage | None = None, cost: Callable[[Answer], AnswerCost] | None = None) -> Answer:
        """``attempt(retries_so_far)`` until it answers, a permanent error, or the retries run out.

        ``cost`` prices each answer (``prices.answer_cost``) into ``usage`` and ``COST_LISTENERS``.
        """
        retry = 0
        while True:
            async with self._slots:
                await self._admit()
                try:
                    answer = await attempt(retry)
                except LLMError as err:
                    last = not err.transient or retry >= self.limits.max_retries
                    rate_limited = err.status in RATE_LIMIT_STATUSES
                    wait = self._backoff(retry)
                    if err.retry_after is not None:
                        wait = min(max(err.retry_after, 0.0), RETRY_AFTER_MAX)
                    log.warning("LLM request failed: provider=%s model=%s status=%s attempt=%d %s", provider, model,
                                err.status if err.status is not None else "none", retry + 1,
                                "(giving up)" if last else f"(retry in {wait:g} s)")
                    _notify(provider, model, "failed" if last else "rate_limited" if rate_limited else "retried",
                            0, 0)
                    if usage is not None:
                        usage.rate_limited += rate_limited
                    if last:
                        raise
                    if rate_limited:  # every job of this provider waits, not only this request
                        self._paused_until = max(self._paused_until, time.monotonic() + wait)
                else:
                    self._tokens.append((time.monotonic(), answer.input_tokens + answer.output_tokens))
                    self._token_sum += answer.input_tokens + answer.output_tokens
                    priced = None if cost is None else cost(answer)
                    record_answer(answer, provider=provider, model=model, usage=usage, cost=priced)
                    return answer if priced is None else with_cost(answer, priced)
            retry += 1
            if usage is not None:
                usage.retries += 1
            await asyncio.sleep(max(0.0, wait if not rate_limited else self._paused_until - time.monotonic()))


A = TypeVar("A", bound=Answer)


def with_cost(answer: A, cost: AnswerCost) -> A:
    """``answer`` carrying its price, so the job can log it with the answer (``billed``)."""
    return dataclasses.replace(answer, cost_usd=cost.usd, cost_unknown=cost.unknown, price_table=cost.table)


def billed(answer: Answer) -> dict[str, Any]:
    """What a job logs beside an answer: its tokens and cost, from which ``Usage.from_billed`` rebuilds the
    job's usage exactly after a crash (the answer log, fsync'd, is the record of what was paid for)."""
    return {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens,
            "cached_input_tokens": answer.cached_input_tokens, "cache_write_tokens": answer.cache_write_tokens,
            "cost_usd": answer.cost_usd, "price_table": answer.price_table, "cost_unknown": answer.cost_unknown}


def record_answer(answer: Answer, *, provider: str, model: str, usage: Usage | None, cost: AnswerCost | None) -> None:
    """Count one answer into ``usage`` and the listeners (metrics): a request's, or a batch result's."""
    _notify(provider, model, "ok", answer.input_tokens, answer.output_tokens)
    if usage is not None:
        usage.requests += 1
        usage.input_tokens += answer.input_tokens
        usage.output_tokens += answer.output_tokens
        usage.cached_input_tokens += answer.cached_input_tokens
        usage.cache_write_tokens += answer.cache_write_tokens
    if cost is not None:
        if usage is not None:
            usage.add_cost(cost)
        if cost.usd is not None:
            _notify_cost(provider, model, cost.usd)


def _notify(provider: str, model: str, outcome: str, input_tokens: int, output_tokens: int) -> None:
    for listener in LISTENERS:
        try:
            listener(provider, model, outcome, input_tokens, output_tokens)
        except Exception:  # a metrics problem must never fail a request
            log.exception("LLM request listener failed")


def _notify_cost(provider: str, model: str, usd: float) -> None:
    for listener in COST_LISTENERS:
        try:
            listener(provider, model, usd)
        except Exception:  # a metrics problem must never fail a request
            log.exception("LLM cost listener failed")


_LIMITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str, str], ProviderLimiter]] = (
    weakref.WeakKeyDictionary())


def limiter_for(provider: str, base_url: str, api_key: str, limits: Limits) -> ProviderLimiter:
    """The running loop's limiter for this provider; the key is hashed, never kept or shown."""
    loop = asyncio.get_running_loop()  # asyncio primitives belong to one loop
    key = (provider, base_url, hashlib.sha256(api_key.encode()).hexdigest())
    table = _LIMITERS.setdefault(loop, {})
    limiter = table.get(key)
    if limiter is None or limiter.limits != limits:
        limiter = table[key] = ProviderLimiter(f"{provider} {base_url}", limits)
    return limiter
