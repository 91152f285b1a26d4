"""What a rollout will cost, before it runs and while it runs: pure functions over counts and prices.

From the input tokens of the rollout's requests (``llm.tokens``), the model's prices
(``llm.prices``) and the target's rollout fields, ``estimate`` gives the requests, the tokens
and the cost in four modes, each priced by ``prices.answer_cost`` — the very formula that
prices every answer a rollout gets — on the mode's token totals:

* ``standard``: every input token at ``input``, every output token at ``output``;
* ``cached``: the shared prefix read from the prompt cache. Anthropic: the first request of
  each prefix writes it (``cache_write_5m`` or ``cache_write_1h`` per
  ``STIMSERVER_ANTHROPIC_CACHE``; ``off`` prices what caching would cost at the 5-minute
  price), the others read it (``cache_read``); a prefix under the model's minimum cacheable
  length (``min_cacheable``: 1,024 tokens for most models, 2,048 or 4,096 for some) is never
  cached. OpenAI-compatible: after the first request, a prefix of at least 1,024 tokens is read
  at ``cache_read``, rounded down to a multiple of 128 tokens, as OpenAI caches;
* ``batch`` and ``cached_batch``: the same, times the model's ``batch_discount``.

Output is ``max_tokens`` per request (the issue's rule: an upper bound on what a request can
cost): the target's, else what the rollout sends — Anthropic requires one and gets
``wire.DEFAULT_MAX_TOKENS``; an OpenAI-compatible server gets none and is unbounded, so the
estimate uses ``UNBOUNDED_OUTPUT`` and says so. Each mode has a range: ``low_usd`` is its input
alone (no output at all: the least the rollout can cost), ``usd`` the expected cost and
``high_usd`` the most: every request writes ``max_tokens`` and, for caching, every request of
the first wave writes the cache (up to ``max_concurrency`` requests start before the first
answer; in a batch the provider picks its own concurrency, so none is assumed to read it), and
for OpenAI none reads it (its caching is best effort). A model without a price, or a mode
without the rate it needs, has ``null`` costs with the reason, never a guess.

While it runs, ``run_figures`` adds what was spent and a projection: spent + the remaining
requests × the mean cost of the requests answered so far.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .errors import Answer
from .limiter import Usage
from .prices import AnswerCost, PriceTable, answer_cost
from .tokens import TokenCounts
from .wire import DEFAULT_MAX_TOKENS

__all__ = ["MODES", "RolloutPlan", "estimate", "run_figures", "min_cacheable", "output_per_request",
           "UNBOUNDED_OUTPUT", "OPENAI_CACHE_MIN", "OPENAI_CACHE_STEP", "DEFAULT_MIN_CACHEABLE"]

Mode = Literal["standard", "cached", "batch", "cached_batch"]
MODES: tuple[Mode, ...] = ("standard", "cached", "batch", "cached_batch")

DEFAULT_MIN_CACHEABLE = 1024
# Anthropic's minimum cacheable prompt length by model family (longest matching name wins;
# anything else: DEFAULT_MIN_CACHEABLE), from its prompt-caching documentation.
ANTHROPIC_MIN_CACHEABLE = {
    "claude-opus-4-6": 4096, "claude-opus-4-5": 4096, "claude-haiku-4-5": 4096,
    "claude-sonnet-4-6": 2048, "claude-3-5-haiku": 2048, "claude-3-haiku": 2048,
}
OPENAI_CACHE_MIN = 1024
OPENAI_CACHE_STEP = 128
UNBOUNDED_OUTPUT = DEFAULT_MAX_TOKENS
"""Output tokens per request assumed for an OpenAI-compatible model with no max_tokens (it has no bound)."""


@dataclass(frozen=True)
class RolloutPlan:
    """What the rollout will send: the target's rollout fields and the server's cache setting."""

    model: str
    provider: Literal["anthropic", "openai"]
    num_traj_per_stimulus: int
    max_tokens: int | None
    max_concurrency: int
    cache: str = "5m"  # STIMSERVER_ANTHROPIC_CACHE: 5m, 1h or off
    batch: bool = False
    max_cost_usd: float | None = None

    @property
    def caching(self) -> bool:
        """Whether the run caches: Anthropic unless the setting is off; OpenAI caches by itself."""
        return self.provider == "openai" or self.cache != "off"

    @property
    def mode(self) -> Mode:
        """The mode the target will run in."""
        if self.batch:
            return "cached_batch" if self.caching else "batch"
        return "cached" if self.caching else "standard"


def min_cacheable(model: str, provider: str) -> int:
    """The shortest prefix the provider caches for ``model``, in tokens."""
    if provider != "anthropic":
        return OPENAI_CACHE_MIN
    name = model.lower()
    for family in sorted(ANTHROPIC_MIN_CACHEABLE, key=len, reverse=True):
        if name.startswith(family):
            return ANTHROPIC_MIN_CACHEABLE[family]
    return DEFAULT_MIN_CACHEABLE


def output_per_request(plan: RolloutPlan) -> tuple[int, str]:
    """(output tokens per request, where the number comes from: ``max_tokens``, ``default`` or ``unbounded``)."""
    if plan.max_tokens is not None:
        return plan.max_tokens, "max_tokens"
    if plan.provider == "anthropic":
        return DEFAULT_MAX_TOKENS, "default"
    return UNBOUNDED_OUTPUT, "unbounded"


@dataclass(frozen=True)
class _Cache:
    """Prompt tokens, over all requests, read from (``read``) and written to (``written``) the cache."""

    read: float = 0.0
    written: float = 0.0


def _cache(counts: TokenCounts, plan: RolloutPlan, *, worst: bool, batch: bool) -> _Cache:
    """The cache's part of the input: expected (``worst`` False) or at its worst (see the module docstring)."""
    k, minimum = plan.num_traj_per_stimulus, min_cacheable(plan.model, plan.provider)
    read = written = 0.0
    for stimuli, prefix in counts.prefixes:
        requests = stimuli * k
        if prefix < minimum or requests <= 0:
            continue
        if plan.provider == "anthropic":
            if not worst:
                writes = min(1.0, requests)  # the first request writes, the others read
            elif batch:
                writes = requests  # the provider's own concurrency: none is assumed to read
            else:
                writes = min(float(plan.max_concurrency), requests)  # the first wave starts before any answer
            written += prefix * writes
            read += prefix * (requests - writes)
        elif not worst:
            read += (prefix - prefix % OPENAI_CACHE_STEP) * (requests - min(1.0, requests))
    return _Cache(read, written)


def _priced(table: PriceTable, plan: RolloutPlan, input_tokens: float, output_tokens: float, cache: _Cache,
            batch: bool) -> AnswerCost:
    answer = Answer("", round(input_tokens), round(output_tokens), cached_input_tokens=round(cache.read),
                    cache_write_tokens=round(cache.written))
    return answer_cost(table, plan.model, answer, plan.cache, batch=batch)


def _usd(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _mode_cost(table: PriceTable, plan: RolloutPlan, input_tokens: float, output_tokens: float, counts: TokenCounts,
               mode: Mode) -> dict[str, Any]:
    batch = mode in ("batch", "cached_batch")
    cached = mode in ("cached", "cached_batch")
    expected = _cache(counts, plan, worst=False, batch=batch) if cached else _Cache()
    worst = _cache(counts, plan, worst=True, batch=batch) if cached else _Cache()
    usd = _priced(table, plan, input_tokens, output_tokens, expected, batch)
    low = _priced(table, plan, input_tokens, 0, expected, batch)
    high = _priced(table, plan, input_tokens, output_tokens, worst, batch)
    return {"usd": _usd(usd.usd), "low_usd": _usd(low.usd), "high_usd": _usd(high.usd),
            "unknown": usd.unknown or low.unknown or high.unknown}


def estimate(counts: TokenCounts, plan: RolloutPlan, table: PriceTable) -> dict[str, Any]:
    """The rollout's requests, tokens and cost in each mode (module docstring), as the estimate answers them."""
    k = plan.num_traj_per_stimulus
    requests = counts.stimuli * k
    prefix_tokens = sum(stimuli * tokens for stimuli, tokens in counts.prefixes) * k
    input_tokens = prefix_tokens + counts.stimulus_tokens * k
    output, source = output_per_request(plan)
    output_tokens = requests * output
    main_prefix = counts.prefixes[0][1] if counts.prefixes else 0
    minimum = min_cacheable(plan.model, plan.provider)
    notes: list[str] = []
    if source == "unbounded":
        notes.append(f"max_tokens is not set and an OpenAI-compatible server has no bound on output: "
                     f"{UNBOUNDED_OUTPUT} output tokens per request are assumed")
    elif source == "default":
        notes.append(f"max_tokens is not set: the rollout sends the max_tokens Anthropic requires as "
                     f"{DEFAULT_MAX_TOKENS}")
    if counts.prefixes and main_prefix < minimum:
        notes.append(f"the shared prefix ({main_prefix} tokens) is under the {minimum}-token minimum the provider "
                     "caches: it is never cached, so caching saves nothing")
    if plan.provider == "anthropic" and plan.cache == "off":
        notes.append("STIMSERVER_ANTHROPIC_CACHE is off: the rollout marks no prefix for caching; the cached modes "
                     "show what caching would cost (writes at the 5-minute price)")
    price = table.lookup(plan.model)
    costs: dict[str, Any] | None = None
    unknown: str | None = None
    if price is None:
        unknown = answer_cost(table, plan.model, Answer("")).unknown
    else:
        costs = {mode: _mode_cost(table, plan, input_tokens, output_tokens, counts, mode) for mode in MODES}
    chosen = costs[plan.mode] if costs else None
    high = chosen["high_usd"] if chosen else None
    over: bool | None = False
    if plan.max_cost_usd is not None:
        over = None if high is None else high > plan.max_cost_usd
    return {
        "model": plan.model, "provider": plan.provider, "price_table": table.version,
        "stimuli": counts.stimuli, "num_traj_per_stimulus": k, "requests": requests,
        "tokens": {
            "counted_by": counts.counted_by, "tokenizer": counts.tokenizer, "counted_stimuli": counts.counted,
            "notes": list(counts.notes),
            "prefix": main_prefix, "prefixes": len(counts.prefixes), "min_cacheable_prefix": minimum,
            "stimulus_mean": round(counts.stimulus_tokens / counts.stimuli, 1) if counts.stimuli else 0.0,
            "input_per_request": round(input_tokens / requests, 1) if requests else 0.0,
            "input_total": round(input_tokens),
            "output_per_request": output, "output_source": source, "output_total": output_tokens,
        },
        "cost": costs, "cost_unknown": unknown,
        "mode": plan.mode, "batch": plan.batch, "cache": plan.cache,
        "estimate_usd": chosen["usd"] if chosen else None, "high_usd": high,
        "max_cost_usd": plan.max_cost_usd, "over_budget": over,
        "notes": notes,
    }


def run_figures(job: dict[str, Any], committed: int, usage: dict[str, Any] | None, requests: int) -> dict[str, Any]:
    """What a rollout job has spent and where it is heading, from its record, committed lines and usage file.

    ``answered`` counts the requests the provider answered (the usage file's ``requests``);
    ``remaining`` = the job's expected requests − answered: the spending and the count come from the
    same file, which the job saves a second behind its answer log (committed lines, used only when
    the file counts no request, would run ahead of the spending and project too little).
    ``projected_usd`` = ``spent_usd`` + ``remaining`` × the mean cost per answered request;
    null until a request has been answered, or when the spending is unknown (``cost_unknown``).
    """
    counts = Usage.from_dict(usage or {})
    expected = job.get("expected_lines")
    total = expected if isinstance(expected, int) and not isinstance(expected, bool) else requests
    answered = counts.requests
    remaining = max(0, total - (answered or committed))
    spent = None if counts.cost_unknown else counts.cost_usd
    mean = spent / answered if spent is not None and answered else None
    projected = spent + remaining * mean if spent is not None and mean is not None else None
    return {
        "job_id": job.get("job_id"), "status": job.get("status"), "requests": total, "answered": answered,
        "committed": committed, "remaining": remaining, "spent_usd": _usd(spent),
        "cost_unknown": counts.cost_unknown,
        "mean_usd_per_request": None if mean is None else round(mean, 9),
        "mean_output_tokens": round(counts.output_tokens / answered, 1) if answered else None,
        "projected_usd": _usd(projected),
    }
