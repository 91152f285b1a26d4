"""Fixtures for the LLM layer: the fake provider servers and a client factory that cleans up."""

from collections.abc import AsyncIterator, Callable, Mapping

import pytest

from stimserver.config import Settings
from stimserver.llm import LLMClient, LLMConfig

from .fake_providers import anthropic_server, openai_server

__all__ = ["anthropic_server", "make_client", "openai_server"]


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[[Mapping[str, str]], LLMClient]]:
    """Build clients from an env mapping; they are closed when the test ends."""
    clients: list[LLMClient] = []

    def make(environ: Mapping[str, str]) -> LLMClient:
        clients.append(LLMClient(LLMConfig.from_settings(Settings.from_env(environ))))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()
