"""``persona``: questions written in the voice of personas from a shipped list.

The personas are shuffled with ``random.Random(seed)`` (seed 0 by default); request
``i`` asks for up to ``CHUNK`` questions as persona ``i`` of that order, cycling when
there are more requests than personas. Templates may use ``${persona}``.
"""
from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

from ...llm import DEFAULT_PERSONA_TEMPLATE
from ...store.datasets import DatasetError, load_personas
from ..kinds import JobFailed, JobRun
from .base import Generator, PlanContext
from .llmwrite import plan_llm_fields, stream_chunked

CHUNK = 5  # questions per persona and request


class Persona(Generator):
    type = "persona"

    def plan_fields(self, ctx: PlanContext) -> dict[str, Any]:
        fields = plan_llm_fields(ctx, default_template=DEFAULT_PERSONA_TEMPLATE)
        seed = ctx.gen.seed or 0
        try:
            personas = load_personas(ctx.source.paths.root)
        except DatasetError as e:
            raise ctx.problem(str(e)) from None
        return {**fields, "seed": seed, "personas": personas}

    streams = True

    def stream(self, spec: dict[str, Any], run: JobRun, index: int) -> AsyncIterator[list[str]]:
        personas = list(spec["personas"])
        if not personas:
            raise JobFailed("the persona list is empty")
        random.Random(spec["seed"]).shuffle(personas)
        return stream_chunked(spec, run, index, chunk=CHUNK,
                              template_vars=lambda i: {"persona": personas[i % len(personas)]})
