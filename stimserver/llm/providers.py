"""Provider clients: one user prompt in, the completion text out, every failure an `LLMError`.

Both backends are the official async SDKs, built with ``max_retries=0``: retries, backoff,
``retry-after`` and the provider-wide limits live in ``llm.limiter``, shared by every job of
the process, so one job's 429 slows all of them. This module picks the backend for a
model, builds the request, reads the answer's text and token usage, and turns SDK
exceptions into messages a user can act on (``llm.describe``).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..config import Settings
from .describe import clip, describe, shown_url
from .errors import TRANSIENT_STATUSES, Answer, LLMError
from .limiter import Limits, Usage, limiter_for

if TYPE_CHECKING:
    import anthropic
    import openai
else:
    from .sdk import anthropic, openai

__all__ = ["DEFAULT_MAX_TOKENS", "Answer", "LLMClient", "LLMConfig", "LLMError", "client_factory"]

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
    max_concurrent: int = 64
    requests_per_minute: int = 0
    tokens_per_minute: int = 0

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
            max_concurrent=settings.llm_max_concurrent,
            requests_per_minute=settings.llm_requests_per_minute,
            tokens_per_minute=settings.llm_tokens_per_minute,
        )

    @property
    def limits(self) -> Limits:
        return Limits(self.max_concurrent, self.requests_per_minute, self.tokens_per_minute, self.max_retries)

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
        """The model's text answer to `prompt` (see `ask`)."""
        answer = await self.ask(model=model, prompt=prompt, temperature=temperature, max_tokens=max_tokens,
                                extra_kwargs=extra_kwargs)
        return answer.text

    async def ask(
        self,
        *,
        model: str,
        prompt: str,
        temperature: float | None,
        max_tokens: int | None,
        extra_kwargs: dict[str, Any] | None,
        usage: Usage | None = None,
    ) -> Answer:
        """The model's answer to `prompt`, through the provider's shared limiter; adds to `usage`.

        `extra_kwargs` go to the SDK's create call. Anthropic gets max_tokens=DEFAULT_MAX_TOKENS
        when none is given. A temperature other than 1.0 (the API default, otherwise left out)
        is sent with `anthropic-version: 2023-06-01`, the last version that accepts it; models
        that reject it answer 400.
        """
        client: anthropic.AsyncAnthropic | openai.AsyncOpenAI
        extract: Callable[[Any, str], Answer]
        provider = self._config.provider_for(model)
        request: Callable[[], Awaitable[Any]]
        if provider == "anthropic":
            client = anthropic_client = self._anthropic_client()
            env_prefix, reply_kind, extract = "ANTHROPIC", "Messages API reply", _message_answer

            def request() -> Awaitable[Any]:
                return _create_message(anthropic_client, model, prompt, temperature, max_tokens, extra_kwargs)
        else:
            client = openai_client = self._openai_client()
            env_prefix, reply_kind, extract = "OPENAI", "chat completion", _chat_completion_answer

            def request() -> Awaitable[Any]:
                return _create_chat_completion(openai_client, model, prompt, temperature, max_tokens, extra_kwargs)
        url = shown_url(str(client.base_url))

        async def attempt(retries: int) -> Answer:
            try:
                response = await request()
            except (anthropic.AnthropicError, openai.OpenAIError) as err:
                message = describe(err, model=model, url=url, env_prefix=env_prefix, timeout=self._config.timeout,
                                   retries=retries)
                raise _llm_error(self._redact(message), err) from err
            try:
                return extract(response, model)
            except (AttributeError, TypeError) as err:
                raise LLMError(f"LLM provider at {url} sent a reply that is not a {reply_kind}") from err

        limiter = limiter_for(provider, str(client.base_url), str(client.api_key), self._config.limits)
        return await limiter.run(attempt, provider=provider, model=model, usage=usage)

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
                max_retries=0,  # llm.limiter retries, seeing every attempt
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
                max_retries=0,  # llm.limiter retries, seeing every attempt
            )
        return self._openai

    def _redact(self, text: str) -> str:
        for key in (self._config.anthropic_api_key, self._config.openai_api_key):
            if key:
                text = text.replace(key, "***")
        return text


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


def _llm_error(message: str, err: Exception) -> LLMError:
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


def _tokens(usage: Any, name: str) -> int:
    value = getattr(usage, name, None)
    return value if isinstance(value, int) and value >= 0 else 0


def _message_answer(message: Any, model: str) -> Answer:
    # Typed Any: a server that is not the real API can send anything, and the SDK does not validate.
    if message.stop_reason == "refusal":
        raise LLMError(f"model {model!r} refused the request")
    text = "".join(block.text for block in message.content if block.type == "text")
    usage = getattr(message, "usage", None)
    return Answer(_nonempty(text, model, message.stop_reason), _tokens(usage, "input_tokens"),
                  _tokens(usage, "output_tokens"))


def _chat_completion_answer(completion: Any, model: str) -> Answer:
    usage = getattr(completion, "usage", None)
    return Answer(_chat_completion_text(completion, model), _tokens(usage, "prompt_tokens"),
                  _tokens(usage, "completion_tokens"))


def _chat_completion_text(completion: Any, model: str) -> str:
    choices = completion.choices
    if isinstance(choices, list) and not choices:
        raise LLMError(f"model {model!r} returned no completion")
    choice = choices[0]
    if choice.message.refusal:
        raise LLMError(f"model {model!r} refused the request: {clip(choice.message.refusal)}")
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


