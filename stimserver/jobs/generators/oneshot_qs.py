"""``oneshot_qs``: an LLM writes ``numq`` questions from the teacher prompt.

The prompt is the built-in default template, or the generator's ``template_content`` /
``template_path`` (``string.Template`` with ``${numq}`` and ``${prompt_u}``).
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ...llm import DEFAULT_ONESHOT_TEMPLATE
from ..kinds import JobRun
from .base import Generator, PlanContext
from .llmwrite import plan_llm_fields, stream_chunked

CHUNK = 50  # questions asked for per request


class OneshotQs(Generator):
    type = "oneshot_qs"
    default_template: str | None = DEFAULT_ONESHOT_TEMPLATE

    def plan_fields(self, ctx: PlanContext) -> dict[str, Any]:
        return plan_llm_fields(ctx, default_template=self.default_template)

    streams = True

    def stream(self, spec: dict[str, Any], run: JobRun, index: int) -> AsyncIterator[list[str]]:
        return stream_chunked(spec, run, index, chunk=CHUNK)
