"""Job answers (API.md §9, §11): a job's status, and one page of its output."""
from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from ..store.jobrecords import JobStatus
from .base import Answer

__all__ = ["JobResponse", "JobPage", "JobUsage", "RolloutConfig", "RolloutResponse", "RolloutGetOutputResponse"]


class JobUsage(Answer):
    """What a job's LLM requests cost, as the providers reported it (0 for a job that asked no model)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    requests: int = Field(0, ge=0, description="answered LLM requests")
    input_tokens: int = Field(0, ge=0, description="prompt tokens, as the providers counted them, cached ones "
                                                   "included (Anthropic's cache reads and writes added back)")
    output_tokens: int = Field(0, ge=0, description="completion tokens, as the providers counted them")
    retries: int = Field(0, ge=0, description="failed attempts that were tried again")
    rate_limited: int = Field(0, ge=0, description="attempts answered 429 or 529")
    cached_input_tokens: int = Field(0, ge=0, description="the part of input_tokens read from the provider's "
                                                          "prompt cache (Anthropic cache_read_input_tokens, OpenAI "
                                                          "prompt_tokens_details.cached_tokens)")
    cache_write_tokens: int = Field(0, ge=0, description="the part of input_tokens written to the prompt cache "
                                                         "(Anthropic cache_creation_input_tokens; 0 for OpenAI)")
    cost_usd: float | None = Field(0.0, ge=0, description="the answers' cost in USD by the price table (docs/jobs.md, "
                                                        "'Cost'); null when some answer's model has no price, "
                                                        "cost_unknown saying why")
    price_table: str | None = Field(None, description="the price table version(s) the cost was computed with; "
                                                      "null for a job that asked no model")
    cost_unknown: str | None = Field(None, description="why cost_usd is null; null when it is not")


class JobResponse(Answer):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    status: JobStatus
    lines: int | None = Field(None, ge=0, description="committed output lines; null if never run")
    config: dict[str, Any] | None = Field(None, description="the job's parameters")
    error: str | None = Field(None, description="why the job failed")
    job_id: int | None = None
    progress_percent: float | None = Field(None, ge=0, le=100)
    usage: JobUsage | None = Field(None, description="LLM usage of the job; null if never run")


class JobPage(JobResponse):
    output: list[dict[str, Any]] = Field(description="lines [offset, offset + limit) of the output, one object each")
    offset: int = Field(ge=0)
    limit: int = Field(ge=1, description="at most max_page_size")
    has_more: bool


class RolloutConfig(Answer):
    """What a rollout job was submitted with (the target's rollout fields, frozen) and what it read.

    Every field is optional in the document: a rollout record written by another tool (an
    import) may hold another config, and it is shown as it is.
    """

    model_name: str | None = None
    num_traj_per_stimulus: int | None = Field(None, ge=1)
    temperature: float | None = None
    max_tokens: int | None = None
    max_concurrency: int | None = Field(None, ge=1)
    extra_kwargs: dict[str, Any] | None = None
    stim_job_id: int | None = Field(None, description="the stim job whose output the rollout froze and reads")


class RolloutResponse(JobResponse):
    """JobResponse plus what a rollout adds (API.md §12)."""

    config: RolloutConfig | None = Field(  # type: ignore[assignment]  # a narrower shape of the same field
        None, description="the rollout's parameters; null if never run")
    total_expected: int | None = Field(None, ge=0, description="stimuli × num_traj_per_stimulus; null if never run")
    failed_trajectories: int | None = Field(
        None, ge=0, description="committed lines whose request the provider rejected (response null, error set)")
    stim_outdated: bool | None = Field(
        None, description="true when the target's stim job is no longer the one the rollout read (re-run or "
                          "deleted since); the rollout keeps its own frozen stimuli. null if never run")
    duplicate_stimuli: int | None = Field(
        None, ge=0, description="committed stimuli with two identical trajectories (at a temperature above 0, a "
                                "sign that the model server does not sample); null if never run")
    warning: str | None = Field(
        None, description="set when every stimulus compared got identical trajectories at a temperature above 0")


class RolloutGetOutputResponse(RolloutResponse):
    output: list[dict[str, Any]] = Field(description="trajectories [offset, offset + limit), one object each")
    offset: int = Field(ge=0)
    limit: int = Field(ge=1, description="at most max_page_size")
    has_more: bool
