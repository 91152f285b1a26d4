"""A real stimserver on 127.0.0.1 for the official (synchronous) ``aibread`` client.

The app runs on its own event loop in a background thread, so a plain ``def`` test
can call the blocking client while the server answers.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any

import aibread
from aiohttp import web

from stimserver.config import Settings
from stimserver.web.app import create_app


class ServerThread:
    def __init__(self, settings: Settings, app: web.Application | None = None) -> None:
        self.app = app if app is not None else create_app(settings)
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._clients: list[aibread.Bread] = []
        self._thread = threading.Thread(target=self._run, name="stimserver-test", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("test server did not start")
        if self._error is not None:
            raise RuntimeError("test server failed to start") from self._error
        return self

    def stop(self) -> None:
        while self._clients:  # their pooled sockets, closed before the garbage collector finds them half-way
            self._clients.pop().close()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def client(self, api_key: str, **kwargs: Any) -> aibread.Bread:
        """An official client of this server, closed when the server stops."""
        kwargs.setdefault("max_retries", 0)
        client = aibread.Bread(api_key=api_key, base_url=self.base_url, **kwargs)
        self._clients.append(client)
        return client

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported by start(); never left to the thread's excepthook
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()
