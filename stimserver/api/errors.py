"""The one place where exceptions become responses.

Every error leaves the server as ``{"message": str, "code": str}``; validation errors
add ``"detail": [{"loc": [...], "msg": str, "type": str}]`` naming each bad field
(API.md §2). Handlers raise ``ApiError`` subclasses; aiohttp's own HTTP exceptions
(unknown route, wrong method) and anything unexpected are rendered the same way, so
no client ever sees HTML or a traceback.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from ..store import errors as store_errors

__all__ = [
    "ApiError", "BadRequest", "Unauthorized", "Forbidden", "NotFound", "Conflict",
    "ValidationError", "PayloadTooLarge", "ServiceBusy", "InsufficientStorage", "error_body", "error_middleware",
    "from_store_error", "error_response",
]

log = logging.getLogger("stimserver.errors")


class ApiError(Exception):
    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, message: str, *, detail: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = headers or {}


class BadRequest(ApiError):
    status, code = 400, "INVALID_INPUT"


class Unauthorized(ApiError):
    status, code = 401, "UNAUTHORIZED"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="stimserver"'})


class Forbidden(ApiError):
    status, code = 403, "PERMISSION_DENIED"


class NotFound(ApiError):
    status, code = 404, "RESOURCE_NOT_FOUND"


class Conflict(ApiError):
    """409. ``x-should-retry: false`` stops the official client from retrying it (API.md §10.3)."""

    status, code = 409, "RESOURCE_CONFLICT"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"x-should-retry": "false"})


class ValidationError(ApiError):
    status, code = 422, "VALIDATION_ERROR"


class PayloadTooLarge(ApiError):
    status, code = 413, "PAYLOAD_TOO_LARGE"


class ServiceBusy(ApiError):
    """503 with ``Retry-After``: the official client retries it by itself."""

    status, code = 503, "SERVICE_UNAVAILABLE"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after)))})


class InsufficientStorage(ApiError):
    """507: the disk is full. ``x-should-retry: false``: retrying at once cannot help (API.md §10.3)."""

    status, code = 507, "INSUFFICIENT_STORAGE"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"x-should-retry": "false"})


def from_store_error(exc: store_errors.StoreError) -> ApiError:
    """The one mapping of the store's domain errors onto HTTP."""
    if isinstance(exc, store_errors.InvalidName):
        return ValidationError(exc.message, detail=[{"loc": [exc.where, exc.field], "msg": exc.problem,
                                                     "type": "value_error.name"}])
    if isinstance(exc, store_errors.NotFound):
        return NotFound(exc.message)
    if isinstance(exc, store_errors.Conflict):
        return Conflict(exc.message)
    if isinstance(exc, store_errors.Busy):
        return ServiceBusy(exc.message, exc.retry_after)
    if isinstance(exc, store_errors.NoSpace):
        return InsufficientStorage(exc.message)
    return ApiError(exc.message)


def error_body(status: int, code: str, message: str, detail: list[dict[str, Any]] | None = None) -> bytes:
    body: dict[str, Any] = {"message": message, "code": code}
    if detail is not None:
        body["detail"] = detail
    return orjson.dumps(body)


_HTTP_CODES = {
    400: "INVALID_INPUT", 401: "UNAUTHORIZED", 403: "PERMISSION_DENIED", 404: "RESOURCE_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED", 409: "RESOURCE_CONFLICT", 413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE", 422: "VALIDATION_ERROR",
}


def _json_error(status: int, code: str, message: str, detail: Any = None,
                headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=error_body(status, code, message, detail),
                        content_type="application/json", headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _allowed_methods(request: web.Request, given: str) -> str:
    """The ``Allow`` of a 405: the methods of the most literal route that matches the path.

    aiohttp's 405 lists the methods of every resource whose pattern matches, so
    ``OPTIONS …/prompts/batch`` would also offer ``GET``/``DELETE`` of ``…/{prompt_name}``,
    although ``batch`` is the literal route's and never a prompt name (API.md §1).
    """
    best: tuple[int, set[str]] | None = None
    for resource in request.app.router.resources():
        match, allowed = await resource.resolve(request)
        if match is not None or not allowed:
            continue
        placeholders = resource.canonical.count("{")
        if best is None or placeholders < best[0]:
            best = (placeholders, set(allowed))
        elif placeholders == best[0]:
            best[1].update(allowed)
    return ",".join(sorted(best[1])) if best is not None else given


async def error_response(request: web.Request, exc: Exception) -> web.Response | None:
    """The JSON error answer for ``exc``; None for an HTTP exception below 400 (let it through)."""
    if isinstance(exc, ApiError):
        return _json_error(exc.status, exc.code, exc.message, exc.detail, exc.headers)
    if isinstance(exc, store_errors.StoreError):
        api = from_store_error(exc)
        return _json_error(api.status, api.code, api.message, api.detail, api.headers)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None  # redirects and the like pass through untouched
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow",)}
        if exc.status == 405:
            headers = {"Allow": await _allowed_methods(request, exc.headers.get("Allow", ""))}
        if exc.status == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        elif exc.status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        elif exc.status == 413:
            message = "request body too large"
        else:
            message = exc.reason
        return _json_error(exc.status, _HTTP_CODES.get(exc.status, "HTTP_ERROR"), message, headers=headers)
    log.exception("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return _json_error(500, "INTERNAL_ERROR", "internal server error")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every exception → the one JSON error shape (the app runs ``error_response`` in ``pipeline``)."""
    try:
        return await handler(request)
    except Exception as e:
        response = await error_response(request, e)
        if response is None:
            raise
        return response
