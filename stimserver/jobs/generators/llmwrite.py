"""Shared by the LLM generators: their settings at plan time, and chunked question writing.

Large ``numq`` values are split into chunks written concurrently (each one request, plus
the top-up rounds ``write_questions`` makes when a model under-delivers); how many
requests are in flight at once is capped by the target's ``max_concurrency`` (the
job's completer holds the semaphore). Questions are de-duplicated across chunks; what
duplicates remove is asked for again a bounded number of times, and the job fails
rather than repeat a question to reach ``numq``.
"""
from __future__ import annotations

import asyncio
import math
from pathlib import PurePosixPath
from typing import Any, Awaitable, Callable

from ...llm import validate_template, write_questions
from ...llm.questions import MAX_TEMPLATE_BYTES
from ...store.paths import name_problem
from ..kinds import JobFailed, JobRun
from .base import PlanContext

__all__ = ["plan_llm_fields", "write_chunked", "gather_or_cancel"]

TOP_UP_CALLS = 3


def _model(ctx: PlanContext) -> str:
    model = ctx.field("model")
    if model is None:
        model = ctx.config.get("model_name")
    if not isinstance(model, str) or not model.strip():
        raise ctx.problem("model is required for an LLM generator (e.g. 'claude-sonnet-4-5-20250929', or a "
                          "model your OpenAI-compatible server serves); the target's model_name is used if set")
    return model.strip()


def _temperature(ctx: PlanContext) -> float | None:
    value = ctx.field("temperature")
    if value is None:
        value = ctx.config.get("temperature")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 2:
        raise ctx.problem(f"temperature must be a number from 0 to 2, got {value!r}")
    return float(value)


def _max_tokens(ctx: PlanContext) -> int | None:
    value = ctx.int_field("max_tokens", lo=1)
    if value is None:
        value = ctx.config.get("max_tokens")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ctx.problem(f"the target's max_tokens must be a positive integer, got {value!r}")
    return value


def _template(ctx: PlanContext, default: str | None, extra_names: tuple[str, ...]) -> str:
    content = ctx.field("template_content")
    path = ctx.field("template_path")
    if content is not None:
        if not isinstance(content, str):
            raise ctx.problem("template_content must be a string")
        text = content
    elif path is not None:
        text = _read_template(ctx, path)
    elif default is not None:
        text = default
    else:
        raise ctx.problem("template_path or template_content is required")
    try:
        validate_template(text, extra_names=extra_names)
    except ValueError as e:
        raise ctx.problem(str(e)) from None
    return text


def _read_template(ctx: PlanContext, path: object) -> str:
    if not isinstance(path, str) or not path.strip():
        raise ctx.problem("template_path must be a non-empty string")
    name = PurePosixPath(path.strip()).name
    if name_problem(name) is not None:
        raise ctx.problem(f"template_path {path!r} does not name a template file")
    src = ctx.source
    text = src.records.template(src.user, src.repo, name)
    if text is None:
        raise ctx.problem(f"template_path {path!r}: there is no templates/{name} (UTF-8 text) in repo "
                          f"'{src.repo}' (send template_content to create it)")
    if len(text.encode("utf-8")) > MAX_TEMPLATE_BYTES:
        raise ctx.problem(f"template templates/{name} is larger than 1 MiB")
    return text


def plan_llm_fields(ctx: PlanContext, *, default_template: str | None,
                    extra_names: tuple[str, ...] = ()) -> dict[str, Any]:
    extra_kwargs = ctx.config.get("extra_kwargs") or {}
    if not isinstance(extra_kwargs, dict):
        raise ctx.problem("the target's extra_kwargs must be an object")
    return {
        "numq": ctx.numq(),
        "model": _model(ctx),
        "temperature": _temperature(ctx),
        "max_tokens": _max_tokens(ctx),
        "extra_kwargs": extra_kwargs,
        "template": _template(ctx, default_template, extra_names),
    }


async def gather_or_cancel(aws: list[Awaitable[Any]]) -> list[Any]:
    """Like ``gather``, but the first failure cancels (and awaits) the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _key(question: str) -> str:
    return " ".join(question.casefold().split())


async def write_chunked(spec: dict[str, Any], run: JobRun, *, chunk: int,
                        template_vars: Callable[[int], dict[str, object]] | None = None) -> list[str]:
    """``spec['numq']`` distinct questions, asked for in chunks of at most ``chunk``.

    ``template_vars(i)`` supplies extra template values for request ``i`` (e.g. a persona).
    """
    numq = spec["numq"]

    async def ask(i: int, count: int) -> list[str]:
        return await write_questions(
            run.llm, model=spec["model"], template_text=spec["template"], numq=count,
            prompt_u=run.spec["prompt_u"], temperature=spec["temperature"], max_tokens=spec["max_tokens"],
            extra_kwargs=spec["extra_kwargs"], template_vars=template_vars(i) if template_vars else None)

    sizes = [min(chunk, numq - k * chunk) for k in range(math.ceil(numq / chunk))]
    results = await gather_or_cancel([ask(i, n) for i, n in enumerate(sizes)])
    questions: list[str] = []
    seen: set[str] = set()

    def merge(batch: list[str]) -> None:
        for q in batch:
            if _key(q) not in seen:
                seen.add(_key(q))
                questions.append(q)

    for batch in results:
        merge(batch)
    calls = len(sizes)
    while len(questions) < numq and calls < len(sizes) + TOP_UP_CALLS:
        merge(await ask(calls, numq - len(questions)))
        calls += 1
    if len(questions) < numq:
        raise JobFailed(f"the model wrote only {len(questions)} distinct questions of the {numq} asked for "
                        f"({calls} requests); stimserver does not repeat questions to pad the output — "
                        "try another model, a higher max_tokens or a smaller numq")
    return questions[:numq]
