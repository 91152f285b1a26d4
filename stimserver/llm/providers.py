"""Provider clients: one user prompt in, the completion text out, every failure an `LLMError`.

Both backends are the official async SDKs, which already retry connection errors, timeouts,
408/409/429 and 5xx with backoff and honour `retry-after`. This module only picks the backend
for a model, builds the request, and turns SDK exceptions into messages a user can act on.
"""

from __future__ import annotations

import importlib
import inspect
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from ..config import Settings

if TYPE_CHECKING:
    import anthropic
    import openai


class _LazyModule:
    """Imports an SDK on first attribute access.

    The two SDKs take seconds to import together; every ``stimserver`` command and every
    server start would pay that, although only LLM generators use them.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


if not TYPE_CHECKING:
    anthropic = _LazyModule("anthropic")
    openai = _LazyModule("openai")

__all__ = ["DEFAULT_MAX_TOKENS", "LLMClient", "LLMConfig", "LLMError", "client_factory"]

Provider = Literal["anthropic", "openai"]
ProviderChoice = Literal["auto", "anthropic", "openai"]

DEFAULT_MAX_TOKENS = 4096
"""Sent to Anthropic when the caller gives no max_tokens: the Messages API requires one."""

# The SDK's default Messages API version (2026-10-21) rejects sampling parameters outright;
# 2023-06-01 still accepts them for models that support them.
_SAMPLING_API_VERSION = "2023-06-01"
# The Messages API default, so leaving it out changes nothing and keeps models that reject
# sampling parameters working with the targets' default temperature.
_DEFAULT_TEMPERATURE = 1.0
# Sent when a base URL is configured without a key: local OpenAI-compatible servers ignore it.
_PLACEHOLDER_KEY = "stimserver-no-key"
_RESERVED_KWARGS = {
    "model": "the model comes from the target or generator",
    "messages": "the messages are built from the prompt",
    "stream": "streaming is not supported",
    "temperature": "use the temperature field",
    "max_tokens": "use the max_tokens field",
}
_MAX_DETAIL_CHARS = 300

class LLMError(Exception):
    """A failed completion; the message is meant for the user and never holds a key or traceback."""


@dataclass(frozen=True)
class LLMConfig:
    """Credentials and transport settings for both providers; keys stay out of the repr."""

    provider: ProviderChoice = "auto"
    anthropic_api_key: str | None = field(default=None, repr=False)
    anthropic_base_url: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    timeout: float = 120.0
    max_retries: int = 4

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMConfig:
        """The LLM part of ``settings``, which has already checked every value."""
        return cls(
            provider=settings.llm_provider,
            anthropic_api_key=settings.anthropic_api_key,
            anthropic_base_url=settings.anthropic_base_url,
            openai_api_key=settings.openai_api_key,
            openai_base_url=settings.openai_base_url,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
        )

    def provider_for(self, model: str) -> Provider:
        """`auto` sends claude* models to Anthropic and everything else to an OpenAI-compatible server."""
        if self.provider != "auto":
            return self.provider
        return "anthropic" if model.lower().startswith("claude") else "openai"


def client_factory(settings: Settings) -> Callable[[], LLMClient]:
    """What ``create_app`` hands the job runner: each call makes a client from ``settings``."""
    config = LLMConfig.from_settings(settings)
    return lambda: LLMClient(config)


class LLMClient:
    """Sends single-turn prompts to the provider each model belongs to.

    SDK clients are created on first use, so a server configured for one provider never
    needs the other's credentials.
    """

    def __init__(self, config: LLMConfig) -> None:
        self._config = config
        self._anthropic: anthropic.AsyncAnthropic | None = None
        self._openai: openai.AsyncOpenAI | None = None

    async def complete(
        self,
        *,
        model: str,
        prompt: str,
        temperature: float | None,
        max_tokens: int | None,
        extra_kwargs: dict[str, Any] | None,
    ) -> str:
        """Return the model's text answer to `prompt`; `extra_kwargs` go to the SDK's create call.

        Anthropic gets max_tokens=DEFAULT_MAX_TOKENS when none is given. A temperature other
        than 1.0 (the API default, otherwise left out) is sent with `anthropic-version:
        2023-06-01`, the last version that accepts it; models that reject it answer 400.
        """
        client: anthropic.AsyncAnthropic | openai.AsyncOpenAI
        extract: Callable[[Any, str], str]
        if self._config.provider_for(model) == "anthropic":
            client = self._anthropic_client()
            request = _create_message(client, model, prompt, temperature, max_tokens, extra_kwargs)
            env_prefix, reply_kind, extract = "ANTHROPIC", "Messages API reply", _message_text
        else:
            client = self._openai_client()
            request = _create_chat_completion(client, model, prompt, temperature, max_tokens, extra_kwargs)
            env_prefix, reply_kind, extract = "OPENAI", "chat completion", _chat_completion_text
        url = _shown_url(str(client.base_url))
        try:
            response = await request
        except (anthropic.AnthropicError, openai.OpenAIError) as err:
            message = _describe(err, model=model, url=url, env_prefix=env_prefix, timeout=self._config.timeout)
            raise LLMError(self._redact(message)) from err
        try:
            return extract(response, model)
        except (AttributeError, TypeError) as err:
            raise LLMError(f"LLM provider at {url} sent a reply that is not a {reply_kind}") from err

    async def aclose(self) -> None:
        """Close the SDK clients' connection pools."""
        if self._anthropic is not None:
            await self._anthropic.close()
            self._anthropic = None
        if self._openai is not None:
            await self._openai.close()
            self._openai = None

    def _anthropic_client(self) -> anthropic.AsyncAnthropic:
        if self._anthropic is None:
            cfg = self._config
            key = _key_or_placeholder("ANTHROPIC", cfg.anthropic_api_key, cfg.anthropic_base_url)
            # Explicit key and base URL: the SDK then reads no credentials from the process env.
            self._anthropic = anthropic.AsyncAnthropic(
                api_key=key,
                base_url=cfg.anthropic_base_url or "https://api.anthropic.com",
                timeout=cfg.timeout,
                max_retries=cfg.max_retries,
            )
        return self._anthropic

    def _openai_client(self) -> openai.AsyncOpenAI:
        if self._openai is None:
            cfg = self._config
            key = _key_or_placeholder("OPENAI", cfg.openai_api_key, cfg.openai_base_url)
            self._openai = openai.AsyncOpenAI(
                api_key=key,
                base_url=cfg.openai_base_url or "https://api.openai.com/v1",
                timeout=cfg.timeout,
                max_retries=cfg.max_retries,
            )
        return self._openai

    def _redact(self, text: str) -> str:
        for key in (self._config.anthropic_api_key, self._config.openai_api_key):
            if key:
                text = text.replace(key, "***")
        return text


def _shown_url(url: str) -> str:
    """The base URL as errors show it: without user info or query (either may hold a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")


def _key_or_placeholder(env_prefix: str, key: str | None, base_url: str | None) -> str:
    if key:
        return key
    if base_url:
        return _PLACEHOLDER_KEY
    raise LLMError(
        f"no credentials for {env_prefix.title()} models: set {env_prefix}_API_KEY, "
        f"or {env_prefix}_BASE_URL for a server that needs no key"
    )


async def _create_message(
    client: anthropic.AsyncAnthropic,
    model: str,
    prompt: str,
    temperature: float | None,
    max_tokens: int | None,
    extra_kwargs: dict[str, Any] | None,
) -> Any:
    kwargs = _checked_kwargs(extra_kwargs, client.messages.create, "Anthropic")
    if temperature is not None and temperature != _DEFAULT_TEMPERATURE:
        # The SDK no longer takes sampling parameters, so they travel in the raw body.
        kwargs["extra_body"] = {**(kwargs.get("extra_body") or {}), "temperature": temperature}
        kwargs["extra_headers"] = {"anthropic-version": _SAMPLING_API_VERSION, **(kwargs.get("extra_headers") or {})}
    return await client.messages.create(
        model=model,
        max_tokens=DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        messages=[{"role": "user", "content": prompt}],
        **kwargs,
    )


async def _create_chat_completion(
    client: openai.AsyncOpenAI,
    model: str,
    prompt: str,
    temperature: float | None,
    max_tokens: int | None,
    extra_kwargs: dict[str, Any] | None,
) -> Any:
    kwargs = _checked_kwargs(extra_kwargs, client.chat.completions.create, "OpenAI")
    if temperature is not None:
        kwargs["temperature"] = temperature
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    return await client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], **kwargs)


def _message_text(message: Any, model: str) -> str:
    # Typed Any: a server that is not the real API can send anything, and the SDK does not validate.
    if message.stop_reason == "refusal":
        raise LLMError(f"model {model!r} refused the request")
    text = "".join(block.text for block in message.content if block.type == "text")
    return _nonempty(text, model, message.stop_reason)


def _chat_completion_text(completion: Any, model: str) -> str:
    choices = completion.choices
    if isinstance(choices, list) and not choices:
        raise LLMError(f"model {model!r} returned no completion")
    choice = choices[0]
    if choice.message.refusal:
        raise LLMError(f"model {model!r} refused the request: {_clip(choice.message.refusal)}")
    if choice.finish_reason == "content_filter":
        raise LLMError(f"model {model!r} refused the request (content filter)")
    return _nonempty(choice.message.content or "", model, choice.finish_reason)


def _checked_kwargs(extra: object, create: Callable[..., Any], sdk: str) -> dict[str, Any]:
    """Copy `extra_kwargs`, refusing what would clash with our own arguments or the SDK would reject."""
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise LLMError(f"extra_kwargs must be an object, not {type(extra).__name__}")
    for key in extra:
        if key in _RESERVED_KWARGS:
            raise LLMError(f"extra_kwargs may not set {key!r}: {_RESERVED_KWARGS[key]}")
    accepted = inspect.signature(create).parameters
    unknown = sorted(str(key) for key in extra if key not in accepted)
    if unknown:
        raise LLMError(
            f"extra_kwargs {', '.join(map(repr, unknown))} not accepted by the {sdk} SDK; "
            "put server-specific parameters under 'extra_body'"
        )
    return dict(extra)


def _nonempty(text: str, model: str, stop_reason: str | None) -> str:
    if not text.strip():
        raise LLMError(f"model {model!r} returned an empty completion (stop reason: {stop_reason})")
    return text


def _describe(err: Exception, *, model: str, url: str, env_prefix: str, timeout: float) -> str:
    """Phrase an SDK exception for the user: what happened, where, and how many retries it took."""
    if isinstance(err, (anthropic.APITimeoutError, openai.APITimeoutError)):
        attempts = _retries(err) + 1
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        return f"LLM request to {url} timed out after {timeout:g} s{tries}"
    if isinstance(err, (anthropic.APIConnectionError, openai.APIConnectionError)):
        return f"LLM provider unreachable at {url}: {_connection_reason(err)}"
    if isinstance(err, (anthropic.APIStatusError, openai.APIStatusError)):
        status, retries, detail = err.status_code, _plural(_retries(err), "retry", "retries"), _detail(err)
        if status == 401:
            return f"LLM provider rejected the API key (401); check {env_prefix}_API_KEY"
        if status == 403:
            return f"LLM provider denied access (403): {detail}"
        if status == 404:
            return f"model {model!r} not found (404) at {url}"
        if status == 429:
            return f"rate limited by the LLM provider (429) after {retries}"
        if status == 529:
            return f"LLM provider overloaded (529) after {retries}"
        if status >= 500:
            return f"LLM provider error ({status}) after {retries}: {detail}"
        return f"LLM provider rejected the request ({status}): {detail}"
    return f"LLM request failed: {_clip(str(err))}"


def _retries(err: anthropic.APIError | openai.APIError) -> int:
    # Both SDKs stamp each attempt with the number of retries taken before it.
    try:
        return int(err.request.headers.get("x-stainless-retry-count", "0"))
    except ValueError:
        return 0


def _detail(err: anthropic.APIStatusError | openai.APIStatusError) -> str:
    body = err.body
    inner = body.get("error", body) if isinstance(body, Mapping) else None
    if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
        return _clip(inner["message"])
    if isinstance(body, str) and body.strip():
        return _clip(body)
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
    return _clip(str(seen[-1])) or type(seen[-1]).__name__


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL_CHARS else text[: _MAX_DETAIL_CHARS - 1] + "…"
