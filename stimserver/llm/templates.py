"""Question-writing templates: the one rule a template must follow, and the default prompts.

`validate_template` is used when a target is created (schemas/generators.py) and again
when its job is planned, on a template file read then: one rule, checked twice.

The hosted service does not publish its default, so these ask plainly for what the parser
handles best: bare questions, one per line.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

__all__ = ["AVOID_REPEATS_NOTE", "DEFAULT_ONESHOT_TEMPLATE", "DEFAULT_PERSONA_TEMPLATE", "MAX_TEMPLATE_BYTES",
           "REQUIRED_PLACEHOLDERS", "validate_template"]

MAX_TEMPLATE_BYTES = 1024 * 1024
REQUIRED_PLACEHOLDERS = ("numq", "prompt_u")


DEFAULT_ONESHOT_TEMPLATE = """\
You are helping to test an AI assistant. This is the assistant's system prompt:

<system_prompt>
${prompt_u}
</system_prompt>

Write exactly ${numq} diverse questions or requests that a user might send to this assistant.
Vary the topics, difficulty, length and tone, and keep them realistic for this assistant's purpose.
Each question must stand on its own and fit on a single line.

Reply with the ${numq} questions only: one per line, with no numbering, bullets, quotes,
headings or blank lines, and no text before or after them."""

DEFAULT_PERSONA_TEMPLATE = """\
You are helping to test an AI assistant. This is the assistant's system prompt:

<system_prompt>
${prompt_u}
</system_prompt>

Imagine this person talking to the assistant:

<persona>
${persona}
</persona>

Write exactly ${numq} diverse questions or requests this person would send to the assistant,
in their own voice: their concerns, their knowledge, their way of writing.
Each question must stand on its own and fit on a single line.

Reply with the ${numq} questions only: one per line, with no numbering, bullets, quotes,
headings or blank lines, and no text before or after them."""

AVOID_REPEATS_NOTE = """

These questions were already written. Do not repeat them or write close variants of them:
"""
"""Appended, followed by the earlier questions, to a top-up prompt that asks for the missing ones."""


def validate_template(text: str, *, extra_names: Iterable[str] = (), placeholders: bool = True) -> None:
    """Raise ValueError naming the problem if `text` is not a usable question template.

    It must fit in 1 MiB of UTF-8, be valid `string.Template` syntax, contain `${numq}` and
    `${prompt_u}`, and use no placeholder outside those and `extra_names`. With
    ``placeholders=False`` (a generator that does not render its template) only size and
    syntax are checked.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_TEMPLATE_BYTES:
        raise ValueError(f"template is {size} bytes; the limit is {MAX_TEMPLATE_BYTES} (1 MiB)")
    template = string.Template(text)
    for match in template.pattern.finditer(text):
        if match.group("invalid") is not None:
            start = match.start()
            line = text.count("\n", 0, start) + 1
            raise ValueError(
                f"template has a bad placeholder {text[start:start + 12]!r} on line {line}; "
                "placeholders look like ${name}, and a literal $ is written $$"
            )
    if not placeholders:
        return
    names = set(template.get_identifiers())
    missing = [name for name in REQUIRED_PLACEHOLDERS if name not in names]
    if missing:
        raise ValueError(f"template must contain {' and '.join(_placeholder(n) for n in missing)}")
    known = {*REQUIRED_PLACEHOLDERS, *extra_names}
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(
            f"template uses unknown placeholder {', '.join(map(_placeholder, unknown))}; "
            f"available: {', '.join(map(_placeholder, sorted(known)))}"
        )


def _placeholder(name: str) -> str:
    return "${" + name + "}"
