"""What a provider call gives back: an ``Answer`` with its token counts, or an ``LLMError``."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Answer", "LLMError", "TRANSIENT_STATUSES", "RATE_LIMIT_STATUSES", "REJECTED_STATUSES"]

RATE_LIMIT_STATUSES = frozenset({429, 529})
"""Answers that mean "the provider is saturated": they slow every job using it."""
TRANSIENT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
REJECTED_STATUSES = frozenset({400, 413, 422})
"""Answers that refuse this one request (too long, malformed for the model), not the key or the model."""


class LLMError(Exception):
    """A failed completion; the message is meant for the user and never holds a key or traceback.

    ``status`` is the HTTP status when the provider answered; ``transient`` says a retry may
    succeed (connection, timeout, 408/409/429/5xx); ``retry_after`` is the provider's hint.
    ``rejected`` says the provider turned down this request alone (400/413/422, a refusal, a
    content filter, an empty completion): other requests to the same model may well succeed,
    so a rollout keeps going and records the error on that trajectory's line.
    """

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False,
                 retry_after: float | None = None, rejected: bool | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.retry_after = retry_after
        self.rejected = status in REJECTED_STATUSES if rejected is None else rejected


@dataclass(frozen=True)
class Answer:
    """A completion's text and the tokens the provider says it counted (0 when it says nothing).

    Normalised across the two conventions (``wire.anthropic_tokens``, ``wire.openai_tokens``):
    ``input_tokens`` is every prompt token the provider processed, cached or not;
    ``cached_input_tokens`` is the part of it read from the provider's prompt cache and
    ``cache_write_tokens`` the part written to it (Anthropic only), so neither is counted twice.
    """

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = field(default=0, kw_only=True)
    cache_write_tokens: int = field(default=0, kw_only=True)
    # What the answer cost (``prices.answer_cost``), set by whoever priced it (the limiter, a batch):
    # ``cost_usd`` None with ``cost_unknown`` saying why, ``price_table`` the table's version.
    cost_usd: float | None = field(default=None, kw_only=True)
    cost_unknown: str | None = field(default=None, kw_only=True)
    price_table: str | None = field(default=None, kw_only=True)
