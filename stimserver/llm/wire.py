"""The wire side of one request: building the SDK call, reading the answer's text and usage.

Split from ``providers`` (which picks the backend and owns the clients) to keep both short.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from .describe import clip
from .errors import Answer, LLMError

if TYPE_CHECKING:
    import anthropic
    import openai

__all__ = ["DEFAULT_MAX_TOKENS", "create_message", "create_chat_completion", "message_answer",
           "chat_completion_answer", "anthropic_kwargs", "openai_kwargs", "checked_kwargs", "tokens",
           "answered_choice", "unrefused", "anthropic_tokens", "openai_tokens"]

class Tokens(TypedDict):
    """An answer's token counts, as ``errors.Answer`` takes them."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int


DEFAULT_MAX_TOKENS = 4096
"""Sent to Anthropic when the caller gives no max_tokens: the Messages API requires one."""

# The SDK's default Messages API version (2026-10-21) rejects sampling parameters outright;
# 2023-06-01 still accepts them for models that support them.
SAMPLING_API_VERSION = "2023-06-01"
# The Messages API default, so leaving it out changes nothing and keeps models that reject
# sampling parameters working with the targets' default temperature.
_DEFAULT_TEMPERATURE = 1.0
_RESERVED_KWARGS = {
    "model": "the model comes from the target or generator",
    "messages": "the messages are built from the prompt",
    "stream": "streaming is not supported",
    "temperature": "use the temperature field",
    "max_tokens": "use the max_tokens field",
}


async def create_message(
    client: anthropic.AsyncAnthropic,
    model: str,
    prompt: str,
    temperature: float | None,
    max_tokens: int | None,
    extra_kwargs: dict[str, Any] | None,
) -> Any:
    return await client.messages.create(
        model=model,
        max_tokens=DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
        messages=[{"role": "user", "content": prompt}],
        **anthropic_kwargs(client, temperature, extra_kwargs),
    )


def anthropic_kwargs(client: anthropic.AsyncAnthropic, temperature: float | None,
                     extra_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The checked ``extra_kwargs`` plus the temperature, the way the Messages API still takes it."""
    kwargs = checked_kwargs(extra_kwargs, client.messages.create, "Anthropic")
    if temperature is not None and temperature != _DEFAULT_TEMPERATURE:
        # The SDK no longer takes sampling parameters, so they travel in the raw body.
        kwargs["extra_body"] = {**(kwargs.get("extra_body") or {}), "temperature": temperature}
        kwargs["extra_headers"] = {"anthropic-version": SAMPLING_API_VERSION, **(kwargs.get("extra_headers") or {})}
    return kwargs


# What a server needs in the body of a request at a temperature above 0 to sample instead of decoding
# greedily, by STIMSERVER_OPENAI_SERVER (docs/rollout.md, "Sampling"). transformers serve reads
# generation_config as a JSON *string*; an object answers 500.
SAMPLING_BODY: dict[str, dict[str, Any]] = {"transformers": {"generation_config": '{"do_sample": true}'}}


def sampling_kwargs(server: str, temperature: float | None,
                    extra_kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
    """``extra_kwargs`` plus what ``server`` needs to sample at ``temperature``; the user's extra_body wins."""
    body = SAMPLING_BODY.get(server)
    if body is None or temperature is None or temperature <= 0:
        return extra_kwargs
    merged = dict(extra_kwargs or {})
    given = merged.get("extra_body")
    merged["extra_body"] = {**body, **(given if isinstance(given, dict) else {})}
    return merged


def openai_kwargs(client: openai.AsyncOpenAI, temperature: float | None, max_tokens: int | None,
                  extra_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The checked ``extra_kwargs`` plus temperature and max_tokens when given."""
    kwargs = checked_kwargs(extra_kwargs, client.chat.completions.create, "OpenAI")
    if temperature is not None:
        kwargs["temperature"] = temperature
    if max_tokens is not None:
        kwargs["max_tokens"] = max_tokens
    return kwargs


async def create_chat_completion(
    client: openai.AsyncOpenAI,
    model: str,
    prompt: str,
    temperature: float | None,
    max_tokens: int | None,
    extra_kwargs: dict[str, Any] | None,
) -> Any:
    kwargs = openai_kwargs(client, temperature, max_tokens, extra_kwargs)
    return await client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], **kwargs)


def tokens(usage: Any, name: str) -> int:
    value = getattr(usage, name, None)
    return value if isinstance(value, int) and value >= 0 else 0


def anthropic_tokens(usage: Any) -> Tokens:
    """A Messages API ``usage`` as ``Answer``'s token fields.

    Anthropic's ``input_tokens`` leaves out the prompt tokens read from or written to the
    cache (``cache_read_input_tokens``, ``cache_creation_input_tokens``): they are added back,
    so ``input_tokens`` means every prompt token, as it does for OpenAI.
    """
    read, write = tokens(usage, "cache_read_input_tokens"), tokens(usage, "cache_creation_input_tokens")
    return {"input_tokens": tokens(usage, "input_tokens") + read + write,
            "output_tokens": tokens(usage, "output_tokens"), "cached_input_tokens": read, "cache_write_tokens": write}


def openai_tokens(usage: Any) -> Tokens:
    """A chat completion's ``usage`` as ``Answer``'s token fields.

    OpenAI's ``prompt_tokens`` already includes ``prompt_tokens_details.cached_tokens`` (and
    reports no cache writes); a cached count above the prompt's is a server's mistake, capped.
    """
    prompt = tokens(usage, "prompt_tokens")
    cached = min(tokens(getattr(usage, "prompt_tokens_details", None), "cached_tokens"), prompt)
    return {"input_tokens": prompt, "output_tokens": tokens(usage, "completion_tokens"),
            "cached_input_tokens": cached, "cache_write_tokens": 0}


def message_answer(message: Any, model: str) -> Answer:
    # Typed Any: a server that is not the real API can send anything, and the SDK does not validate.
    text = "".join(block.text for block in unrefused(message, model).content if block.type == "text")
    return Answer(_nonempty(text, model, message.stop_reason), **anthropic_tokens(getattr(message, "usage", None)))


def chat_completion_answer(completion: Any, model: str) -> Answer:
    return Answer(_chat_completion_text(completion, model), **openai_tokens(getattr(completion, "usage", None)))


def answered_choice(completion: Any, model: str) -> Any:
    """The first choice of a chat completion; a rejected ``LLMError`` for none, a refusal or a content filter."""
    choices = completion.choices
    if isinstance(choices, list) and not choices:
        raise LLMError(f"model {model!r} returned no completion", rejected=True)
    choice = choices[0]
    refusal = getattr(choice.message, "refusal", None)
    if refusal:
        raise LLMError(f"model {model!r} refused the request: {clip(refusal)}", rejected=True)
    if choice.finish_reason == "content_filter":
        raise LLMError(f"model {model!r} refused the request (content filter)", rejected=True)
    return choice


def unrefused(message: Any, model: str) -> Any:
    """A Messages API reply, unless its stop reason says the model refused (a rejected ``LLMError``)."""
    if message.stop_reason == "refusal":
        raise LLMError(f"model {model!r} refused the request", rejected=True)
    return message


def _chat_completion_text(completion: Any, model: str) -> str:
    choice = answered_choice(completion, model)
    return _nonempty(choice.message.content or "", model, choice.finish_reason)


def checked_kwargs(extra: object, create: Callable[..., Any], sdk: str) -> dict[str, Any]:
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
        raise LLMError(f"model {model!r} returned an empty completion (stop reason: {stop_reason})", rejected=True)
    return text
