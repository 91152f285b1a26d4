"""Default question-writing prompts, in `string.Template` syntax like user templates.

The hosted service does not publish its default, so these ask plainly for what the parser
handles best: bare questions, one per line.
"""

__all__ = ["AVOID_REPEATS_NOTE", "DEFAULT_ONESHOT_TEMPLATE", "DEFAULT_PERSONA_TEMPLATE"]

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
