"""Fixtures for job tests: targets written straight into the store, waiting helpers, fakes."""
from __future__ import annotations

import asyncio
import copy
import re
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from stimserver.jobs import JobRef
from stimserver.schemas.targets import DEFAULT_TARGET_CONFIG
from stimserver.store import output
from stimserver.store.atomic import write_json_atomic
from stimserver.store.paths import DataPaths
from stimserver.store.records import Records
from tests.llm.fake_providers import anthropic_server, openai_server  # noqa: F401  (fixtures)

TEACHER = [{"role": "system", "content": "You are a patient maths tutor for children."}]
STUDENT = [{"role": "system", "content": "Answer briefly."}]


def hardcoded(n: int, prefix: str = "Q", **extra: Any) -> dict[str, Any]:
    return {"type": "hardcoded", "questions": [f"{prefix}{i}?" for i in range(n)], **extra}


def seed_target(paths: DataPaths, generators: list[dict[str, Any]], *, user: str = "alice", repo: str = "r1",
                target: str = "t1", teacher: str | None = "u1", student: str | None = "v1",
                teacher_messages: list[dict] = TEACHER, student_messages: list[dict] = STUDENT,
                tools: list[dict] | None = None, **config: Any) -> dict[str, Any]:
    """Repo, prompts and target records as the control plane writes them."""
    repo_file = paths.repo(user, repo) / "repo.json"
    if not repo_file.exists():
        write_json_atomic(repo_file, {"repo_name": repo, "base_model": "Qwen/Qwen3-32B"})
    if teacher:
        write_json_atomic(paths.prompt(user, repo, teacher),
                          {"prompt_name": teacher, "messages": teacher_messages, "tools": tools})
    if student:
        write_json_atomic(paths.prompt(user, repo, student),
                          {"prompt_name": student, "messages": student_messages, "tools": None})
    cfg = {**copy.deepcopy(DEFAULT_TARGET_CONFIG), "teacher_prompt": teacher, "student_prompt": student,
           "generators": generators, **config}
    record = {"target_name": target, "template": "default", "overrides": {}, "config": cfg}
    write_json_atomic(paths.target(user, repo, target) / "target.json", record)
    return record


def executable(path: Path, text: str) -> str:
    """Write ``text`` as an executable script (a fake trainer or evaluator the runner starts); its path."""
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def lines_of(paths: DataPaths, ref: JobRef) -> list[dict[str, Any]]:
    data = ref.job_dir(paths) / output.DATA_NAME
    if not data.exists():
        return []
    n = output.line_count(ref.job_dir(paths))
    return [orjson.loads(line) for line in data.read_bytes().splitlines()[:n]]


def record_of(paths: DataPaths, ref: JobRef) -> dict[str, Any] | None:
    try:
        return orjson.loads((ref.job_dir(paths) / "job.json").read_bytes())
    except FileNotFoundError:
        return None


async def wait_until(check: Callable[[], Any | Awaitable[Any]], what: str, timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class StubLLM:
    """An in-process completer: answers via ``reply(prompt)``; counts calls and concurrency."""

    def __init__(self, reply: Callable[[str], str] | None = None, delay: float = 0.0) -> None:
        self.reply = reply or numbered_answer
        self.delay = delay
        self.prompts: list[str] = []
        self.kwargs: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def complete(self, *, model: str, prompt: str, **kwargs: Any) -> str:
        self.prompts.append(prompt)
        self.kwargs.append({"model": model, **kwargs})
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return self.reply(prompt)
        finally:
            self.in_flight -= 1


_serial = iter(range(10**9))


def asked_count(prompt: str) -> int:
    """The number a template asked for: our test templates say 'exactly N'."""
    return int(re.search(r"exactly (\d+)", prompt).group(1))


def numbered_answer(prompt: str) -> str:
    """Distinct questions, as many as asked, numbered like models number them."""
    n = asked_count(prompt)
    call = next(_serial)
    return "\n".join(f"{i + 1}. Generated question {call}-{i}?" for i in range(n))


@pytest.fixture
def alice(master_headers) -> dict[str, str]:
    return {**master_headers, "X-User-Id": "alice"}


@pytest.fixture
def ref() -> JobRef:
    return JobRef("alice", "r1", "t1", "stim")


@pytest.fixture
def bread(bread_server):
    """The official client (master key, acting as the master user 'admin'), retries off."""
    from tests.conftest import MASTER_KEY

    return bread_server.client(MASTER_KEY)


__all__ = ["TEACHER", "STUDENT", "hardcoded", "seed_target", "lines_of", "record_of", "wait_until", "StubLLM",
           "numbered_answer", "asked_count", "Records", "Path"]


@pytest.fixture
def use(monkeypatch):
    """``use(server, **env)`` points the LLM settings of this test at a fake provider (and nothing else)."""
    def point_at(server, **env):
        for key, value in {**server.env(), "STIMSERVER_LLM_MAX_RETRIES": "1", **env}.items():
            monkeypatch.setenv(key, value)
    for key in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                "STIMSERVER_LLM_PROVIDER", "STIMSERVER_LLM_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    return point_at
