"""A pytest plugin for the official client's generated suite, run against a real stimserver.

Loaded into that suite's own pytest (``-p``) by ``test_generated_suite.py``, with the
environment it sets: ``TEST_API_BASE_URL`` (read by the generated conftest), and
``STIMSERVER_SDK_KEY``, ``STIMSERVER_SDK_DATA``, ``STIMSERVER_SDK_MASTER_USER``. It

* removes the ``Prism tests are disabled`` skip marks at collection (no other mark);
* gives the generated ``client`` fixtures the server's key: the generated conftest has a
  fixed ``api_key = "My API Key"``, and a bearer token with spaces is malformed here;
* before each case, restores the seeded world (``seeding.Seeder.ensure``) if an earlier
  case deleted part of it, so each case meets the same names.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from .seeding import Seeder

PRISM_SKIP = "Prism tests are disabled"

_seeder: Seeder | None = None


def _get_seeder() -> Seeder:
    global _seeder
    if _seeder is None:
        _seeder = Seeder(Path(os.environ["STIMSERVER_SDK_DATA"]), os.environ["TEST_API_BASE_URL"],
                         os.environ["STIMSERVER_SDK_KEY"], os.environ["STIMSERVER_SDK_MASTER_USER"])
    return _seeder


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.own_markers[:] = [m for m in item.own_markers
                               if not (m.name == "skip" and m.kwargs.get("reason") == PRISM_SKIP)]
    generated = sys.modules.get("tests.conftest")
    if generated is None or not hasattr(generated, "api_key"):
        raise pytest.UsageError("the generated suite's tests/conftest.py (with its api_key) was not loaded")
    generated.api_key = os.environ["STIMSERVER_SDK_KEY"]  # type: ignore[attr-defined]


def pytest_runtest_setup(item: pytest.Item) -> None:
    _get_seeder().ensure()


def pytest_sessionstart(session: pytest.Session) -> None:
    _get_seeder().ensure()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _seeder is not None:
        terminalreporter.write_line(f"stimserver-sdk: the seeded world was restored {_seeder.reseeded} times")
