"""Question writing: render a prompt template, ask a model, parse its answer into questions.

`write_questions` never pads. When the model under-delivers it asks again for the missing
number only, and fails if it still falls short: the hosted service silently cycled the
questions it had, which users could not tell apart from real output.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from .providers import LLMError
from .templates import AVOID_REPEATS_NOTE, MAX_TEMPLATE_BYTES, validate_template

__all__ = [
    "MAX_TEMPLATE_BYTES",
    "Completer",
    "parse_questions",
    "render_template",
    "validate_template",
    "write_questions",
]

# Top-up prompts list earlier questions so the model avoids them; cap the list's prompt cost.
_MAX_LISTED_REPEATS = 200

_FENCE = re.compile(r"^```[\w-]*$")
_HEADING = re.compile(r"^#{1,6}\s")
_MARKER = re.compile(
    r"""^(?:
        [•·▪]\s*                           # bullet glyphs
      | [-*+]\s+                           # markdown bullets
      | \(\d{1,4}\)\s*                     # (1)
      | \d{1,4}[.)](?!\d)\s*               # 1. or 1) but not 1.5
      | (?:q|question)\s*\d{1,4}\s*[:.)-]\s*  # Q1: or Question 1.
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "`": "`"}


class Completer(Protocol):
    """What `write_questions` needs from a client; `LLMClient` is one."""

    async def complete(
        self,
        *,
        model: str,
        prompt: str,
        temperature: float | None,
        max_tokens: int | None,
        extra_kwargs: dict[str, Any] | None,
    ) -> str: ...


def render_template(template_text: str, *, numq: int, prompt_u: str, **extra: object) -> str:
    """Fill a validated template; raises ValueError like `validate_template`."""
    validate_template(template_text, extra_names=extra)
    return string.Template(template_text).substitute(numq=numq, prompt_u=prompt_u, **extra)


def parse_questions(text: str) -> list[str]:
    """Pull the questions out of a model's answer, one per line or as a JSON array of strings.

    Numbering, bullets, markdown bold, wrapping quotes, code fences, headings, blank lines and
    preamble lines such as "Here are 5 questions:" are dropped. Duplicates are kept.
    """
    items = _json_strings(text)
    lines = [" ".join(item.split()) for item in items] if items is not None else text.splitlines()
    return [question for question in map(_clean_line, lines) if question]


async def write_questions(
    client: Completer,
    *,
    model: str,
    template_text: str,
    numq: int,
    prompt_u: str,
    temperature: float | None,
    max_tokens: int | None,
    extra_kwargs: dict[str, Any] | None,
    max_rounds: int = 4,
    template_vars: Mapping[str, object] | None = None,
) -> list[str]:
    """Return exactly `numq` distinct questions written by `model`.

    Duplicates (ignoring case and whitespace) are dropped, also across rounds; each further
    round asks only for the missing number and lists the questions already written. Raises
    LLMError after `max_rounds` calls that together fall short, ValueError for a bad template.
    """
    if numq < 1 or max_rounds < 1:
        raise ValueError(f"numq and max_rounds must be at least 1, not {numq} and {max_rounds}")
    questions: list[str] = []
    seen: set[str] = set()
    for _ in range(max_rounds):
        prompt = render_template(
            template_text, numq=numq - len(questions), prompt_u=prompt_u, **(template_vars or {})
        )
        if questions:
            prompt += AVOID_REPEATS_NOTE + "\n".join(questions[-_MAX_LISTED_REPEATS:])
        answer = await client.complete(
            model=model,
            prompt=prompt,
            temperature=temperature,
            max_tokens=max_tokens,
            extra_kwargs=extra_kwargs,
        )
        for question in parse_questions(answer):
            key = " ".join(question.casefold().split())
            if key not in seen:
                seen.add(key)
                questions.append(question)
        if len(questions) >= numq:
            return questions[:numq]
    raise LLMError(
        f"model produced only {len(questions)} of {numq} distinct questions after {max_rounds} attempts"
    )


def _json_strings(text: str) -> list[str] | None:
    """The items of a JSON array of strings, optionally inside a code fence; else None."""
    lines = text.strip().splitlines()
    if lines and _FENCE.match(lines[0].strip()):
        lines = lines[1:-1] if len(lines) > 1 and lines[-1].strip() == "```" else lines[1:]
    body = "\n".join(lines).strip()
    if not body.startswith("["):
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, list) and all(isinstance(item, str) for item in data):
        return data
    return None


def _clean_line(line: str) -> str | None:
    text = line.strip()
    if not text or _FENCE.match(text) or _HEADING.match(text):
        return None
    text = text.replace("**", "")
    previous = None
    while text != previous:
        previous = text
        text = _MARKER.sub("", text, count=1).strip()
        text = _unquote(text)
    if not any(char.isalnum() for char in text):
        return None
    if text.endswith(":") and "?" not in text:
        return None
    return text


def _unquote(text: str) -> str:
    close = _QUOTE_PAIRS.get(text[:1])
    if close and len(text) >= 2 and text.endswith(close) and close not in text[1:-1]:
        return text[1:-1].strip()
    return text
