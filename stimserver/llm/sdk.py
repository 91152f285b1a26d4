"""The two provider SDKs, imported on first use."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["anthropic", "openai"]


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

anthropic: Any = _LazyModule("anthropic")
openai: Any = _LazyModule("openai")
