"""A whole conversation in, one assistant reply out: the request a rollout trajectory is.

Messages and tools arrive in the OpenAI chat shape (what prompts store). An
OpenAI-compatible server gets them as they are; for the Anthropic Messages API they are
converted: ``system`` messages become the ``system`` field, tool schemas become
``{name, description, input_schema}``, an assistant's ``tool_calls`` become ``tool_use``
blocks and ``tool`` messages ``tool_result`` blocks. Either way the reply comes back in
one shape, ``ChatAnswer``: content, OpenAI-style ``tool_calls``, a ``finish_reason``
normalised to OpenAI's words (``stop``, ``length``, ``tool_calls``) and the token usage.

An empty text is a valid answer when the model called a tool. A refusal, a content
filter or an empty completion raise an ``LLMError`` with ``rejected`` set: that request
alone failed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .errors import Answer, LLMError
from .wire import DEFAULT_MAX_TOKENS, answered_choice, anthropic_kwargs, openai_kwargs, tokens, unrefused

if TYPE_CHECKING:
    import anthropic
    import openai

__all__ = ["ChatAnswer", "create_chat_message", "create_chat_chat_completion", "chat_message_reply",
           "chat_completion_reply", "anthropic_messages", "anthropic_tools"]

Message = dict[str, Any]

_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                 "pause_turn": "stop"}


@dataclass(frozen=True)
class ChatAnswer(Answer):
    """One assistant reply; ``text`` is its content ("" when it only called tools)."""

    tool_calls: tuple[dict[str, Any], ...] = field(default=())
    finish_reason: str = "stop"

    def response(self) -> dict[str, Any]:
        """The reply as a rollout line keeps it (``response``)."""
        out: dict[str, Any] = {
            "role": "assistant", "content": self.text, "finish_reason": self.finish_reason,
            "usage": {"prompt_tokens": self.input_tokens, "completion_tokens": self.output_tokens,
                      "total_tokens": self.input_tokens + self.output_tokens}}
        if self.tool_calls:
            out["tool_calls"] = [dict(call) for call in self.tool_calls]
        return out


def _tools_kwarg(tools: list[dict[str, Any]] | None, extra_kwargs: dict[str, Any] | None) -> None:
    if tools and extra_kwargs and "tools" in extra_kwargs:
        raise LLMError("extra_kwargs may not set 'tools': the tools come from the prompt")


# -- OpenAI-compatible servers ---------------------------------------------------------

async def create_chat_chat_completion(client: openai.AsyncOpenAI, model: str, messages: list[Message],
                                      tools: list[dict[str, Any]] | None, temperature: float | None,
                                      max_tokens: int | None, extra_kwargs: dict[str, Any] | None) -> Any:
    _tools_kwarg(tools, extra_kwargs)
    kwargs = openai_kwargs(client, temperature, max_tokens, extra_kwargs)
    if tools:
        kwargs["tools"] = tools
    return await client.chat.completions.create(model=model, messages=messages, **kwargs)  # type: ignore[arg-type]


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
    usage = getattr(completion, "usage", None)
    return ChatAnswer(text, tokens(usage, "prompt_tokens"), tokens(usage, "completion_tokens"), calls,
                      str(choice.finish_reason or ("tool_calls" if calls else "stop")))


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
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
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


async def create_chat_message(client: anthropic.AsyncAnthropic, model: str, messages: list[Message],
                              tools: list[dict[str, Any]] | None, temperature: float | None, max_tokens: int | None,
                              extra_kwargs: dict[str, Any] | None) -> Any:
    _tools_kwarg(tools, extra_kwargs)
    kwargs = anthropic_kwargs(client, temperature, extra_kwargs)
    system, turns = anthropic_messages(messages)
    if system is not None:
        kwargs["system"] = system
    if tools:
        kwargs["tools"] = anthropic_tools(tools)
    limit = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    return await client.messages.create(model=model, max_tokens=limit, messages=turns,  # type: ignore[arg-type]
                                        **kwargs)


def chat_message_reply(message: Any, model: str) -> ChatAnswer:
    text = "".join(block.text for block in unrefused(message, model).content if block.type == "text")
    calls = tuple({"id": str(block.id), "type": "function",
                   "function": {"name": block.name, "arguments": orjson.dumps(block.input).decode()}}
                  for block in message.content if block.type == "tool_use")
    if not text.strip() and not calls:
        raise LLMError(f"model {model!r} returned an empty completion (stop reason: {message.stop_reason})",
                       rejected=True)
    usage = getattr(message, "usage", None)
    reason = str(message.stop_reason or "end_turn")
    return ChatAnswer(text, tokens(usage, "input_tokens"), tokens(usage, "output_tokens"), calls,
                      _STOP_REASONS.get(reason, reason))
