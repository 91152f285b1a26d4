"""Shared by the LLM generators: their settings at plan time, and chunked question writing.

The model and template rules are those of ``schemas.generators`` (``effective_model``,
``check_template_text``), applied again here to the stored config and the files of now.

Large ``numq`` values are split into chunks, one request each, sent concurrently through
the job's answer stream (``jobs.engine``): at most the target's ``max_concurrency`` in
flight, every answer logged before it is used, answers used in request order as soon as
their prefix is known. Questions are de-duplicated across chunks; what duplicates or
short answers leave missing is asked for by top-up requests after the planned ones, a
bounded number of rounds, and the job fails rather than repeat a question to reach ``numq``.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ...llm import Answer, parse_questions, render_template
from ...llm.limiter import billed
from ...llm.templates import AVOID_REPEATS_NOTE
from ...schemas.generators import effective_model
from ...store.paths import template_file_name
from ..budget import Budget
from ..engine import AnswerStream, JobLLM
from ..kinds import JobFailed, JobRun
from .base import PlanContext

__all__ = ["plan_llm_fields", "stream_chunked", "gather_or_cancel"]

TOP_UP_ROUNDS = 3
MAX_LISTED_REPEATS = 200  # top-up prompts list earlier questions; cap the prompt's cost


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


class _Kept:
    """The distinct questions so far, in request order: what the generator's lines are."""

    def __init__(self, numq: int) -> None:
        self.numq = numq
        self.questions: list[str] = []
        self._seen: set[str] = set()

    def merge(self, parsed: list[str], count: int) -> list[str]:
        """Keep the first ``count`` distinct questions of one answer that are new; return them."""
        mine: list[str] = []
        for q in parsed:
            if len(mine) >= count or len(self.questions) >= self.numq:
                break
            if _key(q) not in self._seen:
                self._seen.add(_key(q))
                mine.append(q)
                self.questions.append(q)
        return mine


async def stream_chunked(spec: dict[str, Any], run: JobRun, index: int, *, chunk: int,
                         template_vars: Callable[[int], dict[str, object]] | None = None
                         ) -> AsyncIterator[list[str]]:
    """``spec['numq']`` distinct questions, yielded answer by answer as the request prefix completes.

    The planned requests ask for chunks of at most ``chunk``; each answer is logged in the
    job's ``answers-<index>.jsonl`` as its parsed questions. A question is kept at its first
    place in request order. What duplicates or a short answer left missing is asked for by
    top-up requests after the planned ones (numbered on, at most ``TOP_UP_ROUNDS`` rounds),
    which list the questions already kept. ``template_vars(n)`` supplies extra template values
    for request ``n`` (e.g. a persona).
    """
    numq = spec["numq"]
    sizes = [min(chunk, numq - k * chunk) for k in range(math.ceil(numq / chunk))]
    kept = _Kept(numq)
    counts: dict[int, int] = dict(enumerate(sizes))
    avoid: dict[int, list[str]] = {}

    async def send(n: int) -> dict[str, Any]:
        prompt = render_template(spec["template"], numq=counts[n], prompt_u=run.spec["prompt_u"],
                                 **(template_vars(n) if template_vars else {}))
        if n in avoid:
            prompt += AVOID_REPEATS_NOTE + "\n".join(avoid[n][-MAX_LISTED_REPEATS:])
        budget: Budget | None = getattr(run.llm, "budget", None)
        if budget is None:
            answer = await ask(prompt)
        else:
            async with budget.spending(budget.worst(spec["model"], len(prompt.encode()), spec["max_tokens"])):
                answer = await ask(prompt)
        logged: dict[str, Any] = {"questions": parse_questions(answer.text)}
        if isinstance(run.llm, JobLLM):  # the bill beside the answer: the job's usage is rebuilt from it
            logged["billed"] = billed(answer)
        return logged

    async def ask(prompt: str) -> Answer:
        kwargs = {"model": spec["model"], "prompt": prompt, "temperature": spec["temperature"],
                  "max_tokens": spec["max_tokens"], "extra_kwargs": spec["extra_kwargs"]}
        if isinstance(run.llm, JobLLM):
            return await run.llm.ask(**kwargs)
        return Answer(await run.llm.complete(**kwargs))

    window = 4 * max(1, int(run.spec.get("max_concurrency") or 10))
    async with AnswerStream(run.job_dir, str(index), window=window) as stream:
        n = 0
        async for answer in stream.ordered(0, len(sizes), send):
            yield kept.merge(_questions_of(answer), sizes[n])
            n += 1
        for _ in range(TOP_UP_ROUNDS):
            missing = numq - len(kept.questions)
            if missing <= 0:
                break
            extra = [min(chunk, missing - k * chunk) for k in range(math.ceil(missing / chunk))]
            for k, size in enumerate(extra):
                counts[n + k] = size
                avoid[n + k] = list(kept.questions)
            async for answer in stream.ordered(n, len(extra), send):
                yield kept.merge(_questions_of(answer), counts[n])
                n += 1
    if len(kept.questions) < numq:
        raise JobFailed(f"the model wrote only {len(kept.questions)} distinct questions of the {numq} asked for "
                        f"({n} requests); stimserver does not repeat questions to pad the output — "
                        "try another model, a higher max_tokens or a smaller numq")


def _questions_of(answer: Any) -> list[str]:
    qs = answer.get("questions") if isinstance(answer, dict) else None
    return [q for q in qs if isinstance(q, str)] if isinstance(qs, list) else []
