"""Shared by the LLM generators: their settings at plan time, and chunked question writing.

The model and template rules are those of ``schemas.generators`` (``effective_model``,
``check_template_text``), applied again here to the stored config and the files of now.

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
from collections.abc import Awaitable, Callable
from typing import Any

from ...llm import write_questions
from ...schemas.generators import effective_model
from ...store.paths import template_file_name
from ..kinds import JobFailed, JobRun
from .base import PlanContext

__all__ = ["plan_llm_fields", "write_chunked", "gather_or_cancel"]

TOP_UP_CALLS = 3


def _template(ctx: PlanContext, default: str | None) -> str:
    """The template text: sent inline (checked when the target was created), a repo file, or the default."""
    gen = ctx.gen
    if gen.template_content is not None:
        return gen.template_content
    if gen.template_path is None:
        if default is None:  # the model requires a template where there is no default
            raise ctx.problem("template_path or template_content is required")
        return default
    name = template_file_name(gen.template_path)
    src = ctx.source
    text = src.records.template(src.user, src.repo, name)
    if text is None:
        raise ctx.problem(f"template_path {gen.template_path!r}: there is no templates/{name} (UTF-8 text) in repo "
                          f"'{src.repo}' (send template_content to create it)")
    try:
        gen.check_template_text(text)  # the rule creation applied; the file may have changed since
    except ValueError as e:
        raise ctx.problem(f"{gen.template_path}: {e}") from None
    return text


def plan_llm_fields(ctx: PlanContext, *, default_template: str | None) -> dict[str, Any]:
    """Resolved settings of an LLM generator: its own, else the target's."""
    gen, config = ctx.gen, ctx.config
    try:
        model = effective_model(gen, config.model_name)
    except ValueError as e:
        raise ctx.problem(str(e)) from None
    return {
        "numq": gen.numq,
        "model": model,
        "temperature": gen.temperature if gen.temperature is not None else config.temperature,
        "max_tokens": gen.max_tokens if gen.max_tokens is not None else config.max_tokens,
        "extra_kwargs": dict(config.extra_kwargs),
        "template": _template(ctx, default_template),
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
