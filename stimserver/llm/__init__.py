"""The LLM layer stim generators call: provider clients and question writing."""

from .chat import ChatAnswer
from .errors import Answer
from .limiter import Usage
from .providers import DEFAULT_MAX_TOKENS, LLMClient, LLMConfig, LLMError
from .questions import (
    MAX_TEMPLATE_BYTES,
    Completer,
    parse_questions,
    render_template,
    validate_template,
    write_questions,
)
from .templates import DEFAULT_ONESHOT_TEMPLATE, DEFAULT_PERSONA_TEMPLATE

__all__ = [
    "Answer",
    "ChatAnswer",
    "Usage",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_ONESHOT_TEMPLATE",
    "DEFAULT_PERSONA_TEMPLATE",
    "MAX_TEMPLATE_BYTES",
    "Completer",
    "LLMClient",
    "LLMConfig",
    "LLMError",
    "parse_questions",
    "render_template",
    "validate_template",
    "write_questions",
]
