"""The ``stim`` job kind: a target's generators → one stimulus line per question.

Line ``stimulus_id`` (0-based, global across the target's generators, in generator
order) is::

    {"stimulus_id": 7, "question": "...", "type": "oneshot_qs",
     "unconditioned_stimulus": {"messages": [<teacher prompt messages>, {"role": "user", "content": "..."}]},
     "conditioned_stimulus":   {"messages": [<student prompt messages>, {"role": "user", "content": "..."}]},
     "trajectory_override_stimulus": {...}}   # = conditioned_stimulus, only with rollout_with_conditioned

plus ``"tools"`` inside a stimulus when its prompt has tools. Generators run one after
the other, in order. An LLM generator's answers are logged request by request
(``answers-<i>.jsonl``, see ``jobs.engine``) and its lines are yielded as soon as the
request prefix they come from is answered; any other generator's question list is
checkpointed (``questions-<i>.json``) before its first line. Either way a resumed job
rebuilds byte-identical lines without asking a model again for what was answered.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..llm import LLMError
from ..llm.prices import load_prices
from ..schemas.targets import TargetConfig, config_problems, missing_prompts
from ..schemas.validation import Invalid, parse
from .budget import check_priced
from .engine import JobLLM
from .generators import GENERATORS, PlanContext
from .kinds import ConfigProblem, JobFailed, JobKind, JobPlan, JobRun, JobSource, ResumableFailure, checkpointed

__all__ = ["StimKind", "parse_config", "prompt_text", "stim_line"]

MISSING_MESSAGE = "Target must have generators and teacher prompt configured"


def parse_config(raw: dict[str, Any]) -> TargetConfig:
    """A stored config, parsed by the rules that checked it at creation, plus ``config_problems``.

    Both run again because a record may predate today's rules, or be written by hand.
    """
    try:
        config = parse(TargetConfig, raw, ())
    except Invalid as e:
        raise ConfigProblem("; ".join(_where(raw, d["loc"]) + d["msg"] for d in e.detail)) from None
    problems = config_problems(config)
    if problems:
        raise ConfigProblem("; ".join(_where(raw, list(loc)) + msg for loc, msg in problems))
    return config


def _where(raw: dict[str, Any], loc: list[Any]) -> str:
    """``generators[1] (oneshot_qs): numq: `` for a generator's field, ``field: `` otherwise."""
    if len(loc) >= 2 and loc[0] == "generators" and isinstance(loc[1], int):
        gens = raw.get("generators") or []
        gen = gens[loc[1]] if loc[1] < len(gens) else None
        kind = gen.get("type") if isinstance(gen, dict) else None
        rest = ".".join(map(str, loc[2:]))
        return f"generators[{loc[1]}] ({kind}): " + (f"{rest}: " if rest else "")
    return ".".join(map(str, loc)) + ": " if loc else ""


def prompt_text(messages: list[dict[str, Any]]) -> str:
    """A prompt's messages as plain text, for ``${prompt_u}``."""
    parts: list[tuple[str, str]] = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "\n".join(str(c.get("text")) for c in content if isinstance(c, dict) and c.get("text"))
        if isinstance(content, str) and content.strip():
            parts.append((str(m.get("role", "")), content))
    if len(parts) == 1:
        return parts[0][1]
    return "\n\n".join(f"{role}: {text}" for role, text in parts)


def _stimulus(prompt: dict[str, Any], question: str) -> dict[str, Any]:
    stim: dict[str, Any] = {"messages": [*prompt["messages"], {"role": "user", "content": question}]}
    if prompt.get("tools"):
        stim["tools"] = prompt["tools"]
    return stim


def stim_line(stimulus_id: int, question: str, gen: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    line = {
        "stimulus_id": stimulus_id,
        "question": question,
        "type": gen["type"],
        "unconditioned_stimulus": _stimulus(spec["teacher"], question),
        "conditioned_stimulus": _stimulus(spec["student"], question),
    }
    if gen.get("rollout_with_conditioned"):
        line["trajectory_override_stimulus"] = line["conditioned_stimulus"]
    return line


class StimKind(JobKind):
    name = "stim"

    def _prompt(self, source: JobSource, field: str, name: str) -> dict[str, Any]:
        record = source.records.prompt(source.user, source.repo, name)
        if not isinstance(record, dict) or not isinstance(record.get("messages"), list):
            raise ConfigProblem(f"{field} '{name}' does not exist in repo '{source.repo}'")
        return {"name": name, "messages": record["messages"], "tools": record.get("tools")}

    def plan(self, source: JobSource) -> JobPlan:
        raw = source.target_record.get("config") or {}
        teacher, student = raw.get("teacher_prompt"), raw.get("student_prompt")
        missing = [name for name, ok in (("generators", bool(raw.get("generators"))), ("teacher_prompt", bool(teacher)),
                                         ("student_prompt", student is not None)) if not ok]
        if missing:
            raise ConfigProblem(f"{MISSING_MESSAGE}: target '{source.target}' has no {' and no '.join(missing)}")
        config = parse_config(raw)
        gone = missing_prompts(raw, lambda name: source.records.prompt(source.user, source.repo, name) is not None)
        if gone:  # the rule creation applied; the prompt may have been removed since
            raise ConfigProblem("; ".join(f"{field} '{name}' does not exist in repo '{source.repo}'"
                                          for field, name in gone.items()))
        teacher_prompt = self._prompt(source, "teacher_prompt", str(config.teacher_prompt))
        student_prompt = (self._prompt(source, "student_prompt", config.student_prompt) if config.student_prompt
                          else {"name": "", "messages": [], "tools": None})
        u_text = prompt_text(teacher_prompt["messages"])
        specs = [GENERATORS[gen.type].plan(PlanContext(i, gen, config, source, u_text))
                 for i, gen in enumerate(config.generators)]
        spec = {
            "teacher": teacher_prompt, "student": student_prompt, "prompt_u": u_text, "generators": specs,
            "max_concurrency": config.max_concurrency, "max_cost_usd": config.max_cost_usd,
        }
        if config.max_cost_usd is not None:
            for gen_spec in specs:
                if gen_spec.get("model"):  # a generator that asks a model
                    check_priced(source.paths.root, str(gen_spec["model"]))
        return JobPlan(config=raw, spec=spec, expected_lines=sum(s["numq"] for s in specs))

    async def produce(self, run: JobRun) -> AsyncIterator[dict[str, Any]]:
        limit = run.spec.get("max_cost_usd")
        if limit is not None and isinstance(run.llm, JobLLM):
            run.llm.limit_spending(float(limit), load_prices(run.data_root))
        gens = run.spec["generators"]
        bases = [sum(g["numq"] for g in gens[:i]) for i in range(len(gens))]
        for i, gen in enumerate(gens):
            if bases[i] + gen["numq"] <= run.start:
                continue  # every line of this generator is committed
            j, skip = 0, max(run.start - bases[i], 0)
            try:
                async for batch in self._batches(i, gen, run):
                    for question in batch:
                        if j >= gen["numq"]:
                            break
                        if j >= skip:
                            yield stim_line(bases[i] + j, question, gen, run.spec)
                        j += 1
            except ResumableFailure as e:  # a budget reached: keeps its advice on resuming
                raise type(e)(f"generators[{i}] ({gen['type']}): {e}") from None
            except (JobFailed, LLMError) as e:
                raise JobFailed(f"generators[{i}] ({gen['type']}): {e}") from None
            if j != gen["numq"]:
                raise JobFailed(f"generators[{i}] ({gen['type']}) produced {j} questions, expected {gen['numq']}")

    async def _batches(self, i: int, gen: dict[str, Any], run: JobRun) -> AsyncIterator[list[str]]:
        """Generator ``i``'s questions in order: streamed from its answer log, or one checkpointed list."""
        impl = GENERATORS[gen["type"]]
        if impl.streams:
            async for batch in impl.stream(gen, run, i):
                yield batch
        else:
            yield await checkpointed(run, f"questions-{i}", lambda: impl.questions(gen, run))
