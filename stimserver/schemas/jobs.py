"""Job answers (API.md §9, §11): a job's status, and one page of its output."""
from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from ..store.jobrecords import JobStatus
from .base import Answer

__all__ = ["JobResponse", "JobPage", "JobUsage"]


class JobUsage(Answer):
    """What a job's LLM requests cost, as the providers reported it (0 for a job that asked no model)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    requests: int = Field(0, ge=0, description="answered LLM requests")
    input_tokens: int = Field(0, ge=0, description="prompt tokens, as the providers counted them")
    output_tokens: int = Field(0, ge=0, description="completion tokens, as the providers counted them")
    retries: int = Field(0, ge=0, description="failed attempts that were tried again")
    rate_limited: int = Field(0, ge=0, description="attempts answered 429 or 529")


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
