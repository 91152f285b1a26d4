"""A real browser on a real server: Debian's headless Chromium driven by Playwright.

The server is ``stimserver serve`` in a subprocess (its access log goes to a file the
tests read) on a copy of the shipped demo data, or, for the rollout view, the app in a
thread of this process (``rollout_server``). Each test gets a fresh browser context: no
cookies, no storage. Every request the page makes is recorded (``page.requests``).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serverproc import ServerProcess, create_key, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 1366, "height": 768}


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Chromium with a fresh profile (``launch`` makes a new temporary user-data dir each time)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory) -> Iterator[ServerProcess]:
    """``stimserver serve`` on a copy of the shipped demo data (as scripts/serve makes it)."""
    root = tmp_path_factory.mktemp("ui-server")
    data = root / "data"
    shutil.copytree(ROOT / "data", data)
    server = ServerProcess(data, free_port(), root, env={"STIMSERVER_JOB_ORPHAN_SECONDS": "3600"}).start()
    try:
        yield server
    finally:
        server.terminate()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.requests = []  # type: ignore[attr-defined]
    page.on("request", lambda r: page.requests.append(r))
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    yield page
    context.close()


@pytest.fixture(scope="module")
def demo_key(demo_server) -> str:
    return create_key(demo_server.data_dir, "demo")


def sign_in(page, base_url: str, key: str, user: str | None = None) -> None:
    page.goto(base_url + "/ui/signin")
    page.fill("#key", key)
    if user:
        page.fill("#view-as", user)
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("#signout")


def artifact_dir() -> Path:
    """Where screenshots go: STIMSERVER_UI_ARTIFACTS, else a folder in the system temp dir."""
    folder = Path(os.environ.get("STIMSERVER_UI_ARTIFACTS") or Path(tempfile.gettempdir()) / "stimserver-ui-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def rollout_server(tmp_path_factory):
    """The app in a thread of this process (rollout files are written as fixtures, not run)."""
    from stimserver.config import Settings
    from stimserver.web.app import create_app
    from tests.aibread_server import ServerThread

    settings = Settings.build(data_dir=tmp_path_factory.mktemp("ui-rollout") / "data",
                              master_key="ui-rollout-master-key-0123456789", access_log=False, run_jobs=False)
    app = create_app(settings)
    server = ServerThread(settings, app).start()
    server.settings = settings  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()
