"""Background jobs: kinds (what a job produces), the runner (how jobs run), record transitions
(``transitions``: claim, resume, orphan, stop) and the scan for work (``scan``). The files
themselves — job records, locks, runner presence — belong to ``stimserver.store``.
"""
from __future__ import annotations

from ..store.jobrecords import ACTIVE, JobRef, JobStatus
from .bake import BakeSettings
from .kinds import ConfigProblem, JobFailed, JobKind, JobPlan, JobRun, JobSource, checkpointed
from .runner import JobRunner, LLMFactory, default_kinds
from .transitions import JobBusy

__all__ = ["ACTIVE", "BakeSettings", "ConfigProblem", "JobBusy", "JobFailed", "JobKind", "JobPlan", "JobRef", "JobRun",
           "JobRunner",
           "JobSource", "JobStatus", "LLMFactory", "checkpointed", "default_kinds"]
