"""``hardcoded``: the target's own ``questions``, the first ``numq`` of them."""
from __future__ import annotations

from typing import Any

from ..kinds import JobRun
from .base import Generator, PlanContext


class Hardcoded(Generator):
    type = "hardcoded"

    def plan_fields(self, ctx: PlanContext) -> dict[str, Any]:
        questions = list(ctx.gen.questions or [])  # the model requires them, and numq <= len
        numq = ctx.gen.numq or len(questions)
        return {"numq": numq, "questions": questions[:numq]}

    async def questions(self, spec: dict[str, Any], run: JobRun) -> list[str]:
        return list(spec["questions"])
