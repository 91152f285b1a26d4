"""The bake kind: check a bake at run, freeze its data, and supervise its trainer process.

A bake is a job like stim and rollout — submitted, claimed through its flock, resumed
after a crash — but its work happens in a separate OS process (``python -m
stimserver.train``), so torch never enters the server. This module:

* ``BakeKind.plan`` checks what a 400 should refuse before any work: datasets named,
  each with a complete rollout, options this machine can honour (``train.options``), a
  base model found (``train.resolve``, or a checkpoint of another bake), the training
  extra installed where this process would train;
* ``BakeKind.prepare`` freezes the trajectories into ``train.jsonl`` (``store.bakefiles``):
  failed ones left out and counted, targets mixed by weight up to ``total_trajectories``,
  stimuli split into train and held-out eval parts by ``data.train_eval_split``;
* ``run_bake`` starts the trainer (torchrun for several processes), passes it the job's
  lock so the flock lives as long as any trainer does, stops it on a stop request or a
  shutdown, and restarts it after a death (it resumes from its newest checkpoint) until
  it stops publishing checkpoints;
* ``claim_evaluation`` and ``run_evaluation`` serve the evaluations of single checkpoints a
  user asked for (``evals/<step>.request.json``, store.bakefiles): the runner claims one
  request by its lock and runs ``python -m stimserver.train.evaluate_checkpoint`` for it, with
  the trainer's interpreter and environment; the request ends done, or failed with the end
  of the evaluator's log; a shutdown leaves it pending for the next runner.
"""
from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import logging
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..store import atomic, bakefiles
from ..store import jobrecords as jr
from ..store.errors import NoSpace
from ..store.jobrecords import JobStatus
from ..store.locks import FileLock
from ..store.output import read_page
from ..store.paths import DataPaths
from ..train.resolve import BAKE_REFERENCE, ModelNotFound, resolve_model
from . import transitions
from .execute import Execution, record_end, wait_for
from .kinds import ConfigProblem, JobFailed, JobKind, JobPlan, JobRun, JobSource

__all__ = ["BakeKind", "BakeSettings", "run_bake", "select_trajectories", "TRAINER_MODULES", "EvaluationClaim",
           "claim_evaluation", "run_evaluation", "evaluator_command"]

log = logging.getLogger("stimserver.jobs")

TRAINER_MODULES = ("torch", "transformers", "peft", "accelerate")
TRAIN_EXTRA_HINT = ("install the train extra where bakes run: pip install torch==2.13.0, then "
                    "pip install 'stimserver[train]' (in a checkout: scripts/install --train)")
MAX_STALLED_DEATHS = 2   # trainer deaths in a row without a new checkpoint before the bake fails
TERMINATE_SECONDS = 10.0
POLL_SECONDS = 0.5
READ_BATCH = 1000
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class BakeSettings:
    """What the bake kind needs from the server's settings."""

    models_dirs: tuple[Path, ...] = ()
    processes: int = 1
    torchrun: str = "--standalone"
    threads: int = 0
    python: str | None = None
    eval_samples: int = 16
    trains_here: bool = True   # False on a web tier that runs no jobs: the model and extra are checked by the trainer
    max_bakes: int = 1

    @classmethod
    def from_settings(cls, settings: Any) -> BakeSettings:
        return cls(models_dirs=tuple(settings.models_dirs), processes=settings.bake_processes,
                   torchrun=settings.bake_torchrun,
                   threads=settings.bake_threads, python=settings.trainer_python,
                   eval_samples=settings.bake_eval_samples, trains_here=settings.run_jobs,
                   max_bakes=settings.max_bakes)

    @property
    def interpreter(self) -> str:
        return self.python or sys.executable


# -- checks at run ------------------------------------------------------------------------
_READY: dict[str, tuple[float, str | None]] = {}


def trainer_problem(python: str) -> str | None:
    """Why ``python`` cannot train (a module of the train extra missing), or None. Cached a minute."""
    seen = _READY.get(python)
    if seen is not None and time.monotonic() - seen[0] < 60:
        return seen[1]
    if python == sys.executable:
        missing = [m for m in TRAINER_MODULES if importlib.util.find_spec(m) is None]
    else:
        probe = ("import importlib.util, sys; "
                 f"print(' '.join(m for m in {TRAINER_MODULES!r} if importlib.util.find_spec(m) is None))")
        try:
            done = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=30, check=True)
            missing = done.stdout.split()
        except (OSError, subprocess.SubprocessError) as e:
            failed = f"STIMSERVER_TRAINER_PYTHON={python} cannot be run ({type(e).__name__})"
            _READY[python] = (time.monotonic(), failed)
            return failed
    problem = None if not missing else (f"this server cannot train: {', '.join(missing)} not installed in "
                                        f"{python}; {TRAIN_EXTRA_HINT}")
    _READY[python] = (time.monotonic(), problem)
    return problem


def _rollout_dir(paths: DataPaths, user: str, repo: str, target: str) -> Path:
    return paths.job_dir(user, repo, target, "rollout")


def _model(source: JobSource, config: dict[str, Any], settings: BakeSettings) -> tuple[dict[str, Any], Any]:
    """(the base model's spec, the parent's spec or None) for the bake's ``model.parent_model_name``."""
    reference = (config.get("model") or {}).get("parent_model_name")
    if not reference:
        repo = source.records.repo(source.user, source.repo) or {}
        reference = repo.get("base_model")
    if not isinstance(reference, str) or not reference:
        raise ConfigProblem("the bake names no base model: set model.parent_model_name, or the repo's base_model")
    match = BAKE_REFERENCE.fullmatch(reference)
    if match is not None:
        return _parent(source, reference, match.groups(), settings)
    if not settings.trains_here:
        return {"reference": reference, "path": None, "gguf_file": None, "found_by": "resolved by the trainer"}, None
    try:
        found = resolve_model(reference, models_dirs=settings.models_dirs)
    except ModelNotFound as e:
        raise ConfigProblem(f"{e}. Put the model in a models directory (STIMSERVER_MODELS_DIR) or name it by path "
                            "in model.parent_model_name") from None
    return found.as_spec(), None


def _parent(source: JobSource, reference: str, parts: tuple[str, ...],
            settings: BakeSettings) -> tuple[dict[str, Any], Any]:
    """A checkpoint of another bake of this user as the base: its base model, plus its adapter merged."""
    user, repo, bake, step = parts
    if user != source.user:
        raise ConfigProblem(f"model.parent_model_name {reference!r}: not a bake of yours (user {source.user!r})")
    paths = source.paths
    try:
        parent_dir = paths.job_dir(user, repo, bake, "bake")
    except Exception:
        raise ConfigProblem(f"model.parent_model_name {reference!r} names no bake") from None
    record = jr.read_record(parent_dir)
    if record is None or bake == source.target and repo == source.repo:
        raise ConfigProblem(f"model.parent_model_name {reference!r}: bake {bake!r} of repo {repo!r} has not run")
    if int(step) not in bakefiles.checkpoint_steps(parent_dir):
        raise ConfigProblem(f"model.parent_model_name {reference!r}: bake {bake!r} has no checkpoint {int(step)} "
                            f"(it has {bakefiles.checkpoint_steps(parent_dir) or 'none'})")
    spec = record.get("spec") or {}
    if spec.get("parent"):
        raise ConfigProblem(f"model.parent_model_name {reference!r}: that bake is itself baked on another bake; "
                            "stimserver bakes on one parent at most (bake on the parent's own base instead)")
    model = spec.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("reference"), str):
        raise ConfigProblem(f"model.parent_model_name {reference!r}: that bake's record names no model")
    if settings.trains_here:  # found again here: the parent may have trained on another machine, or checkout
        try:
            model = resolve_model(model["reference"], models_dirs=settings.models_dirs).as_spec()
        except ModelNotFound as e:
            raise ConfigProblem(f"model.parent_model_name {reference!r}: its base model {e}") from None
    return model, {"reference": reference, "adapter_dir": str(bakefiles.checkpoint_dir(parent_dir, int(step)))}


# -- the data ---------------------------------------------------------------------------
@dataclass
class Selection:
    """What ``select_trajectories`` chose: the lines of train.jsonl and the counts per dataset."""

    lines: list[dict[str, Any]] = field(default_factory=list)
    datasets: list[dict[str, Any]] = field(default_factory=list)


def _trajectory(line: dict[str, Any], target: str) -> dict[str, Any] | None:
    """A rollout line as a training line (without split), or None when it failed."""
    response = line.get("response")
    if line.get("error") is not None or not isinstance(response, dict) or not isinstance(response.get("content"), str):
        return None
    teacher = line.get("trajectory_override_stimulus") or line.get("unconditioned_stimulus") or {}
    student = line.get("conditioned_stimulus") or {}
    teacher_messages, student_messages = teacher.get("messages"), student.get("messages")
    if not isinstance(teacher_messages, list) or not isinstance(student_messages, list):
        return None
    question = line.get("question") if isinstance(line.get("question"), str) else None
    return {"target": target, "stimulus_id": line.get("stimulus_id"), "trajectory_id": line.get("trajectory_id"),
            "question": question, "teacher_messages": teacher_messages, "student_messages": student_messages,
            "response": response["content"], "finish_reason": response.get("finish_reason"), "weight": 1.0}


def _read_rollout(job_dir: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = read_page(job_dir, offset, READ_BATCH)
        batch = orjson.loads(page.body or b"[]")
        lines.extend(batch)
        offset += page.count
        if not page.count or offset >= page.total:
            return lines


def select_trajectories(config: dict[str, Any], rollouts: dict[str, list[dict[str, Any]]]) -> Selection:
    """The bake's training lines from its datasets' rollout lines. Deterministic for a config.

    Failed trajectories are left out (counted). With ``total_trajectories`` N (> 0) each
    target gets N × weight / Σweights trajectories, at most what it has; without it N is
    every usable trajectory, so weights still shape the mix. Whole stimuli are taken in a
    seeded order, and the stimuli are split into train and eval parts by
    ``data.train_eval_split``, so no held-out stimulus is ever trained on.
    """
    datasets = config.get("datasets") or []
    data = config.get("data") or {}
    seed = data.get("seed") if isinstance(data.get("seed"), int) else config.get("seed")
    seed = seed if isinstance(seed, int) else 42
    split = data.get("train_eval_split") or [1, 0]
    eval_share = float(split[1]) / (float(split[0]) + float(split[1])) if sum(split) > 0 else 0.0
    usable: dict[str, list[dict[str, Any]]] = {}
    failed: dict[str, int] = {}
    for entry in datasets:
        target = entry["target"]
        good = [t for line in rollouts[target] if (t := _trajectory(line, target)) is not None]
        usable[target] = good
        failed[target] = len(rollouts[target]) - len(good)
    total_weight = sum(float(e.get("weight", 1.0)) for e in datasets)
    cap = config.get("total_trajectories")
    budget = cap if isinstance(cap, int) and cap > 0 else sum(len(v) for v in usable.values())
    out = Selection()
    for entry in datasets:
        target = entry["target"]
        weight = float(entry.get("weight", 1.0))
        quota = min(len(usable[target]), int(budget * weight / total_weight) if total_weight > 0 else 0)
        by_stimulus: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for t in usable[target]:
            by_stimulus[t["stimulus_id"]].append(t)
        order = sorted(by_stimulus, key=lambda s: (str(type(s)), s))
        random.Random(f"{seed}:{target}:order").shuffle(order)
        taken: list[Any] = []
        count = 0
        for stimulus in order:
            if count >= quota:
                break
            taken.append(stimulus)
            count += len(by_stimulus[stimulus])
        held = round(len(taken) * eval_share)
        if eval_share > 0 and held == 0 and len(taken) >= 2:
            held = 1
        held_out = set(taken[len(taken) - held:]) if held else set()
        chosen = 0
        for stimulus in sorted(taken, key=lambda s: (str(type(s)), s)):
            for t in by_stimulus[stimulus]:
                if chosen >= quota:
                    break
                out.lines.append({**t, "split": "eval" if stimulus in held_out else "train"})
                chosen += 1
        out.datasets.append({"target": target, "weight": weight, "trajectories": len(rollouts[target]),
                             "skipped_failed": failed[target], "used": chosen,
                             "eval": sum(line["target"] == target and line["split"] == "eval" for line in out.lines)})
    return out


def _rollouts(source: JobSource, config: dict[str, Any]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """Every dataset target's rollout lines and rollout job id; ConfigProblem unless each is complete."""
    lines: dict[str, list[dict[str, Any]]] = {}
    job_ids: dict[str, int] = {}
    for entry in config.get("datasets") or []:
        target = entry["target"]
        if source.records.target(source.user, source.repo, target) is None:
            raise ConfigProblem(f"datasets: target {target!r} does not exist in repo {source.repo!r}")
        job_dir = _rollout_dir(source.paths, source.user, source.repo, target)
        job = jr.read_record(job_dir)
        if job is None or job.get("status") != JobStatus.COMPLETE:
            state = "has no rollout" if job is None else f"has a rollout that is {job.get('status')}"
            raise ConfigProblem(f"datasets: target {target!r} {state}; every dataset needs a complete rollout "
                                f"(POST /v1/repo/{source.repo}/targets/{target}/rollout and wait for it)")
        lines[target] = _read_rollout(job_dir)
        job_ids[target] = int(job["job_id"])
    return lines, job_ids


class BakeKind(JobKind):
    """Bakes: ``JobSource.target`` is the bake's name and ``target_record`` its record."""

    name = "bake"

    def __init__(self, settings: BakeSettings | None = None) -> None:
        self.settings = settings or BakeSettings()

    def plan(self, source: JobSource) -> JobPlan:
        config = source.target_record.get("config") or {}
        datasets = config.get("datasets") or []
        if not datasets:
            raise ConfigProblem("datasets: the bake names no datasets; add {\"target\": …} entries naming targets "
                                "with complete rollouts")
        names = [d.get("target") for d in datasets]
        if len(set(names)) != len(names):
            raise ConfigProblem("datasets: a target is named twice; give it one entry with its weight")
        if sum(float(d.get("weight", 1.0)) for d in datasets) <= 0:
            raise ConfigProblem("datasets: the weights add up to 0; give some target a positive weight")
        from ..train.options import refusals  # torch-free; imported here so the server starts without it
        problems = refusals(config)
        if problems:
            raise ConfigProblem("this server cannot honour: " + "; ".join(problems))
        if self.settings.trains_here:
            problem = trainer_problem(self.settings.interpreter)
            if problem:
                raise ConfigProblem(problem)
        model, parent = _model(source, config, self.settings)
        rollouts, job_ids = _rollouts(source, config)
        selection = select_trajectories(config, rollouts)
        if not any(line["split"] == "train" for line in selection.lines):
            raise ConfigProblem("datasets: no usable trajectory to train on (" + ", ".join(
                f"{d['target']}: {d['trajectories']} trajectories, {d['skipped_failed']} failed"
                for d in selection.datasets) + ")")
        for d in selection.datasets:
            d["rollout_job_id"] = job_ids[d["target"]]
        max_tokens = max((int((source.records.target(source.user, source.repo, d["target"]) or {}).get("config", {})
                              .get("max_tokens") or 0) for d in selection.datasets), default=0)
        spec = {"user": source.user, "repo": source.repo, "bake": source.target, "config": config,
                "model": model, "parent": parent, "datasets": selection.datasets,
                "evaluation": {"samples": self.settings.eval_samples, "max_new_tokens": max_tokens or 64},
                "processes": self.settings.processes}
        return JobPlan(config=config, spec=spec, expected_lines=0)

    def prepare(self, plan: JobPlan, source: JobSource, into: Path) -> None:
        """Write ``train.jsonl``; refuse if a rollout changed since ``plan`` read it."""
        config = plan.spec["config"]
        rollouts, job_ids = _rollouts(source, config)
        selection = select_trajectories(config, rollouts)
        if [(d["target"], d["used"]) for d in selection.datasets] != [
                (d["target"], d["used"]) for d in plan.spec["datasets"]] or any(
                job_ids[d["target"]] != d["rollout_job_id"] for d in plan.spec["datasets"]):
            raise ConfigProblem("a dataset's rollout changed while the bake was being submitted; POST again")
        data = b"".join(orjson.dumps(line) + b"\n" for line in selection.lines)
        atomic.write_atomic(into / bakefiles.TRAIN_DATA, data)

    def same_job(self, record: dict[str, Any], plan: JobPlan) -> bool:
        return record.get("config") == plan.config and record.get("spec", {}).get("datasets") == plan.spec["datasets"]

    async def produce(self, run: JobRun) -> AsyncIterator[dict[str, Any]]:
        """Bakes write no lines: ``run_bake`` runs them."""
        raise JobFailed("a bake is run by its trainer process, not as lines")
        yield {}  # pragma: no cover  (makes this an async generator)

    def max_concurrency(self, spec: dict[str, Any]) -> int:
        return 1


# -- running ------------------------------------------------------------------------------
STOPPED = "stopped: the bake was stopped (it is being deleted)"


class _Stopped(Exception):
    """A stop request (the bake is being deleted)."""


def _death_signal() -> Any:
    """A ``preexec_fn`` that makes the trainer die with this process (Linux), or None elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return set_pdeathsig


def trainer_command(settings: BakeSettings, job_dir: Path) -> list[str]:
    if settings.processes <= 1:
        return [settings.interpreter, "-m", "stimserver.train", str(job_dir)]
    return [settings.interpreter, "-m", "torch.distributed.run", *shlex.split(settings.torchrun),
            f"--nproc_per_node={settings.processes}", "-m", "stimserver.train", str(job_dir)]


def trainer_env(settings: BakeSettings) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "STIMSERVER_TRAINER_PARENT": str(os.getpid())}
    # torchrun gives each process one thread unless told; share the cores out instead
    threads = settings.threads or (max(1, (os.cpu_count() or 1) // settings.processes) if settings.processes > 1 else 0)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if settings.models_dirs:
        env["STIMSERVER_MODELS_DIR"] = ":".join(str(p) for p in settings.models_dirs)
    return env


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """Stop the trainer's process group: SIGTERM, then SIGKILL after ``TERMINATE_SECONDS``."""
    for sig, wait in ((signal.SIGTERM, TERMINATE_SECONDS), (signal.SIGKILL, TERMINATE_SECONDS)):
        if proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        if await wait_for(proc.wait(), wait) is not None:
            return


async def _run_trainer(ex: Execution, settings: BakeSettings, job_dir: Path) -> int:
    """Run one trainer (group) to its end; its exit code. Raises ``_Stopped`` on a stop request."""
    marker = jr.stop_marker(job_dir)
    log_file = await asyncio.to_thread(open, job_dir / bakefiles.LOG, "ab")
    try:
        proc = await asyncio.create_subprocess_exec(
            *trainer_command(settings, job_dir), stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=trainer_env(settings), start_new_session=True, pass_fds=(ex.lock.fd,),
            preexec_fn=_death_signal())
    finally:
        log_file.close()
    waiting = asyncio.ensure_future(proc.wait())
    try:
        while True:
            await wait_for(asyncio.shield(waiting), POLL_SECONDS)
            if waiting.done():
                return waiting.result()
            if await asyncio.to_thread(marker.exists):
                await _terminate(proc)
                raise _Stopped()
    except BaseException:
        await asyncio.shield(_terminate(proc))
        raise


def _log_tail(job_dir: Path, lines: int = 5, path: Path | None = None) -> str:
    try:
        with open(path or job_dir / bakefiles.LOG, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            tail = f.read().decode("utf-8", "replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(tail)


def _exit(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.Signals._value2member_map_ \
        else f"exit status {code}"


async def _train(ex: Execution, settings: BakeSettings, job_dir: Path) -> None:
    stalled = 0
    while True:
        before = await asyncio.to_thread(bakefiles.checkpoint_steps, job_dir)
        await asyncio.to_thread(bakefiles.clear_attempt, job_dir)
        code = await _run_trainer(ex, settings, job_dir)
        if code == 0:
            if await asyncio.to_thread(bakefiles.read_json, job_dir, bakefiles.EVAL) is not None:
                return
            raise JobFailed("the trainer ended without writing its evaluation; see trainer.log in the bake's folder")
        failure = await asyncio.to_thread(bakefiles.read_failure, job_dir)
        if failure is not None:
            if failure.get("kind") == "disk":
                raise NoSpace(failure["error"])
            raise JobFailed(failure["error"])
        after = await asyncio.to_thread(bakefiles.checkpoint_steps, job_dir)
        stalled = 0 if len(after) > len(before) else stalled + 1
        tail = _log_tail(job_dir)
        if stalled > MAX_STALLED_DEATHS:
            raise JobFailed(f"the trainer process died {stalled} times in a row without publishing a checkpoint "
                            f"(last: {_exit(code)}); the end of its log: {tail or '(empty)'}")
        log.warning("bake %s: the trainer died (%s); restarting it from checkpoint %s", ex.ref, _exit(code),
                    after[-1] if after else "none (the start)")


def describe_bake(exc: BaseException, ex: Execution) -> str:
    """The ``error`` a user sees: what went wrong and what to do; no traceback, no secret."""
    resume = f"POST /v1/repo/{ex.ref.repo}/bakes/{ex.ref.target} to resume it from its last checkpoint"
    if isinstance(exc, NoSpace):
        return f"{exc.message}; the earlier checkpoints are kept: free some space in the server's data directory, " \
               f"then {resume}"
    if isinstance(exc, JobFailed):
        return str(exc)
    if isinstance(exc, OSError):
        return f"the trainer could not be started or supervised: {exc.strerror or exc}; fix that, then {resume}"
    log.error("bake %s crashed", ex.ref, exc_info=exc)
    return f"internal error while running the bake ({type(exc).__name__}); see the server log"


async def run_bake(ex: Execution, settings: BakeSettings) -> None:
    """Run a claimed bake to its end and record that end; never raises but a cancellation."""
    job_dir = ex.ref.job_dir(ex.paths)
    record = ex.record
    try:
        try:
            await asyncio.to_thread(atomic.ensure_reserve, ex.paths.root)
            log.info("bake %s %s: trainer starting (attempt %d)", record["job_id"], ex.ref, record.get("attempt", 1))
            await _train(ex, settings, job_dir)
            await asyncio.to_thread(record_end, ex, transitions.finish, job_dir, record, JobStatus.COMPLETE)
            log.info("bake %s %s complete", record["job_id"], ex.ref)
        except asyncio.CancelledError:
            if ex.stopping():
                record_end(ex, transitions.finish, job_dir, record, JobStatus.FAILED, STOPPED)
            else:  # shutdown: the next runner resumes it from its last checkpoint
                record_end(ex, transitions.requeue, job_dir, record)
            raise
        except _Stopped:
            await asyncio.to_thread(record_end, ex, transitions.finish, job_dir, record, JobStatus.FAILED, STOPPED)
        except Exception as exc:
            error = describe_bake(exc, ex)
            log.warning("bake %s %s failed: %s", record["job_id"], ex.ref, error)
            await asyncio.to_thread(record_end, ex, transitions.finish, job_dir, record, JobStatus.FAILED, error)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("bake %s %s: could not record its end", record.get("job_id"), ex.ref)


# -- a checkpoint's evaluation, on request ----------------------------------------------------------
@dataclass
class EvaluationClaim:
    """An evaluation request this runner took: the bake's job folder, the step, the request's lock (held)."""

    job_dir: Path
    step: int
    lock: FileLock


def claim_evaluation(paths: DataPaths) -> EvaluationClaim | None:
    """Take the oldest open evaluation request whose lock is free, or None. Blocking.

    A request whose evaluation is stored already (a runner that died after the evaluator wrote
    it) is closed here, without running anything.
    """
    for job_dir, step in bakefiles.evaluation_requests(paths.users):
        try:
            lock = FileLock.acquire(bakefiles.evaluation_file(job_dir, step, "lock"), blocking=False)
        except (FileNotFoundError, NotADirectoryError):  # the bake is being deleted
            continue
        if lock is None:
            continue  # another runner evaluates it
        try:
            if not bakefiles.evaluation_file(job_dir, step, "request.json").is_file():
                lock.release()  # done or withdrawn since the scan
                continue
            if bakefiles.checkpoint_evaluation(job_dir, step) is not None:
                bakefiles.end_evaluation_request(job_dir, step)
                lock.release()
                continue
        except BaseException:
            lock.release()
            raise
        return EvaluationClaim(job_dir, step, lock)
    return None


def evaluator_command(settings: BakeSettings, job_dir: Path, step: int) -> list[str]:
    """One process, whatever ``processes`` says: an evaluation is a few greedy answers on one device."""
    return [settings.interpreter, "-m", "stimserver.train.evaluate_checkpoint", str(job_dir), str(int(step))]


async def run_evaluation(settings: BakeSettings, claim: EvaluationClaim) -> None:
    """Run the evaluator for a claimed request and close the request; never raises but a cancellation.

    Done (exit 0, the evaluation stored): the request is removed. Failed (any other end): the
    failure is recorded with the end of the evaluator's log. The request withdrawn meanwhile (the
    bake deleted): the evaluator is stopped and nothing is written. Cancelled (a shutdown): the
    evaluator is stopped and the request stays, for the next runner.
    """
    job_dir, step = claim.job_dir, claim.step
    request = bakefiles.evaluation_file(job_dir, step, "request.json")
    log_path = bakefiles.evaluation_file(job_dir, step, "log")
    try:
        log_file = await asyncio.to_thread(open, log_path, "ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                *evaluator_command(settings, job_dir, step), stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, env=trainer_env(settings), start_new_session=True,
                pass_fds=(claim.lock.fd,), preexec_fn=_death_signal())
        finally:
            log_file.close()
        log.info("evaluating checkpoint %d of %s (pid %d)", step, job_dir, proc.pid)
        waiting = asyncio.ensure_future(proc.wait())
        try:
            while not waiting.done():
                await wait_for(asyncio.shield(waiting), POLL_SECONDS)
                if not waiting.done() and not await asyncio.to_thread(request.is_file):
                    await _terminate(proc)
                    log.info("evaluation of checkpoint %d of %s withdrawn (the bake was deleted)", step, job_dir)
                    return
        except BaseException:
            await asyncio.shield(_terminate(proc))
            raise
        code = waiting.result()
        if not await asyncio.to_thread(request.is_file):
            return  # withdrawn as it ended
        if code == 0 and await asyncio.to_thread(bakefiles.checkpoint_evaluation, job_dir, step) is not None:
            await asyncio.to_thread(bakefiles.end_evaluation_request, job_dir, step)
            log.info("checkpoint %d of %s evaluated", step, job_dir)
            return
        tail = await asyncio.to_thread(_log_tail, job_dir, 3, log_path)
        error = (f"the evaluation of checkpoint {step} ended without storing its result ({_exit(code)})"
                 if code == 0 else f"the evaluation of checkpoint {step} failed ({_exit(code)})")
        error += f"; the end of its log: {tail or '(empty)'}"
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the evaluator could not be started (a bad STIMSERVER_TRAINER_PYTHON, a gone folder)
        if not request.is_file():
            return
        error = f"the evaluation of checkpoint {step} could not be started: {getattr(exc, 'strerror', None) or exc}"
    log.warning("evaluation of checkpoint %d of %s failed: %s", step, job_dir, error)
    try:
        await asyncio.to_thread(bakefiles.end_evaluation_request, job_dir, step, error)
    except OSError:
        log.exception("could not record the failed evaluation of checkpoint %d of %s", step, job_dir)
