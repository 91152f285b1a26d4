"""``from_dataset``: ``numq`` questions sampled without replacement from a named dataset.

The sample is ``random.Random(seed).sample(range(len(dataset)), numq)`` (seed 0 when
none is given), in sampled order — the same questions for the same dataset and seed.
"""
from __future__ import annotations

import asyncio
import random
from typing import Any

from ...store.datasets import DatasetError
from ..kinds import JobFailed, JobRun
from .base import Generator, PlanContext


class FromDataset(Generator):
    type = "from_dataset"

    def plan_fields(self, ctx: PlanContext) -> dict[str, Any]:
        # The model requires dataset and numq; whether the dataset exists (and is big
        # enough) is a fact of the moment: datasets are added and removed by the operator.
        name, numq = str(ctx.gen.dataset), int(ctx.gen.numq or 0)
        try:
            size = len(ctx.source.datasets.load(name))
        except DatasetError as e:
            raise ctx.problem(str(e)) from None
        if numq > size:
            raise ctx.problem(f"numq is {numq} but dataset {name!r} has only {size} questions")
        return {"numq": numq, "dataset": name, "seed": ctx.gen.seed or 0}

    async def questions(self, spec: dict[str, Any], run: JobRun) -> list[str]:
        try:
            items = await asyncio.to_thread(run.datasets.load, spec["dataset"])
        except DatasetError as e:
            raise JobFailed(str(e)) from None
        if spec["numq"] > len(items):
            raise JobFailed(f"dataset {spec['dataset']!r} now has only {len(items)} questions, "
                            f"fewer than numq={spec['numq']}")
        picks = random.Random(spec["seed"]).sample(range(len(items)), spec["numq"])
        return [items[i] for i in picks]
