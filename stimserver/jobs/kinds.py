"""Job kinds: what a job produces, kept apart from how jobs are run.

A kind turns a target into a ``JobPlan`` when the job is submitted — the config shown
to users, a ``spec`` holding everything the producer needs (prompts, templates,
resolved generator settings), and the number of lines to expect — and later produces
the job's lines from that spec alone. The spec is frozen in ``job.json``, so a job
resumed after a crash or a restart runs against exactly what was submitted.

``produce`` yields one JSON object per output line, in order, starting at line
``run.start`` (the lines already committed). It must produce the same line for the same
number on every run: deterministic where it can be, and checkpointing anything that
is not before yielding lines that depend on it — LLM answers request by request through
``engine.AnswerStream`` (what a rollout kind uses too), anything else whole with
``checkpointed``. ``run.llm`` is the job's ``engine.JobLLM``: its cap, usage and the
provider's shared limiter.
"""
from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import orjson

from ..llm.questions import Completer  # the one completer protocol (LLMClient is one)
from ..schemas.targets import RUN_SETTINGS
from ..store.atomic import write_atomic
from ..store.datasets import Datasets
from ..store.paths import DataPaths
from ..store.records import Records

__all__ = ["JobKind", "JobPlan", "JobSource", "JobRun", "JobFailed", "ResumableFailure", "ConfigProblem", "Completer",
           "checkpointed"]

T = TypeVar("T")


class JobFailed(Exception):
    """Ends a job as failed; the message is shown to the user as the job's ``error``."""


class ConfigProblem(ValueError):
    """The target cannot be run as configured (a 400 at submit time)."""


class ResumableFailure(JobFailed):
    """A failure the user can fix outside the job (a key, a model name, a provider that is down):
    its message gets the hint to POST again, which resumes from the committed lines."""


@dataclass
class JobPlan:
    config: dict[str, Any]      # what the status endpoint shows as the job's config
    spec: dict[str, Any]        # everything ``produce`` needs, frozen at submit time
    expected_lines: int


@dataclass
class JobSource:
    """What ``plan`` may look at: the target and the files around it."""

    paths: DataPaths
    user: str
    repo: str
    target: str
    target_record: dict[str, Any]
    datasets: Datasets

    @property
    def records(self) -> Records:
        """The store's records; plans read prompts and templates only through it."""
        return Records(self.paths)


@dataclass
class JobRun:
    """What ``produce`` gets: the frozen spec, where to resume, and shared services."""

    job_id: int
    job_dir: Path
    spec: dict[str, Any]
    start: int
    llm: Completer
    datasets: Datasets
    data_root: Path
    stopping: Callable[[], bool] = lambda: False  # a cancellation now means "stop" (target deleted), not shutdown

    def checkpoint_path(self, name: str) -> Path:
        return self.job_dir / f"{name}.json"


def _produced(d: Any) -> Any:
    return {k: v for k, v in d.items() if k not in RUN_SETTINGS} if isinstance(d, dict) else d


class JobKind(ABC):
    """One kind of job (``stim``, ``rollout``). Subclasses are stateless."""

    name: ClassVar[str]

    @abstractmethod
    def plan(self, source: JobSource) -> JobPlan:
        """Check the target and freeze what the job needs; raise ``ConfigProblem`` if it cannot run."""

    @abstractmethod
    def produce(self, run: JobRun) -> AsyncIterator[dict[str, Any]]:
        """Yield lines ``run.start, run.start+1, ...`` in order, as JSON objects."""

    def prepare(self, plan: JobPlan, source: JobSource, into: Path) -> None:
        """Write the files a new job reads besides its spec into the empty folder ``into``. Blocking.

        Called at submit, before the job's record is committed; the files are then moved
        into the job's folder. Raise ``ConfigProblem`` if the inputs changed since ``plan``.
        Most kinds read nothing but their spec: they keep this, which writes nothing.
        """
        del plan, source, into

    def same_job(self, record: dict[str, Any], plan: JobPlan) -> bool:
        """Whether the failed job ``record`` is the job ``plan`` asks for: POST then resumes it.

        The run settings (``RUN_SETTINGS``: batch mode, the budget) say how a job runs, not what
        it produces: a job whose target changed only in them is the same job.
        """
        return _produced(record.get("spec")) == _produced(plan.spec) and \
            _produced(record.get("config")) == _produced(plan.config)

    def resumed(self, record: dict[str, Any], plan: JobPlan) -> dict[str, Any]:
        """The record a failed job resumes with (``same_job`` said yes): the target's current run settings."""
        spec, config = record.get("spec") or {}, record.get("config") or {}
        return {**record, "spec": {**spec, **{k: plan.spec[k] for k in RUN_SETTINGS if k in plan.spec}},
                "config": {**config, **{k: plan.config[k] for k in RUN_SETTINGS if k in plan.config}}}

    def max_concurrency(self, spec: dict[str, Any]) -> int:
        """How many LLM requests one job may have in flight."""
        value = spec.get("max_concurrency")
        return value if isinstance(value, int) and value >= 1 else 10


async def checkpointed(run: JobRun, name: str, make: Callable[[], Awaitable[T]]) -> T:
    """``make()``'s result, saved durably as ``<name>.json`` in the job folder on first use.

    A resumed job reads the saved value instead of calling ``make`` again, so lines
    built from it come out the same as before the interruption.
    """
    path = run.checkpoint_path(name)
    try:
        raw = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        pass
    else:
        saved: T = orjson.loads(raw)["value"]  # what ``make`` returned before, as JSON
        return saved
    value = await make()
    await asyncio.to_thread(write_atomic, path, orjson.dumps({"value": value}) + b"\n")
    return value
