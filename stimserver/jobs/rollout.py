"""The ``rollout`` job kind: every stimulus of the target's complete stim job → k trajectories.

Request ``n`` is trajectory ``n % k`` of stimulus ``n // k`` (``k`` =
``num_traj_per_stimulus``): one chat request (``llm.chat``) with the stimulus's
``trajectory_override_stimulus`` when the stim line has one, else its
``unconditioned_stimulus`` — messages and tools — sent to ``model_name`` with the target's
``temperature``, ``max_tokens`` and ``extra_kwargs``. Separate requests rather than
``n`` choices: Ollama and several other OpenAI-compatible servers ignore ``n``.

Line ``n`` is::

    {"stimulus_id": 3, "trajectory_id": 1, "question": "...", "stimulus": "<the question>",
     "unconditioned_stimulus": {...}, "conditioned_stimulus": {...},
     "response": {"role": "assistant", "content": "...", "finish_reason": "stop",
                  "usage": {"prompt_tokens": 12, "completion_tokens": 80, "total_tokens": 92}},
     "error": null, "model": "...", "temperature": 1.0, "tokens": 92}

plus ``response.tool_calls`` when the model called tools, and the stim line's
``trajectory_override_stimulus`` when it has one. A request the provider rejects for
itself alone (``LLMError.rejected``: too long, a refusal, an empty answer) gives a line
with ``response: null``, ``tokens: null`` and the ``error``; any other failure (the key,
the model, a provider still down after the retries) fails the job, keeping its lines. So
does a provider that rejects every request (a parameter it refuses, a context too small
for every prompt): until one request of the job succeeds, rejections are held back
(``_RejectionGuard``), and when ``ALL_REJECTED`` of them pile up the job fails without
logging them, so a resume asks them again.

The stimuli are frozen at submit (``store.frozen``: links to the stim output's files),
and the spec records the stim job id, so a re-run stim job never changes what this job
reads. Answers go through the job's answer log (``jobs.engine``): a resumed job asks
nothing it has an answer for, rejections included.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from ..llm import LLMError
from ..llm.batch import BatchItem, BatchResult
from ..llm.limiter import billed
from ..llm.prices import load_prices
from ..store import jobrecords
from ..store.answers import write_duplicates, write_failed
from ..store.frozen import FrozenLines, freeze
from ..store.jobrecords import JobStatus
from ..store.output import line_count
from ..store.stats import DuplicateCount, trajectory_key
from .batches import BatchRun
from .budget import Budget, check_priced
from .engine import AnswerStream, JobLLM
from .kinds import ConfigProblem, JobFailed, JobKind, JobPlan, JobRun, JobSource, ResumableFailure
from .stim import parse_config

__all__ = ["RolloutKind", "trajectory_line", "STIM_NOT_COMPLETE", "NO_MODEL"]

STIM_NOT_COMPLETE = "Stim job must complete before running rollout"
NO_MODEL = "model_name must be configured in target"
ANSWER_LOG = "rollout"
FAILED_SAVE_SECONDS = 1.0
ALL_REJECTED = 8  # rejections in a row, with no success in the job, that fail it
# Keys of the spec that name the input rather than the job: a failed rollout resumes on its
# own frozen stimuli even when the stim job was re-run since (``same_job``).
_INPUT_KEYS = ("stim_job_id", "stimuli")


def _stim_dir(source: JobSource) -> Path:
    return source.paths.job_dir(source.user, source.repo, source.target, "stim")


def _request(stim: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages and tools trajectory requests of this stim line send."""
    side = stim.get("trajectory_override_stimulus") or stim.get("unconditioned_stimulus")
    messages = side.get("messages") if isinstance(side, dict) else None
    if not isinstance(messages, list) or not messages:  # e.g. an imported line with a question only
        messages = [{"role": "user", "content": str(stim.get("question", ""))}]
    tools = side.get("tools") if isinstance(side, dict) else None
    return messages, tools if isinstance(tools, list) and tools else None


def _question(stim: dict[str, Any], messages: list[dict[str, Any]]) -> Any:
    if "question" in stim:
        return stim["question"]
    users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return users[-1] if users else None


def trajectory_line(stimulus_id: int, trajectory_id: int, stim: dict[str, Any], answer: dict[str, Any],
                    spec: dict[str, Any]) -> dict[str, Any]:
    """Line of trajectory ``trajectory_id`` of stimulus ``stimulus_id``, from its logged answer."""
    response = answer.get("response") if isinstance(answer, dict) else None
    error = answer.get("error") if isinstance(answer, dict) else "no answer was logged"
    messages, _ = _request(stim)
    question = _question(stim, messages)
    line: dict[str, Any] = {
        "stimulus_id": stimulus_id, "trajectory_id": trajectory_id, "question": question, "stimulus": question,
        "unconditioned_stimulus": stim.get("unconditioned_stimulus"),
        "conditioned_stimulus": stim.get("conditioned_stimulus"),
    }
    if "trajectory_override_stimulus" in stim:
        line["trajectory_override_stimulus"] = stim["trajectory_override_stimulus"]
    usage = response.get("usage") if isinstance(response, dict) else None
    line.update({"response": response if isinstance(response, dict) else None,
                 "error": None if isinstance(response, dict) else str(error),
                 "model": spec["model_name"], "temperature": spec["temperature"],
                 "tokens": usage.get("total_tokens") if isinstance(usage, dict) else None})
    return line


def _answer_key(answer: Any) -> int | None:
    """``stats.trajectory_key`` of the line this answer makes (None: failed, or not answered)."""
    if not isinstance(answer, dict):
        return None
    return trajectory_key({"response": answer.get("response"), "error": answer.get("error")})


def _failed(answer: Any) -> bool:
    return not (isinstance(answer, dict) and isinstance(answer.get("response"), dict))


class _RejectionGuard:
    """Holds each rejection until some request of the job has succeeded.

    ``limit`` rejections held at once, with no success yet, mean the provider rejects
    everything: the one that reaches it raises, and the job fails (the engine cancels the
    held ones, unlogged). ``limit`` must not exceed the requests the engine lets be in flight
    (its window, its in-flight slots), or the held requests could fill them and wait forever.
    """

    def __init__(self, limit: int, succeeded: bool) -> None:
        self.limit = max(1, limit)
        self.held = 0
        self.ok = asyncio.Event()
        if succeeded:
            self.ok.set()

    def success(self) -> None:
        self.ok.set()

    async def hold(self, error: str) -> None:
        if self.ok.is_set():
            return
        self.held += 1
        if self.held >= self.limit:
            raise ResumableFailure(f"the provider rejected all of the first {self.held} trajectory requests and "
                                   f"answered none; the last said: {error}; check the target's model_name, "
                                   "max_tokens and extra_kwargs and the provider's limits")
        try:
            await self.ok.wait()
        finally:
            self.held -= 1


class RolloutKind(JobKind):
    name = "rollout"

    def plan(self, source: JobSource) -> JobPlan:
        stim = jobrecords.read_record(_stim_dir(source))
        if stim is None:
            raise ConfigProblem(f"{STIM_NOT_COMPLETE}: target '{source.target}' has no stim job; "
                                f"POST /v1/repo/{source.repo}/targets/{source.target}/stim first")
        if stim.get("status") != JobStatus.COMPLETE:
            raise ConfigProblem(f"{STIM_NOT_COMPLETE}: the stim job of target '{source.target}' is "
                                f"{stim.get('status')}")
        raw = source.target_record.get("config") or {}
        if not raw.get("model_name"):
            raise ConfigProblem(f"{NO_MODEL}: target '{source.target}' has no model_name")
        config = parse_config(raw)
        if config.max_cost_usd is not None:
            check_priced(source.paths.root, str(config.model_name), batch=config.batch)
        stimuli = line_count(_stim_dir(source))
        shown = {"model_name": config.model_name, "num_traj_per_stimulus": config.num_traj_per_stimulus,
                 "temperature": config.temperature, "max_tokens": config.max_tokens,
                 "max_concurrency": config.max_concurrency, "extra_kwargs": dict(config.extra_kwargs),
                 "batch": config.batch, "max_cost_usd": config.max_cost_usd, "stim_job_id": stim.get("job_id")}
        return JobPlan(config=shown, spec={**shown, "stimuli": stimuli},
                       expected_lines=stimuli * config.num_traj_per_stimulus)

    def prepare(self, plan: JobPlan, source: JobSource, into: Path) -> None:
        """Freeze the stim output; refuse if the stim job changed since ``plan`` looked at it."""
        changed = ConfigProblem(f"the stim job of target '{source.target}' changed while the rollout was being "
                                "submitted; POST again")
        try:
            frozen = freeze(_stim_dir(source), into)
        except FileNotFoundError:
            raise changed from None
        now = jobrecords.read_record(_stim_dir(source))  # the files linked belong to the job this record names
        if (now is None or now.get("status") != JobStatus.COMPLETE or now.get("job_id") != plan.spec["stim_job_id"]
                or frozen != plan.spec["stimuli"]):
            raise changed

    def same_job(self, record: dict[str, Any], plan: JobPlan) -> bool:
        def job(d: Any) -> Any:
            return {k: v for k, v in d.items() if k not in _INPUT_KEYS} if isinstance(d, dict) else d
        return super().same_job({**record, "spec": job(record.get("spec")), "config": job(record.get("config"))},
                                JobPlan(job(plan.config), job(plan.spec), plan.expected_lines))

    async def produce(self, run: JobRun) -> AsyncIterator[dict[str, Any]]:
        spec = run.spec
        k = int(spec["num_traj_per_stimulus"])
        total = int(spec["stimuli"]) * k
        llm = run.llm
        if not isinstance(llm, JobLLM):
            raise JobFailed("the rollout needs the job runner's LLM client")
        try:
            frozen = await asyncio.to_thread(FrozenLines, run.job_dir)
        except FileNotFoundError:
            raise JobFailed("the rollout's copy of the stimuli is missing; DELETE …/rollout/output, then POST to "
                            "start over") from None
        try:
            if frozen.lines < spec["stimuli"]:
                raise JobFailed(f"the rollout's copy of the stimuli has {frozen.lines} lines, expected "
                                f"{spec['stimuli']}; DELETE …/rollout/output, then POST to start over")
            stims: dict[int, dict[str, Any]] = {}

            def stimulus(sid: int) -> dict[str, Any]:
                if sid not in stims:
                    if len(stims) > 1024:
                        stims.clear()
                    stims[sid] = frozen.line(sid)
                return stims[sid]

            batch = bool(spec.get("batch"))
            limit = spec.get("max_cost_usd")
            budget = None if limit is None else llm.limit_spending(float(limit), load_prices(run.data_root))

            def worst(n: int) -> float:
                assert budget is not None
                messages, tools = _request(stimulus(n // k))
                return budget.worst(spec["model_name"], len(orjson.dumps([messages, tools])), spec["max_tokens"],
                                    batch=batch)

            async def ask(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Any:
                return await llm.chat(model=spec["model_name"], messages=messages, tools=tools,
                                      temperature=spec["temperature"], max_tokens=spec["max_tokens"],
                                      extra_kwargs=spec["extra_kwargs"])

            async def send(n: int) -> dict[str, Any]:
                sid, tid = divmod(n, k)
                messages, tools = _request(stimulus(sid))
                try:
                    if budget is None:
                        answer = await ask(messages, tools)
                    else:
                        async with budget.spending(worst(n)):
                            answer = await ask(messages, tools)
                except LLMError as e:
                    if e.rejected:
                        await guard.hold(str(e))
                        return {"error": str(e)}
                    raise ResumableFailure(f"trajectory {tid} of stimulus {sid}: {e}") from None
                guard.success()
                return {"response": answer.response(), "billed": billed(answer)}

            concurrency = self.max_concurrency(spec)
            window = 4 * concurrency
            async with AnswerStream(run.job_dir, ANSWER_LOG, window=window, in_flight=concurrency) as stream:
                done = stream.log.done
                unasked = sum(1 for n in range(run.start, total) if n not in done)
                # A held rejection keeps its in-flight slot: never hold more than there are slots.
                guard = _RejectionGuard(min(ALL_REJECTED, concurrency, unasked),
                                        succeeded=any(not _failed(a) for a in done.values()))
                failed = sorted(n for n, a in stream.log.done.items() if n < total and _failed(a))
                await asyncio.to_thread(write_failed, run.job_dir, failed)
                duplicates = DuplicateCount(ids=True)  # the committed lines' count, from their answers
                for m in range(run.start):
                    duplicates.add(m // k, _answer_key(done.get(m)))
                known, saved_at, n = set(failed), time.monotonic(), run.start

                async def save() -> None:
                    await asyncio.to_thread(write_failed, run.job_dir, failed)
                    await asyncio.to_thread(write_duplicates, run.job_dir, duplicates.compared,
                                            duplicates.stimuli or [])

                if batch:
                    answers = stream.collected(run.start, total - run.start, await _batch_fill(
                        run, stream, llm, spec, stimulus, budget, worst if budget is not None else None))
                else:
                    answers = stream.ordered(run.start, total - run.start, send)
                async for answer in answers:
                    sid, tid = divmod(n, k)
                    if _failed(answer) and n not in known:
                        known.add(n)
                        failed.append(n)
                    duplicates.add(sid, _answer_key(answer))
                    if tid == k - 1:
                        duplicates.close()
                    if time.monotonic() - saved_at >= FAILED_SAVE_SECONDS:
                        saved_at = time.monotonic()
                        await save()
                    yield trajectory_line(sid, tid, stimulus(sid), answer, spec)
                    n += 1
                duplicates.close()
                await save()
        finally:
            frozen.close()


async def _batch_fill(run: JobRun, stream: AnswerStream, llm: JobLLM, spec: dict[str, Any],
                      stimulus: Callable[[int], dict[str, Any]], budget: Budget | None,
                      worst: Callable[[int], float] | None) -> Callable[[], Awaitable[None]]:
    """What fills the answer log in batch mode (``jobs.batches``): every unanswered trajectory."""
    k = int(spec["num_traj_per_stimulus"])
    total = int(spec["stimuli"]) * k
    api = llm.batches(spec["model_name"])
    await api.load()
    config = api.client.config

    def item(n: int, custom_id: str) -> BatchItem:
        messages, tools = _request(stimulus(n // k))
        return api.item(custom_id, messages=messages, tools=tools, temperature=spec["temperature"],
                        max_tokens=spec["max_tokens"], extra_kwargs=spec["extra_kwargs"])

    def keep(n: int, result: BatchResult) -> dict[str, Any]:
        if result.answer is not None:
            return {"response": result.answer.response(), "billed": billed(result.answer)}
        return {"error": str(result.error)}

    async def all_rejected(results: list[BatchResult]) -> None:
        if len(results) >= min(ALL_REJECTED, total) and not any(not _failed(a) for a in stream.log.done.values()):
            raise ResumableFailure(f"the provider rejected all {len(results)} requests of a batch and the job has "
                                   f"no answer yet; the first said: {results[0].error}; check the target's "
                                   "model_name, max_tokens and extra_kwargs")

    runner = BatchRun(job_dir=run.job_dir, job_id=str(run.job_id), api=api, llm=llm, stream=stream, item=item,
                      keep=keep, worst_usd=worst, budget=budget, poll_seconds=config.batch_poll_seconds,
                      batch_size=config.batch_size, on_rejections=all_rejected, stopping=run.stopping)
    wanted = list(range(run.start, total))
    return lambda: runner.fill(wanted)
