"""Answers about a job's output as a whole (issue 11): search matches, samples, statistics."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..store.jobrecords import JobStatus
from .base import Answer

__all__ = ["OutputLine", "SearchAnswer", "SampleAnswer", "TokenStats", "RolloutStats", "StatsAnswer",
           "PerStimulus", "OUTPUT_ANSWERS"]


class OutputLine(Answer):
    line: int = Field(ge=0, description="the line's number (0-based; the offset that pages to it)")
    record: dict[str, Any] = Field(description="the stored line")


class SearchAnswer(Answer):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    matches: list[OutputLine]
    next_offset: int | None = Field(description="the line to continue the scan from; null: the end was reached")
    scanned_lines: int = Field(ge=0)
    scanned_bytes: int = Field(ge=0)
    lines: int = Field(ge=0, description="committed lines when the scan began")
    status: JobStatus


class SampleAnswer(Answer):
    samples: list[OutputLine] = Field(description="min(n, lines) distinct lines, by line number")
    seed: int
    n: int
    lines: int = Field(ge=0, description="committed lines the sample was drawn from")
    status: JobStatus


class TokenStats(Answer):
    count: int = Field(description="lines with a tokens count")
    sum: int
    mean: float
    p50: int
    p90: int
    max: int


class PerStimulus(Answer):
    min: int
    max: int
    mean: float


class RolloutStats(Answer):
    trajectories: int
    stimuli: int
    failed_trajectories: int
    compared_stimuli: int = Field(ge=0, description="stimuli with two or more answered trajectories")
    duplicate_stimuli: int = Field(ge=0, description="of those, stimuli with two identical answers")
    trajectories_per_stimulus: PerStimulus


class StatsAnswer(Answer):
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    lines: int = Field(ge=0)
    bytes: int = Field(ge=0, description="size of the committed lines")
    question_lines: int = Field(ge=0, description="lines with a question")
    distinct_questions: int = Field(ge=0)
    repeated_question_lines: int = Field(ge=0, description="lines whose question an earlier line has")
    by_type: dict[str, int] = Field(description="lines per generator type")
    rollout: RolloutStats | None = Field(None, description="rollout trajectories only")
    tokens: TokenStats | None = Field(None, description="distribution of the lines' tokens; null without any")
    status: JobStatus


OUTPUT_ANSWERS: dict[str, type[BaseModel]] = {
    "OutputLine": OutputLine, "SearchAnswer": SearchAnswer, "SampleAnswer": SampleAnswer, "StatsAnswer": StatsAnswer}
