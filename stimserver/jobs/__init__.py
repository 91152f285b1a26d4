"""Background jobs: kinds (what a job produces), the runner (how jobs run), their state on disk."""
from __future__ import annotations

from .kinds import ConfigProblem, JobFailed, JobKind, JobPlan, JobRun, JobSource, checkpointed
from .runner import JobRunner, default_kinds
from .state import JobRef

__all__ = ["ConfigProblem", "JobFailed", "JobKind", "JobPlan", "JobRef", "JobRun", "JobRunner", "JobSource",
           "checkpointed", "default_kinds"]
