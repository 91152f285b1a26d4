"""SDK exceptions in words a user can act on: what happened, where, after how many retries.

Kept apart from ``providers`` so that module stays about building requests. Messages never
hold a key (the caller redacts) or a traceback.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from .errors import TRANSIENT_STATUSES, LLMError

if TYPE_CHECKING:
    import anthropic
    import openai
else:
    from .sdk import anthropic, openai

__all__ = ["describe", "shown_url", "clip", "llm_error"]

_MAX_DETAIL_CHARS = 300


def shown_url(url: str) -> str:
    """The base URL as errors show it: without user info or query (either may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")


def describe(err: Exception, *, model: str, url: str, env_prefix: str, timeout: float, retries: int) -> str:
    """Phrase an SDK exception for the user: what happened, where, and how many retries it took."""
    if isinstance(err, (anthropic.APITimeoutError, openai.APITimeoutError)):
        attempts = retries + 1
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        return f"LLM request to {url} timed out after {timeout:g} s{tries}"
    if isinstance(err, (anthropic.APIConnectionError, openai.APIConnectionError)):
        return f"LLM provider unreachable at {url}: {_connection_reason(err)}"
    if isinstance(err, (anthropic.APIStatusError, openai.APIStatusError)):
        status, tries, detail = err.status_code, _plural(retries, "retry", "retries"), _detail(err)
        if status == 401:
            return f"LLM provider rejected the API key (401); check {env_prefix}_API_KEY"
        if status == 403:
            return f"LLM provider denied access (403): {detail}"
        if status == 404:
            return f"model {model!r} not found (404) at {url}"
        if status == 429:
            return f"rate limited by the LLM provider (429) after {tries}"
        if status == 529:
            return f"LLM provider overloaded (529) after {tries}"
        if status >= 500:
            return f"LLM provider error ({status}) after {tries}: {detail}"
        return f"LLM provider rejected the request ({status}): {detail}"
    return f"LLM request failed: {clip(str(err))}"


def _detail(err: anthropic.APIStatusError | openai.APIStatusError) -> str:
    body = err.body
    inner = body.get("error", body) if isinstance(body, Mapping) else None
    if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
        return clip(inner["message"])
    if isinstance(body, str) and body.strip():
        return clip(body)
    return err.response.reason_phrase or "no details given"


def _connection_reason(err: BaseException) -> str:
    """The innermost cause, named in words: 'connection refused' beats 'Connection error.'."""
    seen: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None and cause not in seen:
        seen.append(cause)
        cause = cause.__cause__ or cause.__context__
    for exc in seen:
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, socket.gaierror):
            return f"host not found ({exc.strerror})"
        if isinstance(exc, ssl.SSLError):
            return f"TLS error ({exc.reason or exc})"
        if isinstance(exc, ConnectionResetError):
            return "connection reset"
    return clip(str(seen[-1])) or type(seen[-1]).__name__


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL_CHARS else text[: _MAX_DETAIL_CHARS - 1] + "…"


def llm_error(message: str, err: Exception) -> LLMError:
    """``message`` with what the limiter needs to know: status, whether to retry, retry-after."""
    status: int | None = getattr(err, "status_code", None)
    transient = status in TRANSIENT_STATUSES if status is not None else isinstance(
        err, (anthropic.APIConnectionError, openai.APIConnectionError))  # timeouts are connection errors too
    retry_after = None
    response = getattr(err, "response", None)
    if response is not None:
        try:
            retry_after = float(response.headers.get("retry-after", ""))
        except (TypeError, ValueError):
            retry_after = None
    return LLMError(message, status=status, transient=transient, retry_after=retry_after)
