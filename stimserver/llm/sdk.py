"""The two provider SDKs, imported on first use."""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType
from typing import Any

__all__ = ["anthropic", "openai", "preload"]


class _LazyModule:
    """Imports an SDK on first attribute access.

    The two SDKs take seconds to import together; every ``stimserver`` command and every
    server start would pay that, although only LLM generators use them.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    @property
    def loaded(self) -> bool:
        return self._module is not None

    def load(self) -> None:
        if self._module is None:
            self._module = importlib.import_module(self._name)

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

anthropic: Any = _LazyModule("anthropic")
openai: Any = _LazyModule("openai")


async def preload(provider: str) -> None:
    """Import the provider's SDK in a thread: on the event loop it would stall every request for ~0.5 s."""
    module = anthropic if provider == "anthropic" else openai
    if not module.loaded:
        await asyncio.to_thread(module.load)
