"""The OpenAPI operation of issue 28's rollout cost estimate (``handlers/estimate.py``), and its answer's schema.

Kept beside ``openapi.py``, which merges ``estimate_paths`` and ``estimate_schemas``, and
built with its helpers, so the operation follows the same conventions.
"""
from __future__ import annotations

from typing import Any

from ..llm.estimate import MODES
from ..llm.tokens import ANTHROPIC, APPROXIMATION, TOKENIZER
from .openapi_parts import INT, STR, T, nullable, ok, operation, ref

__all__ = ["estimate_paths", "estimate_schemas"]

NUMBER = {"type": "number"}
BOOL = {"type": "boolean"}
STRINGS = {"type": "array", "items": STR}


def _object(properties: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "required": list(properties), "properties": properties}
    if description:
        schema["description"] = description
    return schema


def estimate_schemas() -> dict[str, Any]:
    usd = nullable({**NUMBER, "minimum": 0})
    mode_cost = _object({
        "usd": usd, "low_usd": usd, "high_usd": usd,
        "unknown": nullable(STR),
    }, "USD: expected (output = max_tokens per request), low (input only), high (output = max_tokens and the "
       "cache at its worst); null with `unknown` saying why when the price table lacks a rate")
    tokens = _object({
        "counted_by": {**STR, "enum": [ANTHROPIC, TOKENIZER, APPROXIMATION]},
        "tokenizer": nullable(STR), "counted_stimuli": INT, "notes": STRINGS,
        "prefix": INT, "prefixes": INT, "min_cacheable_prefix": INT,
        "stimulus_mean": NUMBER, "input_per_request": NUMBER, "input_total": INT,
        "output_per_request": INT, "output_source": {**STR, "enum": ["max_tokens", "default", "unbounded"]},
        "output_total": INT,
    })
    run = nullable(_object({
        "job_id": nullable(INT), "status": nullable(STR), "requests": INT, "answered": INT, "committed": INT,
        "remaining": INT, "spent_usd": usd, "cost_unknown": nullable(STR), "mean_usd_per_request": usd,
        "mean_output_tokens": nullable(NUMBER), "projected_usd": usd,
    }, "the rollout job's spending so far and its projection (null before any rollout job)"))
    answer = _object({
        "repo": STR, "target": STR, "model": STR, "provider": {**STR, "enum": ["anthropic", "openai"]},
        "price_table": STR, "stimuli": INT, "num_traj_per_stimulus": INT, "requests": INT,
        "tokens": tokens,
        "cost": nullable(_object({mode: ref("RolloutEstimateCost") for mode in MODES})),
        "cost_unknown": nullable(STR),
        "mode": {**STR, "enum": list(MODES)}, "batch": BOOL, "cache": STR,
        "estimate_usd": usd, "high_usd": usd, "max_cost_usd": nullable(NUMBER), "over_budget": nullable(BOOL),
        "notes": STRINGS, "stimuli_from": {**STR, "enum": ["rollout", "stim"]},
        "run": run,
    })
    return {"RolloutEstimate": answer, "RolloutEstimateCost": mode_cost}


def estimate_paths() -> dict[str, dict[str, Any]]:
    return {f"{T}/rollout/estimate": {"get": operation(
        "rollout_estimate", "What the target's rollout will cost (and, while it runs, has cost)", "rollout",
        {200: ok("RolloutEstimate")}, errors=(404,),
        description="Requests (stimuli × num_traj_per_stimulus), the input tokens of the shared prefix and of the "
                    "stimuli (counted by Anthropic's count_tokens, the model's local tokenizer, or approximated as "
                    "UTF-8 bytes / 4: counted_by says which), output tokens at max_tokens per request, and the cost "
                    "in USD by the price table without and with prompt caching and batch, each with a low-high "
                    "range; mode, batch, max_cost_usd and over_budget for how the target will run; run with what "
                    "a rollout job has spent and its projection. 400: the stim job is not complete (the requests "
                    "are not known yet), or the target has no model_name. docs/cost.md.")}}
