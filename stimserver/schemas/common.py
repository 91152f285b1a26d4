"""Answers shared by every resource: errors, batch results, deletions, health."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Answer

__all__ = ["Error", "ValidationDetail", "BatchResult", "DeleteResponse", "Health"]

ERROR_CODES = ("INVALID_INPUT, UNAUTHORIZED, PERMISSION_DENIED, RESOURCE_NOT_FOUND, METHOD_NOT_ALLOWED, "
               "RESOURCE_CONFLICT, PAYLOAD_TOO_LARGE, VALIDATION_ERROR, INTERNAL_ERROR, INSUFFICIENT_STORAGE")


class ValidationDetail(Answer):
    loc: list[str | int] = Field(description="where: ['body', field, ...], ['query', name], ['path', name] or "
                                             "['header', name]")
    msg: str
    type: str


class Error(Answer):
    message: str
    code: str = Field(description=ERROR_CODES)
    detail: list[ValidationDetail] | None = Field(None, description="422 only: each bad field")


class BatchResult(Answer):
    created: list[str]
    failed: dict[str, str] = Field(description="name → why it was not created")


class DeleteResponse(Answer):
    message: str


class Health(Answer):
    status: Literal["healthy", "degraded"]
    api: str
    version: str
