"""Repositories (API.md §5): the create body and the answers."""
from __future__ import annotations

from pydantic import Field

from .base import Answer, ApiModel, Name, Text

__all__ = ["RepoCreate", "RepoResponse", "RepoList", "PaginatedRepoList"]


class RepoCreate(ApiModel):
    repo_name: Name
    base_model: Text | None = Field(None, description="default Qwen/Qwen3-32B; immutable")


class RepoResponse(Answer):
    repo_name: str
    base_model: str


class RepoList(Answer):
    repos: list[str]


class PaginatedRepoList(Answer):
    repos: list[RepoResponse]
    offset: int = Field(ge=0)
    limit: int = Field(ge=1)
    has_more: bool
    total: int | None = Field(ge=0)

