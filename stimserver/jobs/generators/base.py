"""What every generator shares: planning from its parsed config, and its question list.

A generator is planned once, when the job is submitted. The stored generator has already
been parsed by ``schemas.generators`` (the same rules as at creation, run again on what
is stored); ``plan`` adds only the facts of the moment — template text read from the
repo, the dataset's size, the persona list — and returns a JSON-able spec frozen in the
job record. At run time a generator either returns its whole list from ``questions`` (the stim kind
saves it as a checkpoint before any of its lines are written), or — an LLM generator,
``streams = True`` — yields its questions in order, batch by batch, from ``stream``, each
batch already durable in the job's answer log (``jobs.engine``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

from ...schemas.generators import MAX_NUMQ, GeneratorBase
from ...schemas.targets import TargetConfig
from ..kinds import ConfigProblem, JobRun, JobSource

__all__ = ["Generator", "PlanContext", "MAX_NUMQ"]


@dataclass
class PlanContext:
    index: int
    gen: GeneratorBase          # the stored generator, parsed
    config: TargetConfig        # the target's effective config, parsed
    source: JobSource
    prompt_u: str               # the teacher prompt as text, for ${prompt_u}

    def problem(self, message: str) -> ConfigProblem:
        return ConfigProblem(f"generators[{self.index}] ({self.gen.type}): {message}")


class Generator(ABC):
    type: ClassVar[str]

    def plan(self, ctx: PlanContext) -> dict[str, Any]:
        """The frozen spec: ``type``, ``numq``, ``rollout_with_conditioned`` plus the generator's own."""
        spec = self.plan_fields(ctx)
        return {"type": self.type, "rollout_with_conditioned": bool(ctx.gen.rollout_with_conditioned), **spec}

    @abstractmethod
    def plan_fields(self, ctx: PlanContext) -> dict[str, Any]:
        """This generator's run-time facts; must include ``numq``."""

    streams: ClassVar[bool] = False

    async def questions(self, spec: dict[str, Any], run: JobRun) -> list[str]:
        """Exactly ``spec['numq']`` questions, or raise ``JobFailed``/``LLMError`` (non-streaming generators)."""
        raise NotImplementedError

    def stream(self, spec: dict[str, Any], run: JobRun, index: int) -> AsyncIterator[list[str]]:
        """The questions in order, in durable batches (``streams = True``); ``index`` names the answer log."""
        raise NotImplementedError
