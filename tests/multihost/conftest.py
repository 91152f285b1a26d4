"""The multi-host cluster (tests/multihost/cluster.py), built once for the whole directory.

These tests run only when asked for (``scripts/test-multihost``, which sets
``STIMSERVER_MULTIHOST=1``; tests/conftest.py leaves the directory out otherwise, so the
default run does not take them twice). They are skipped, with the reason printed, only
when this machine really cannot build the cluster: ``cluster.why_not_possible`` tries
FUSE and the namespaces rather than guessing.

A fake OpenAI-compatible provider (tests/llm/fake_providers.py) listens on the bridge's
address, so every host's worker reaches it; it counts every request it receives.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from tests.llm.fake_providers import FakeOpenAI

from . import cluster

USER = "alice"
MODEL = "llama3.1:8b"
TEMPLATE = "Write exactly ${numq} questions a student of this tutor would ask: ${prompt_u}"


class ProviderThread:
    """A FakeOpenAI on its own event loop in a thread, reachable from every host."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="fake-llm")
        self.thread.start()
        self.fake: FakeOpenAI = self._call(self._make())
        self._serial = itertools.count()

    async def _make(self) -> FakeOpenAI:
        fake = FakeOpenAI()
        fake.default = self._answer
        await fake.start(host=cluster.BRIDGE_IP)
        return fake

    def _answer(self, body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        n = int(re.search(r"exactly (\d+)", prompt).group(1))  # type: ignore[union-attr]
        call = next(self._serial)
        return "\n".join(f"{i + 1}. Generated question {call}-{i}?" for i in range(n))

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def env(self) -> dict[str, str]:
        return {**self.fake.env(), "STIMSERVER_LLM_PROVIDER": "openai", "STIMSERVER_LLM_MAX_RETRIES": "2"}

    @property
    def requests(self) -> int:
        return len(self.fake.received)

    def close(self) -> None:
        self._call(self.fake.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@dataclass(frozen=True)
class Api:
    """HTTP to one web host (or to nginx), as the master key acting for ``USER``."""

    ip: str
    port: int

    def call(self, method: str, path: str, body: Any = None, *, key: str = cluster.MASTER_KEY,
             user: str | None = USER) -> tuple[int, Any]:
        from tests.serverproc import request

        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        if user is not None:
            headers["X-User-Id"] = user
        status, _, raw = request(self.port, method, path, headers, body=None if body is None else orjson.dumps(body),
                                 host=self.ip, timeout=60)
        return status, orjson.loads(raw) if raw else None

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, got = self.call(method, path, body)
        assert 200 <= status < 300, (method, path, status, got)
        return got


@dataclass
class Cluster:
    provider: ProviderThread

    def web(self, n: int) -> Api:
        return Api(cluster.host(n).ip, cluster.WEB_PORT)

    @property
    def nginx(self) -> Api:
        return Api("127.0.0.1", cluster.NGINX_PORT)

    def live_hosts(self) -> list[int]:
        return [h.n for h in cluster.HOST_LIST if cluster._try(lambda h=h: cluster._health(h.ip, cluster.WEB_PORT))]

    def stim(self, repo: str, target: str) -> str:
        return f"/v1/repo/{repo}/targets/{target}/stim"

    def make_target(self, repo: str, target: str, generators: list[dict[str, Any]], **config: Any) -> None:
        api = self.nginx
        if api.call("GET", f"/v1/repo/{repo}")[0] == 404:
            api.ok("POST", "/v1/repo", {"repo_name": repo})
            for name in ("teacher", "student"):
                api.ok("POST", f"/v1/repo/{repo}/prompts",
                       {"prompt_name": name, "messages": [{"role": "system", "content": f"You are the {name}."}]})
        api.ok("POST", f"/v1/repo/{repo}/targets", {"target_name": target, "template": "default", "overrides": {
            "teacher_prompt": "teacher", "student_prompt": "student", "generators": generators, **config}})

    def wait_status(self, api: Api, repo: str, target: str, statuses: tuple[str, ...], timeout: float = 90) -> Any:
        return cluster.wait_until(lambda: (s := api.ok("GET", self.stim(repo, target)))["status"] in statuses and s,
                                  f"{repo}/{target} to be {'/'.join(statuses)}", timeout, 0.1)

    def all_lines(self, api: Api, repo: str, target: str) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for _ in range(10_000):
            page = api.ok("GET", f"{self.stim(repo, target)}/output?offset={len(lines)}&limit=1000")
            lines += page["output"]
            if not page["has_more"]:
                return lines
        raise AssertionError("paging did not end")


def hardcoded(n: int, tag: str = "q") -> dict[str, Any]:
    return {"type": "hardcoded", "questions": [f"{tag} {i}?" for i in range(n)], "numq": n}


def oneshot(numq: int) -> dict[str, Any]:
    return {"type": "oneshot_qs", "model": MODEL, "numq": numq, "template_content": TEMPLATE}


@pytest.fixture(scope="session")
def mh() -> Iterator[Cluster]:
    problem = cluster.why_not_possible()
    if problem:
        print(f"\ntests/multihost skipped: {problem}")
        pytest.skip(f"multi-host cluster impossible on this machine: {problem}")
    cluster.down(quiet=True)
    provider = None
    try:
        cluster.build_storage()  # the bridge exists from here: the provider can listen on it
        provider = ProviderThread()
        for h in cluster.HOST_LIST:
            cluster.build_host(h)
        for h in cluster.HOST_LIST:
            cluster.start_processes(h, provider.env())
        cluster.start_nginx()
        started = time.monotonic()
        yield Cluster(provider)
        print(f"\nmultihost cluster lived {time.monotonic() - started:.0f} s")
    finally:
        if os.environ.get("STIMSERVER_MULTIHOST_KEEP") != "1":  # kept for a look: the next run removes it
            cluster.down(quiet=True)
        if provider is not None:
            provider.close()
