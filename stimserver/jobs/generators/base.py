"""What every generator shares: checking its config at submit time, and its question list.

A generator is planned once, when the job is submitted: ``plan`` checks the
generator's fields (naming the bad one), resolves defaults, reads any template file,
and returns a JSON-able spec that is frozen in the job record. At run time
``questions`` turns that spec into exactly ``numq`` questions; the stim kind saves the
list as a checkpoint before any of its lines are written.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from ..kinds import ConfigProblem, JobRun, JobSource

__all__ = ["Generator", "PlanContext", "MAX_NUMQ"]

MAX_NUMQ = 1_000_000


@dataclass
class PlanContext:
    index: int
    gen: dict[str, Any]         # the generator as configured
    config: dict[str, Any]      # the target's effective config
    source: JobSource
    prompt_u: str               # the teacher prompt as text, for ${prompt_u}

    def problem(self, message: str) -> ConfigProblem:
        return ConfigProblem(f"generators[{self.index}] ({self.gen.get('type')}): {message}")

    def field(self, name: str) -> Any:
        return self.gen.get(name)

    def int_field(self, name: str, *, default: int | None = None, lo: int | None = None,
                  hi: int | None = None) -> int | None:
        value = self.gen.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.problem(f"{name} must be an integer, got {value!r}")
        if lo is not None and value < lo:
            raise self.problem(f"{name} must be at least {lo}, got {value}")
        if hi is not None and value > hi:
            raise self.problem(f"{name} must be at most {hi}, got {value}")
        return value

    def numq(self, default: int | None = None) -> int:
        value = self.int_field("numq", default=default, lo=1, hi=MAX_NUMQ)
        if value is None:
            raise self.problem("numq is required (how many questions to write)")
        return value


class Generator(ABC):
    type: ClassVar[str]

    def plan(self, ctx: PlanContext) -> dict[str, Any]:
        """The frozen spec: ``type``, ``numq``, ``rollout_with_conditioned`` plus the generator's own."""
        override = ctx.field("rollout_with_conditioned")
        if override is not None and not isinstance(override, bool):
            raise ctx.problem(f"rollout_with_conditioned must be true or false, got {override!r}")
        spec = self.plan_fields(ctx)
        return {"type": self.type, "rollout_with_conditioned": bool(override), **spec}

    @abstractmethod
    def plan_fields(self, ctx: PlanContext) -> dict[str, Any]:
        """Check this generator's fields; must include ``numq``."""

    @abstractmethod
    async def questions(self, spec: dict[str, Any], run: JobRun) -> list[str]:
        """Exactly ``spec['numq']`` questions, or raise ``JobFailed``/``LLMError``."""
