"""Stimulus generators, by the ``type`` a target's generator names (API.md §8)."""
from __future__ import annotations

from .base import Generator, PlanContext
from .custom import Custom
from .from_dataset import FromDataset
from .hardcoded import Hardcoded
from .oneshot_qs import OneshotQs
from .persona import Persona

__all__ = ["GENERATORS", "Generator", "PlanContext"]

GENERATORS: dict[str, Generator] = {g.type: g for g in (Hardcoded(), FromDataset(), OneshotQs(), Custom(), Persona())}
