"""Provider clients: one user prompt (or a whole chat, ``llm.chat``) in, the answer out, every failure an `LLMError`.

Both backends are the official async SDKs, built with ``max_retries=0``: retries, backoff,
``retry-after`` and the provider-wide limits live in ``llm.limiter``, shared by every job of
the process, so one job's 429 slows all of them. This module picks the backend for a
model, builds the request, reads the answer's text and token usage, and turns SDK
exceptions into messages a user can act on (``llm.describe``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..config import AnthropicCache, Settings
from .batch import BatchAPI
from .chat import (
    ChatAnswer,
    chat_completion_reply,
    chat_message_reply,
    create_chat_chat_completion,
    create_chat_message,
)
from .describe import describe, llm_error, shown_url
from .errors import Answer, LLMError
from .limiter import Limits, Usage, limiter_for
from .prices import AnswerCost, PriceTable, answer_cost, load_prices, shipped_prices
from .sdk import preload
from .wire import (
    DEFAULT_MAX_TOKENS,
    chat_completion_answer,
    create_chat_completion,
    create_message,
    message_answer,
    sampling_kwargs,
)

if TYPE_CHECKING:
    import anthropic
    import openai
else:
    from .sdk import anthropic, openai

__all__ = ["DEFAULT_MAX_TOKENS", "Answer", "ChatAnswer", "LLMClient", "LLMConfig", "LLMError", "client_factory"]

Provider = Literal["anthropic", "openai"]
ProviderChoice = Literal["auto", "anthropic", "openai"]

# Sent when a base URL is configured without a key: local OpenAI-compatible servers ignore it.
_PLACEHOLDER_KEY = "stimserver-no-key"


@dataclass(frozen=True)
class LLMConfig:
    """Credentials and transport settings for both providers; keys stay out of the repr."""

    provider: ProviderChoice = "auto"
    anthropic_api_key: str | None = field(default=None, repr=False)
    anthropic_base_url: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_server: str = "openai"
    timeout: float = 120.0
    max_retries: int = 4
    max_concurrent: int = 64
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    anthropic_cache: AnthropicCache = "5m"
    batch_poll_seconds: float = 30.0
    batch_size: int = 1000
    prices: PriceTable = field(default_factory=shipped_prices, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMConfig:
        """The LLM part of ``settings``, which has already checked every value, and the price table
        (``llm.prices``: the shipped one under ``DATA/prices.json``; a broken file raises ``ValueError``)."""
        return cls(
            provider=settings.llm_provider,
            anthropic_api_key=settings.anthropic_api_key,
            anthropic_base_url=settings.anthropic_base_url,
            openai_api_key=settings.openai_api_key,
            openai_base_url=settings.openai_base_url,
            openai_server=settings.openai_server,
            anthropic_cache=settings.anthropic_cache,
            batch_poll_seconds=settings.batch_poll_seconds,
            batch_size=settings.batch_size,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            max_concurrent=settings.llm_max_concurrent,
            requests_per_minute=settings.llm_requests_per_minute,
            tokens_per_minute=settings.llm_tokens_per_minute,
            prices=load_prices(settings.data_dir),
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

    @property
    def config(self) -> LLMConfig:
        return self._config

    def batches(self, model: str) -> BatchAPI:
        """The batch API of ``model``'s provider (``llm.batch``), sharing this client's connections."""
        return BatchAPI(self, model)

    async def load_sdk(self, model: str) -> None:
        """Import the SDK ``model`` needs off the event loop (the first import takes ~1 s)."""
        await preload(self._config.provider_for(model))

    def anthropic_sdk(self) -> anthropic.AsyncAnthropic:
        return self._anthropic_client()

    def openai_sdk(self) -> openai.AsyncOpenAI:
        return self._openai_client()

    def redact(self, text: str) -> str:
        """``text`` without either configured key."""
        return self._redact(text)

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
        openai_extra = sampling_kwargs(self._config.openai_server, temperature, extra_kwargs)
        return await self._send(
            model, usage,
            lambda c: create_message(c, model, prompt, temperature, max_tokens, extra_kwargs), message_answer,
            lambda c: create_chat_completion(c, model, prompt, temperature, max_tokens, openai_extra),
            chat_completion_answer)

    async def chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        temperature: float | None,
        max_tokens: int | None,
        extra_kwargs: dict[str, Any] | None,
        usage: Usage | None = None,
    ) -> ChatAnswer:
        """The model's reply to a whole conversation (``llm.chat``), through the same limiter as ``ask``.

        For Anthropic the shared prefix carries ``cache_control`` per ``anthropic_cache``
        (``chat.cache_breakpoints``); OpenAI-compatible servers get the messages as they are.
        """
        openai_extra = sampling_kwargs(self._config.openai_server, temperature, extra_kwargs)
        answer = await self._send(
            model, usage,
            lambda c: create_chat_message(c, model, messages, tools, temperature, max_tokens, extra_kwargs,
                                          cache=self._config.anthropic_cache),
            chat_message_reply,
            lambda c: create_chat_chat_completion(c, model, messages, tools, temperature, max_tokens, openai_extra),
            chat_completion_reply)
        assert isinstance(answer, ChatAnswer)
        return answer

    async def _send(self, model: str, usage: Usage | None,
                    anthropic_call: Callable[[anthropic.AsyncAnthropic], Awaitable[Any]],
                    anthropic_read: Callable[[Any, str], Answer],
                    openai_call: Callable[[openai.AsyncOpenAI], Awaitable[Any]],
                    openai_read: Callable[[Any, str], Answer]) -> Answer:
        """One request to the model's provider, through its shared limiter; SDK errors become ``LLMError``."""
        client: anthropic.AsyncAnthropic | openai.AsyncOpenAI
        extract: Callable[[Any, str], Answer]
        provider = self._config.provider_for(model)
        await preload(provider)  # the first import of an SDK takes ~1 s: not on the event loop
        request: Callable[[], Awaitable[Any]]
        if provider == "anthropic":
            client = anthropic_client = self._anthropic_client()
            env_prefix, reply_kind, extract = "ANTHROPIC", "Messages API reply", anthropic_read

            def request() -> Awaitable[Any]:
                return anthropic_call(anthropic_client)
        else:
            client = openai_client = self._openai_client()
            env_prefix, reply_kind, extract = "OPENAI", "chat completion", openai_read

            def request() -> Awaitable[Any]:
                return openai_call(openai_client)
        url = shown_url(str(client.base_url))

        async def attempt(retries: int) -> Answer:
            try:
                response = await request()
            except (anthropic.AnthropicError, openai.OpenAIError) as err:
                message = describe(err, model=model, url=url, env_prefix=env_prefix, timeout=self._config.timeout,
                                   retries=retries)
                raise llm_error(self._redact(message), err) from err
            try:
                return extract(response, model)
            except (AttributeError, TypeError) as err:
                raise LLMError(f"LLM provider at {url} sent a reply that is not a {reply_kind}") from err

        limiter = limiter_for(provider, str(client.base_url), str(client.api_key), self._config.limits)
        prices, ttl = self._config.prices, self._config.anthropic_cache if provider == "anthropic" else "5m"
        return await limiter.run(attempt, provider=provider, model=model, usage=usage,
                                 cost=lambda answer: answer_cost(prices, model, answer, ttl))

    def batch_cost(self, model: str, answer: Answer) -> AnswerCost:
        """What an answer of a batch cost (``prices.answer_cost`` with the batch discount)."""
        provider = self._config.provider_for(model)
        ttl = self._config.anthropic_cache if provider == "anthropic" else "5m"
        return answer_cost(self._config.prices, model, answer, ttl, batch=True)

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
