"""A counting proxy between stimserver and the model server: what the model was really asked.

The model server (``scripts/local-model``) outlives any stimserver the tests start and kill;
this proxy, on its own thread and event loop, forwards every request to it unchanged and keeps
what a test needs to check stimserver against the model: each chat request's body, each
answer's ``usage`` as the model server reported it, and how many requests were open at once
(so a test knows what was in flight when it killed stimserver).
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web


@dataclass
class Seen:
    bodies: list[dict[str, Any]] = field(default_factory=list)
    usages: list[dict[str, int]] = field(default_factory=list)
    open: int = 0


class CountingProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")  # e.g. http://127.0.0.1:8001/v1
        self.seen = Seen()
        self.lock = threading.Lock()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="counting-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> CountingProxy:
        self._thread.start()
        assert self._ready.wait(30), "the counting proxy did not start"
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._session is not None:
                await self._session.close()
            if self._runner is not None:
                await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def chat_requests(self) -> int:
        with self.lock:
            return len(self.seen.bodies)

    def in_flight(self) -> int:
        with self.lock:
            return self.seen.open

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/v1/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = self._loop.run_until_complete(self._new_session())
        self._ready.set()
        self._loop.run_forever()

    @staticmethod
    async def _new_session() -> aiohttp.ClientSession:  # made on the proxy's own loop, which it then uses
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600))

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        chat = request.method == "POST" and request.path.endswith("/chat/completions")
        if chat:
            with self.lock:
                self.seen.bodies.append(orjson.loads(body))
                self.seen.open += 1
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
            async with self._session.request(request.method, self.upstream + request.path[len("/v1"):],
                                             data=body or None, headers=headers) as answer:
                payload = await answer.read()
                if chat and answer.status == 200:
                    usage = orjson.loads(payload).get("usage") or {}
                    with self.lock:
                        self.seen.usages.append(usage)
                return web.Response(status=answer.status, body=payload,
                                    content_type=answer.content_type or "application/json")
        finally:
            if chat:
                with self.lock:
                    self.seen.open -= 1
