"""The cost estimate of a target's rollout, before it runs and while it runs (docs/cost.md, "Estimate").

    GET /v1/repo/{repo}/targets/{target}/rollout/estimate

The stimuli are the rollout's own frozen copy when a rollout job exists (what it sends),
else the target's complete stim output; without either the rollout's requests are not
known yet (400), nor without a ``model_name`` (400). The stimuli are read in a thread
(``llm.tokens.scan_stimuli``), their tokens counted (``llm.tokens.count_tokens``: over the
network for Anthropic models, within a time limit, else locally), and priced by
``llm.estimate``; a running or finished rollout adds what it has spent (``run``).

Counts are kept per stimuli file (its identity) and model for ``COUNTS_KEPT`` estimates, so
asking again while a rollout runs costs no new count requests; an approximation that stood in
for a failed exact count is not kept. ``target_estimate`` is also what ``stimserver estimate``
runs.
"""
from __future__ import annotations

import asyncio
import os
from collections import OrderedDict
from typing import Any

from aiohttp import web

from ..api.errors import BadRequest, NotFound
from ..api.jsonio import json_response
from ..api.keys import IDENTITY, RECORDS, SETTINGS
from ..config import Settings
from ..jobs import ConfigProblem, JobStatus
from ..jobs.rollout import NO_MODEL, STIM_NOT_COMPLETE
from ..jobs.rollout import _request as trajectory_request  # the messages and tools a trajectory sends
from ..jobs.stim import parse_config
from ..llm.estimate import RolloutPlan, estimate, run_figures
from ..llm.providers import LLMConfig
from ..llm.tokens import Scan, TokenCounts, count_tokens, scan_stimuli
from ..store.answers import read_usage
from ..store.frozen import FROZEN_DATA, FROZEN_INDEX
from ..store.output import DATA_NAME, INDEX_NAME, line_count
from ..store.paths import check_name
from ..store.records import Records

__all__ = ["routes", "target_estimate", "COUNTS_KEPT"]

routes = web.RouteTableDef()

COUNTS_KEPT = 64
_COUNTS: OrderedDict[tuple[Any, ...], TokenCounts] = OrderedDict()


def _identity(path: os.PathLike[str]) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _read(records: Records, user: str, repo: str, target: str, frozen: bool,
          known: set[tuple[Any, ...]], model: str) -> tuple[tuple[Any, ...] | None, Scan | None, int,
                                                           dict[str, Any] | None]:
    """(the stimuli file's key, its scan unless its counts are kept, the rollout's lines, its usage). Blocking."""
    rollout_dir = records.paths.job_dir(user, repo, target, "rollout")
    if frozen:
        folder, names = rollout_dir, (FROZEN_DATA, FROZEN_INDEX)
    else:
        folder, names = records.paths.job_dir(user, repo, target, "stim"), (DATA_NAME, INDEX_NAME)
    identity = _identity(folder / names[0])
    key = None if identity is None else (str(folder), *identity, model)
    scan = None if key in known else scan_stimuli(folder, *names, trajectory_request)
    return key, scan, line_count(rollout_dir), read_usage(rollout_dir)


def _has_frozen(records: Records, user: str, repo: str, target: str) -> bool:
    folder = records.paths.job_dir(user, repo, target, "rollout")
    return (folder / FROZEN_INDEX).is_file() and (folder / FROZEN_DATA).is_file()


async def target_estimate(records: Records, settings: Settings, user: str, repo: str, target: str, *,
                          llm: LLMConfig | None = None) -> dict[str, Any]:
    """The estimate of ``target``'s rollout; ``NotFound`` / ``BadRequest`` as the endpoint answers them."""
    if records.repo(user, repo) is None:
        raise NotFound(f"repo '{repo}' not found")
    record = records.target(user, repo, target)
    if record is None:
        raise NotFound(f"target '{target}' not found in repo '{repo}'")
    raw = record.get("config") or {}
    job = records.job(user, repo, target, "rollout")
    frozen = job is not None and await asyncio.to_thread(_has_frozen, records, user, repo, target)
    if not frozen:
        stim = records.job(user, repo, target, "stim")
        if stim is None:
            raise BadRequest(f"{STIM_NOT_COMPLETE}: target '{target}' has no stim job, so the rollout's requests are "
                             f"not known yet; POST /v1/repo/{repo}/targets/{target}/stim first")
        if stim.get("status") != JobStatus.COMPLETE:
            raise BadRequest(f"{STIM_NOT_COMPLETE}: the stim job of target '{target}' is {stim.get('status')}, so "
                             "the rollout's requests are not known yet")
    if not raw.get("model_name"):
        raise BadRequest(f"{NO_MODEL}: target '{target}' has no model_name, so nothing can be priced")
    try:
        config = parse_config(raw)
    except ConfigProblem as e:
        raise BadRequest(str(e)) from None
    model = str(config.model_name)
    if llm is None:
        try:
            llm = await asyncio.to_thread(LLMConfig.from_settings, settings)
        except ValueError as e:  # a broken DATA/prices.json
            raise BadRequest(f"the price table cannot be read: {e}") from None
    key, scan, committed, usage = await asyncio.to_thread(_read, records, user, repo, target, frozen,
                                                          set(_COUNTS), model)
    counts = _COUNTS.get(key) if key is not None else None
    if counts is None:
        if scan is None:
            raise BadRequest(f"{STIM_NOT_COMPLETE}: the stimuli of target '{target}' are gone (re-run or deleted "
                             "meanwhile); ask again")
        counts = await count_tokens(scan, model, llm, models_dirs=settings.models_dirs)
        if key is not None and not counts.fallback:
            _COUNTS[key] = counts
            while len(_COUNTS) > COUNTS_KEPT:
                _COUNTS.popitem(last=False)
    elif key is not None:
        _COUNTS.move_to_end(key)
    provider = llm.provider_for(model)
    plan = RolloutPlan(model=model, provider=provider, num_traj_per_stimulus=config.num_traj_per_stimulus,
                       max_tokens=config.max_tokens, max_concurrency=config.max_concurrency,
                       cache=llm.anthropic_cache, batch=bool(raw.get("batch", False)),
                       max_cost_usd=_budget(raw.get("max_cost_usd")))
    answer = {"repo": repo, "target": target, **estimate(counts, plan, llm.prices),
              "stimuli_from": "rollout" if frozen else "stim"}
    answer["run"] = None if job is None else run_figures(job, committed, usage, answer["requests"])
    return answer


def _budget(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


@routes.get("/v1/repo/{repo_name}/targets/{target_name}/rollout/estimate")
async def rollout_estimate(request: web.Request) -> web.Response:
    user = request[IDENTITY].user
    repo = check_name(request.match_info["repo_name"], "repo_name")
    target = check_name(request.match_info["target_name"], "target_name")
    return json_response(await target_estimate(request.app[RECORDS], request.app[SETTINGS], user, repo, target))
