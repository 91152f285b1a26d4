"""A whole conversation in, one assistant reply out: the request a rollout trajectory is.

Messages and tools arrive in the OpenAI chat shape (what prompts store). An
OpenAI-compatible server gets them as they are; for the Anthropic Messages API they are
converted: ``system`` messages become the ``system`` field, tool schemas become
``{name, description, input_schema}``, an assistant's ``tool_calls`` become ``tool_use``
blocks and ``tool`` messages ``tool_result`` blocks. Either way the reply comes back in
one shape, ``ChatAnswer``: content, OpenAI-style ``tool_calls``, a ``finish_reason``
normalised to OpenAI's words (``stop``, ``length``, ``tool_calls``) and the token usage.

Prompt caching: for Anthropic the shared prefix (tools, system prompt, the turns before the
final user turn) is marked with ``cache_control`` breakpoints (``cache_breakpoints``), so
every request after the first reads it from the cache. OpenAI-compatible servers cache
prefixes by themselves; the messages go out exactly as the prompt stores them, so every
trajectory of a stimulus shares a byte-identical prefix. Cached tokens come back in
``Answer.cached_input_tokens`` / ``cache_write_tokens`` (``wire.anthropic_tokens``).

An empty text is a valid answer when the model called a tool. A refusal, a content
filter or an empty completion raise an ``LLMError`` with ``rejected`` set: that request
alone failed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from ..config import AnthropicCache  # STIMSERVER_ANTHROPIC_CACHE: the breakpoints' TTL, or off
from .errors import Answer, LLMError
from .wire import (
    DEFAULT_MAX_TOKENS,
    answered_choice,
    anthropic_kwargs,
    anthropic_tokens,
    openai_kwargs,
    openai_tokens,
    unrefused,
)

if TYPE_CHECKING:
    import anthropic
    import openai

__all__ = ["ChatAnswer", "create_chat_message", "create_chat_chat_completion", "chat_message_params",
           "chat_completion_params", "chat_message_reply",
           "chat_completion_reply", "anthropic_messages", "anthropic_tools", "cache_breakpoints",
           "MAX_CACHE_BREAKPOINTS"]

Message = dict[str, Any]
MAX_CACHE_BREAKPOINTS = 4
"""The most ``cache_control`` blocks one Messages API request may carry."""

_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                 "pause_turn": "stop"}


@dataclass(frozen=True)
class ChatAnswer(Answer):
    """One assistant reply; ``text`` is its content ("" when it only called tools)."""

    tool_calls: tuple[dict[str, Any], ...] = field(default=())
    finish_reason: str = "stop"

    def response(self) -> dict[str, Any]:
        """The reply as a rollout line keeps it (``response``)."""
        usage = {"prompt_tokens": self.input_tokens, "completion_tokens": self.output_tokens,
                 "total_tokens": self.input_tokens + self.output_tokens}
        if self.cached_input_tokens:  # part of prompt_tokens, as in OpenAI's own usage
            usage["cached_tokens"] = self.cached_input_tokens
        out: dict[str, Any] = {"role": "assistant", "content": self.text, "finish_reason": self.finish_reason,
                               "usage": usage}
        if self.tool_calls:
            out["tool_calls"] = [dict(call) for call in self.tool_calls]
        return out


def _tools_kwarg(tools: list[dict[str, Any]] | None, extra_kwargs: dict[str, Any] | None) -> None:
    if tools and extra_kwargs and "tools" in extra_kwargs:
        raise LLMError("extra_kwargs may not set 'tools': the tools come from the prompt")


# -- OpenAI-compatible servers ---------------------------------------------------------

def chat_completion_params(client: openai.AsyncOpenAI, model: str, messages: list[Message],
                           tools: list[dict[str, Any]] | None, temperature: float | None, max_tokens: int | None,
                           extra_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments of ``chat.completions.create`` for a conversation (also a batch line's body)."""
    _tools_kwarg(tools, extra_kwargs)
    kwargs = openai_kwargs(client, temperature, max_tokens, extra_kwargs)
    if tools:
        kwargs["tools"] = tools
    return {"model": model, "messages": messages, **kwargs}


async def create_chat_chat_completion(client: openai.AsyncOpenAI, model: str, messages: list[Message],
                                      tools: list[dict[str, Any]] | None, temperature: float | None,
                                      max_tokens: int | None, extra_kwargs: dict[str, Any] | None) -> Any:
    params = chat_completion_params(client, model, messages, tools, temperature, max_tokens, extra_kwargs)
    return await client.chat.completions.create(**params)


def chat_completion_reply(completion: Any, model: str) -> ChatAnswer:
    # Typed Any: a server that is not the real API can send anything, and the SDK does not validate.
    choice = answered_choice(completion, model)
    message = choice.message
    calls = tuple({"id": str(call.id), "type": "function",
                   "function": {"name": call.function.name, "arguments": call.function.arguments}}
                  for call in (message.tool_calls or []))
    text = message.content or ""
    if not text.strip() and not calls:
        raise LLMError(f"model {model!r} returned an empty completion (finish reason: {choice.finish_reason})",
                       rejected=True)
    reason = str(choice.finish_reason or ("tool_calls" if calls else "stop"))
    return ChatAnswer(text, tool_calls=calls, finish_reason=reason, **openai_tokens(getattr(completion, "usage", None)))


# -- the Anthropic Messages API -----------------------------------------------------------

def _blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI message content → Anthropic content blocks (text parts as text blocks)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            block = {"type": "text", "text": str(part.get("text", ""))}
            if isinstance(part.get("cache_control"), dict):  # a breakpoint the prompt sets itself
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
        elif isinstance(part, dict):
            blocks.append(part)  # already an Anthropic block (image, document, …)
    return blocks


def _text(content: Any) -> str:
    return "\n".join(b["text"] for b in _blocks(content) if b.get("type") == "text")


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {"arguments": raw}
    return raw if isinstance(raw, dict) else {}


def anthropic_messages(messages: list[Message]) -> tuple[str | None, list[Message]]:
    """(system text or None, the other messages as Anthropic turns)."""
    system: list[str] = []
    turns: list[Message] = []
    for m in messages:
        role = m.get("role")
        if role in ("system", "developer"):
            text = _text(m.get("content"))
            if text:
                system.append(text)
            continue
        if role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": str(m.get("tool_call_id", "")),
                                     "content": _text(m.get("content"))}
            if turns and turns[-1]["role"] == "user" and isinstance(turns[-1]["content"], list):
                turns[-1]["content"].append(block)
            else:
                turns.append({"role": "user", "content": [block]})
            continue
        blocks = _blocks(m.get("content"))
        if role == "assistant":
            for call in m.get("tool_calls") or []:
                fn = call.get("function") or {}
                blocks.append({"type": "tool_use", "id": str(call.get("id", "")), "name": str(fn.get("name", "")),
                               "input": _arguments(fn.get("arguments"))})
        turns.append({"role": "assistant" if role == "assistant" else "user", "content": blocks})
    return ("\n\n".join(system) if system else None), turns


def anthropic_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tool schemas → Anthropic tools; ones already in Anthropic's shape pass as they are."""
    out = []
    for tool in tools:
        fn = tool.get("function") if tool.get("type") == "function" else None
        if isinstance(fn, dict):
            converted: dict[str, Any] = {"name": fn.get("name"),
                                         "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
            if fn.get("description"):
                converted["description"] = fn["description"]
            out.append(converted)
        else:
            out.append(tool)
    return out


def _marked(blocks: list[dict[str, Any]], control: dict[str, str]) -> list[dict[str, Any]]:
    """``blocks`` with ``cache_control`` on the last one (a copy: the caller's dicts stay as they are)."""
    return [*blocks[:-1], {**blocks[-1], "cache_control": control}]


def _has_control(block: Any) -> bool:
    return isinstance(block, dict) and "cache_control" in block


def cache_breakpoints(system: str | None, tools: list[dict[str, Any]] | None, turns: list[Message],
                      cache: AnthropicCache) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]] | None,
                                                      list[Message]]:
    """(system, tools, turns) with the shared prefix marked for Anthropic's prompt cache.

    Breakpoints go on the last tool, on the system prompt (then a one-block list) and, when
    turns come before the final user turn (few-shot examples, an earlier exchange), on the
    last block of the turn before it: everything before the question. Ones the prompt already
    carries count against the API's limit of ``MAX_CACHE_BREAKPOINTS``; when ours would pass
    it the few-shot breakpoint is kept first (it covers the longest prefix), then the system's.
    ``off`` changes nothing.
    """
    if cache == "off":
        return system, tools, turns
    control = {"type": "ephemeral"} if cache == "5m" else {"type": "ephemeral", "ttl": cache}
    present = sum(map(_has_control, tools or [])) + sum(
        _has_control(block) for turn in turns if isinstance(turn.get("content"), list) for block in turn["content"])
    room = MAX_CACHE_BREAKPOINTS - present
    turns = list(turns)
    if room > 0 and len(turns) >= 2 and turns[-1].get("role") == "user":
        before = turns[-2].get("content")
        if isinstance(before, list) and before and isinstance(before[-1], dict):
            turns[-2] = {**turns[-2], "content": _marked(before, control)}
            room -= 1
    marked_system: str | list[dict[str, Any]] | None = system
    if room > 0 and system:
        marked_system = [{"type": "text", "text": system, "cache_control": control}]
        room -= 1
    if room > 0 and tools:
        tools = _marked(tools, control)
    return marked_system, tools, turns


async def create_chat_message(client: anthropic.AsyncAnthropic, model: str, messages: list[Message],
                              tools: list[dict[str, Any]] | None, temperature: float | None, max_tokens: int | None,
                              extra_kwargs: dict[str, Any] | None, *, cache: AnthropicCache = "5m") -> Any:
    """The Messages API request for a conversation; ``cache`` sets its prompt-cache breakpoints."""
    params = chat_message_params(client, model, messages, tools, temperature, max_tokens, extra_kwargs, cache=cache)
    return await client.messages.create(**params)


def chat_message_params(client: anthropic.AsyncAnthropic, model: str, messages: list[Message],
                        tools: list[dict[str, Any]] | None, temperature: float | None, max_tokens: int | None,
                        extra_kwargs: dict[str, Any] | None, *, cache: AnthropicCache = "5m") -> dict[str, Any]:
    """The keyword arguments of ``messages.create`` for a conversation (also a batch request's params)."""
    _tools_kwarg(tools, extra_kwargs)
    kwargs = anthropic_kwargs(client, temperature, extra_kwargs)
    system, turns = anthropic_messages(messages)
    sent_system, sent_tools, turns = cache_breakpoints(system, anthropic_tools(tools) if tools else None, turns,
                                                       cache)
    if sent_system is not None:
        kwargs["system"] = sent_system
    if sent_tools:
        kwargs["tools"] = sent_tools
    limit = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    return {"model": model, "max_tokens": limit, "messages": turns, **kwargs}


def chat_message_reply(message: Any, model: str) -> ChatAnswer:
    text = "".join(block.text for block in unrefused(message, model).content if block.type == "text")
    calls = tuple({"id": str(block.id), "type": "function",
                   "function": {"name": block.name, "arguments": orjson.dumps(block.input).decode()}}
                  for block in message.content if block.type == "tool_use")
    if not text.strip() and not calls:
        raise LLMError(f"model {model!r} returned an empty completion (stop reason: {message.stop_reason})",
                       rejected=True)
    reason = str(message.stop_reason or "end_turn")
    return ChatAnswer(text, tool_calls=calls, finish_reason=_STOP_REASONS.get(reason, reason),
                      **anthropic_tokens(getattr(message, "usage", None)))
