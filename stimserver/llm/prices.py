"""What an answer cost in dollars: the price table and the per-answer formula.

The table ships with the package (``llm/prices.json``: list prices in USD per million tokens,
its version and date in the file); ``DATA/prices.json`` (same shape) overrides or adds models,
and its version is then the table's. A model is found by its exact name, else by the longest
listed name it extends with a snapshot suffix only (``claude-sonnet-4-5-20250929`` →
``claude-sonnet-4-5``, ``gpt-4o-2024-08-06`` → ``gpt-4o``; never ``claude-sonnet-4-6`` →
``claude-sonnet-4``): a model the table does not name has no price, and its answers cost
``None`` with the reason, never a guess.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import Answer

__all__ = ["ModelPrice", "PriceTable", "AnswerCost", "PRICES_FILE", "shipped_prices", "load_prices", "answer_cost"]

PRICES_FILE = "prices.json"
PER = 1_000_000
FIELDS = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h", "batch_discount")
_SNAPSHOT = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2}|latest)")


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens; ``None`` where the table gives no price."""

    input: float
    output: float
    cache_read: float | None = None
    cache_write_5m: float | None = None
    cache_write_1h: float | None = None
    batch_discount: float | None = None


@dataclass(frozen=True)
class AnswerCost:
    """One answer's cost (``usd``), or why it has none (``unknown``), and the table's version."""

    usd: float | None
    table: str
    unknown: str | None = None


@dataclass(frozen=True)
class PriceTable:
    version: str
    models: dict[str, ModelPrice] = field(default_factory=dict)

    def lookup(self, model: str) -> ModelPrice | None:
        name = model.lower()
        if name in self.models:
            return self.models[name]
        for listed in sorted(self.models, key=len, reverse=True):
            if name.startswith(listed) and _SNAPSHOT.fullmatch(name[len(listed):]):
                return self.models[listed]
        return None


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{where} is not a price (a number ≥ 0 in USD per million tokens)")
    return float(value)


def parse_prices(raw: Any, source: str) -> tuple[str, dict[str, ModelPrice]]:
    """The version and models of a price file's JSON; ``ValueError`` saying what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: not a JSON object")
    version = raw.get("version")
    if not isinstance(version, str) or not version:
        raise ValueError(f"{source}: \"version\" must be a non-empty string")
    models = raw.get("models")
    if not isinstance(models, dict):
        raise ValueError(f"{source}: \"models\" must be an object of model name → prices")
    parsed: dict[str, ModelPrice] = {}
    for name, prices in models.items():
        where = f"{source}: model {name!r}"
        if not isinstance(prices, dict) or "input" not in prices or "output" not in prices:
            raise ValueError(f"{where} needs at least \"input\" and \"output\"")
        unknown = set(prices) - set(FIELDS)
        if unknown:
            raise ValueError(f"{where} has unknown fields {sorted(unknown)} (known: {', '.join(FIELDS)})")
        parsed[name.lower()] = ModelPrice(**{k: _number(v, f"{where} {k}") for k, v in prices.items()})
    return version, parsed


_SHIPPED: PriceTable | None = None


def shipped_prices() -> PriceTable:
    """The package's own table (read once)."""
    global _SHIPPED
    if _SHIPPED is None:
        text = (resources.files("stimserver") / "llm" / PRICES_FILE).read_text(encoding="utf-8")
        _SHIPPED = PriceTable(*parse_prices(json.loads(text), "stimserver/llm/prices.json"))
    return _SHIPPED


def load_prices(data_dir: Path | None) -> PriceTable:
    """The shipped table, with ``data_dir/prices.json`` over it when that file exists.

    A broken override raises ``ValueError``: prices silently ignored would be a guess.
    """
    table = shipped_prices()
    if data_dir is None:
        return table
    path = data_dir / PRICES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return table
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    version, models = parse_prices(raw, str(path))
    return PriceTable(version, {**table.models, **models})


def answer_cost(table: PriceTable, model: str, answer: Answer, cache_ttl: str = "5m", *,
                batch: bool = False) -> AnswerCost:
    """What ``answer`` cost by ``table``, the provider's token counts as ``errors.Answer`` normalises them.

    Uncached input at ``input``, cache reads at ``cache_read``, cache writes at
    ``cache_write_<ttl>`` (``cache_ttl`` is ``STIMSERVER_ANTHROPIC_CACHE``; "off" writes
    nothing, and counts any write at the 5-minute price), output at ``output``; an answer
    of a batch (``batch``) all of it times ``batch_discount``, as both providers bill batches.
    """
    price = table.lookup(model)
    if price is None:
        return AnswerCost(None, table.version, f"no price for model {model!r} in the price table {table.version} "
                                               f"(add it to DATA/{PRICES_FILE})")
    uncached = answer.input_tokens - answer.cached_input_tokens - answer.cache_write_tokens
    usd = uncached * price.input + answer.output_tokens * price.output
    ttl = "1h" if cache_ttl == "1h" else "5m"
    for tokens, rate, name in ((answer.cached_input_tokens, price.cache_read, "cache_read"),
                               (answer.cache_write_tokens, getattr(price, f"cache_write_{ttl}"), f"cache_write_{ttl}")):
        if tokens:
            if rate is None:
                return AnswerCost(None, table.version, f"no {name} price for model {model!r} in the price table "
                                                       f"{table.version} (add it to DATA/{PRICES_FILE})")
            usd += tokens * rate
    if batch:
        if price.batch_discount is None:
            return AnswerCost(None, table.version, f"no batch_discount for model {model!r} in the price table "
                                                   f"{table.version} (add it to DATA/{PRICES_FILE})")
        usd *= price.batch_discount
    return AnswerCost(usd / PER, table.version)
