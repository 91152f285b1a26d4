"""What every repo-scoped handler needs first: who asks, and which records exist."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..api.errors import NotFound
from ..api.keys import IDENTITY, RECORDS
from ..store.paths import check_name
from ..store.records import Records


@dataclass
class RepoContext:
    user: str
    repo: str
    records: Records


def repo_context(request: web.Request) -> RepoContext:
    """The caller's user and the repo named in the path; 404 if the repo is not theirs."""
    user = request[IDENTITY].user
    repo = check_name(request.match_info["repo_name"], "repo_name")
    records = request.app[RECORDS]
    if records.repo(user, repo) is None:
        raise NotFound(f"repo '{repo}' not found")
    return RepoContext(user, repo, records)


def target_context(request: web.Request) -> tuple[RepoContext, str, dict[str, Any]]:
    """Repo context plus the target named in the path and its record; 404 if absent."""
    ctx = repo_context(request)
    target = check_name(request.match_info["target_name"], "target_name")
    record = ctx.records.target(ctx.user, ctx.repo, target)
    if record is None:
        raise NotFound(f"target '{target}' not found in repo '{ctx.repo}'")
    return ctx, target, record
