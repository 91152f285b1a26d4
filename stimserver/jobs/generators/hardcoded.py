"""``hardcoded``: the target's own ``questions``, the first ``numq`` of them."""
from __future__ import annotations

from typing import Any

from ..kinds import JobRun
from .base import Generator, PlanContext


class Hardcoded(Generator):
    type = "hardcoded"

    def plan_fields(self, ctx: PlanContext) -> dict[str, Any]:
        questions = ctx.field("questions")
        if not isinstance(questions, list) or not questions:
            raise ctx.problem("questions must be a non-empty list of strings")
        for i, q in enumerate(questions):
            if not isinstance(q, str) or not q.strip():
                raise ctx.problem(f"questions[{i}] must be a non-empty string")
        numq = ctx.numq(default=len(questions))
        if numq > len(questions):
            raise ctx.problem(f"numq is {numq} but there are only {len(questions)} questions "
                              "(stimserver never repeats questions to pad the output)")
        return {"numq": numq, "questions": questions[:numq]}

    async def questions(self, spec: dict[str, Any], run: JobRun) -> list[str]:
        return list(spec["questions"])
