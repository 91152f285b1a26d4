"""Domain errors of the storage layer: plain exceptions, no HTTP.

The store says what went wrong in its own terms; ``stimserver.api.errors`` is the one place
that turns each of these into an HTTP status and the JSON error shape.
"""
from __future__ import annotations

__all__ = ["StoreError", "NotFound", "Conflict", "Busy", "InvalidName", "NoSpace"]


class StoreError(Exception):
    """Base of every error the store raises on purpose; ``message`` is meant for users."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(StoreError):
    """The record, file or folder asked for does not exist."""


class Conflict(StoreError):
    """What is asked for contradicts what exists (an immutable record, a held lock)."""


class Busy(StoreError):
    """A lock stayed taken too long; trying again later may succeed."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InvalidName(StoreError):
    """A name that may not become part of a path; ``field`` and ``where`` locate it."""

    def __init__(self, message: str, *, field: str, where: str, problem: str) -> None:
        super().__init__(message)
        self.field = field
        self.where = where
        self.problem = problem


class NoSpace(StoreError):
    """The disk (or quota) is full: nothing was changed."""
