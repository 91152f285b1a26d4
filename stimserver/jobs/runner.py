"""JobRunner: claims jobs through the filesystem, runs them as tasks, resumes the dead.

One runner lives in every ``stimserver serve`` (unless ``run_jobs`` is off) and in every
``stimserver worker``; any number of them may share a data directory. A runner:

* scans the data directory at start and every ``scan_seconds`` (and at once when woken,
  e.g. by a run request in the same process) for ``pending``/``running`` jobs whose lock
  is free, and claims them — the flock makes the claim exclusive, and dies with its
  process, so a crashed runner's jobs are claimed again on the next scan;
* runs each claimed job as a task (``execute``: the kind's lines, committed in batches
  of ``flush_lines`` lines or ``flush_seconds``, whichever comes first);
* ends each job ``complete`` (every expected line durable), ``failed`` (an ``error`` a
  user can act on), or — on shutdown — ``pending`` again, for the next runner;
* where it runs bakes, evaluates the checkpoints users asked for, one evaluator process at a
  time (``jobs.bake.claim_evaluation``; a request left by a dead runner is found again).

The resume rule is the output itself: a job continues at its committed line count, and
kinds produce the same line for the same number on every run (``kinds.checkpointed``).
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ..llm import Completer
from ..store import jobrecords
from ..store.datasets import Datasets
from ..store.errors import NoSpace
from ..store.jobrecords import ACTIVE, JobRef, JobStatus
from ..store.locks import FileLock, is_locked
from ..store.output import lock_path
from ..store.paths import BAKE_KIND, TARGET_KINDS, DataPaths
from ..store.presence import Presence
from . import liveness, transitions
from .bake import BakeKind, BakeSettings, EvaluationClaim, claim_evaluation, run_bake, run_evaluation
from .execute import Execution, JobLLM, execute, wait_for
from .kinds import ConfigProblem, JobFailed, JobKind
from .rollout import RolloutKind
from .scan import find_active, scan_cache
from .stim import StimKind

__all__ = ["JobRunner", "JobRef", "LLMFactory", "default_kinds"]

LLMFactory = Callable[[], Completer]

log = logging.getLogger("stimserver.jobs")

STOP_TIMEOUT = 10.0


def default_kinds(bake: BakeSettings | None = None) -> dict[str, JobKind]:
    return {"stim": StimKind(), "rollout": RolloutKind(), "bake": BakeKind(bake)}


@dataclass
class _Running:
    task: asyncio.Task[None]
    stopping: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class JobRunner:
    """Runs jobs of the given kinds from one data directory. Also answers run/stop requests."""

    def __init__(self, paths: DataPaths, *, llm_factory: LLMFactory, kinds: dict[str, JobKind] | None = None,
                 max_jobs: int = 8, scan_seconds: float = 2.0, orphan_seconds: float = 30.0, flush_lines: int = 50,
                 flush_seconds: float = 0.2, datasets: Datasets | None = None,
                 on_lines: Callable[[int, str], None] | None = None) -> None:
        """``llm_factory`` makes the shared LLM client on first use (a bad setting then fails
        the job, not the server); ``on_lines(n, kind)`` hears of every committed batch."""
        self.paths = paths
        self.kinds = kinds if kinds is not None else default_kinds()
        self.llm_factory = llm_factory
        self.max_jobs = max_jobs
        self.scan_seconds = scan_seconds
        self.orphan_seconds = orphan_seconds
        self.flush_lines = flush_lines
        self.flush_seconds = flush_seconds
        self.datasets = datasets or Datasets(paths.root)
        self.on_lines = on_lines
        self.id = secrets.token_hex(4)
        self.worker = transitions.worker_identity(self.id)
        self.active = False
        self._jobs: dict[JobRef, _Running] = {}
        self._llm: Completer | None = None
        self._wake: asyncio.Event | None = None
        self._scanner: asyncio.Task[None] | None = None
        self._presence = Presence(paths, self.id)
        self._scan_cache = scan_cache()
        self._abandoned: dict[asyncio.Future[Any], JobRef] = {}
        self._evaluation: asyncio.Task[None] | None = None  # the one checkpoint evaluation this runner runs

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Register as a live runner, scan once, then keep scanning in the background."""
        if self.active:
            return
        await asyncio.to_thread(self._presence.register)
        self.active = True
        self._wake = asyncio.Event()
        self._scanner = asyncio.create_task(self._scan_loop(), name="stimserver-job-scan")
        log.info("job runner %s started on %s (max %d jobs)", self.id, self.paths.root, self.max_jobs)

    async def close(self) -> None:
        """Stop scanning, hand running jobs back as pending, and wait for their writers."""
        if not self.active:
            return
        self.active = False
        if self._scanner is not None:
            self._scanner.cancel()
            await asyncio.gather(self._scanner, return_exceptions=True)
        tasks = [r.task for r in self._jobs.values()]
        if self._evaluation is not None:
            tasks.append(self._evaluation)  # its request stays, for the next runner
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for attempt, ref in list(self._abandoned.items()):
            claimed: object = (await asyncio.gather(attempt, return_exceptions=True))[0]
            if isinstance(claimed, tuple):
                await asyncio.to_thread(self._hand_back, ref, claimed)
        self._abandoned.clear()
        aclose = getattr(self._llm, "aclose", None)  # real clients hold connections; stubs need not
        if aclose is not None:
            await aclose()
        self._llm = None
        await asyncio.to_thread(self._presence.unregister)
        log.info("job runner %s stopped", self.id)

    async def cleanup_ctx(self, app: object) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx``: run while the app runs."""
        await self.start()
        yield
        await self.close()

    def wake(self) -> None:
        """Scan now instead of at the next interval."""
        if self._wake is not None:
            self._wake.set()

    def llm_client(self) -> Completer:
        if self._llm is None:
            try:
                self._llm = self.llm_factory()
            except ValueError as e:  # bad STIMSERVER_LLM_* settings
                raise JobFailed(f"LLM configuration error: {e}") from None
        return self._llm

    # -- requests from handlers ----------------------------------------------------------
    async def submit(self, ref: JobRef, target_record: dict[str, Any]) -> dict[str, Any]:
        """The job a run request reports: the current one, or a new one (see ``transitions.submit``).

        Raises ``ConfigProblem`` when the target cannot run and ``JobBusy`` when the
        previous job's writer will not let go; the handler decides what they mean in HTTP.
        """
        kind = self.kinds.get(ref.kind)
        if kind is None:
            raise ConfigProblem(f"this server cannot run {ref.kind} jobs")
        return await asyncio.to_thread(transitions.submit, self.paths, kind, ref, target_record, self.datasets)

    async def discard(self, ref: JobRef) -> bool:
        """Remove a finished job and its output (``transitions.discard``); ``JobBusy`` while it is active."""
        return await asyncio.to_thread(transitions.discard, self.paths, ref)

    async def settle(self, ref: JobRef, record: dict[str, Any], wait: float) -> dict[str, Any]:
        """Start a pending job here at once if possible, and give it ``wait`` s to finish."""
        if not self.active or record.get("status") not in ACTIVE:
            return record
        try:
            running = self._jobs.get(ref) or await self._claim(ref)
        except NoSpace:  # queued, but not started here now: a scan claims it once there is room
            running = None
        if running is None:
            self.wake()
            return record
        await wait_for(running.done.wait(), wait)
        return await asyncio.to_thread(jobrecords.read_record, ref.job_dir(self.paths)) or record

    async def observe(self, ref: JobRef, record: dict[str, Any]) -> dict[str, Any]:
        """What a status read should report for an active job (bounded liveness, see jobs.liveness)."""
        if ref in self._jobs or is_locked(lock_path(ref.job_dir(self.paths))):
            return record  # a writer holds it: running (or just being claimed)
        if self.active and len(self._jobs) < self.max_jobs:
            self.wake()  # a runner with room may claim it now; a full one would only rescan
        seen = await asyncio.to_thread(liveness.observe_orphan, self.paths, ref, self.orphan_seconds)
        return record if seen is None else seen

    async def stop(self, user: str, repo: str, target: str) -> None:
        """Stop every job of the target, here or in another process, and wait until its lock is free.

        Gives up after ``STOP_TIMEOUT`` seconds without raising: the caller finds the lock
        still taken and answers accordingly (the target delete handler: 409).
        """
        for kind in TARGET_KINDS:
            if kind in self.kinds:
                await self._stop(JobRef(user, repo, target, kind))

    async def stop_bake(self, user: str, repo: str, bake: str) -> bool:
        """Stop the bake's job (and its trainer), here or in another process; False if it would not stop."""
        return await self._stop(JobRef(user, repo, bake, BAKE_KIND))

    async def _stop(self, ref: JobRef) -> bool:
        running = self._jobs.get(ref)
        if running is not None:
            running.stopping = True
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)
        if not await asyncio.to_thread(liveness.stop_job, self.paths, ref, STOP_TIMEOUT):
            log.warning("the %s job %s did not stop within %g s", ref.kind, ref, STOP_TIMEOUT)
            return False
        return True

    # -- scanning and claiming -----------------------------------------------------------
    async def _scan_loop(self) -> None:
        assert self._wake is not None
        while self.active:
            self._wake.clear()
            try:
                await self.scan_once()
            except NoSpace as e:  # a claim could not write its record: the next scan tries again
                log.warning("job scan: %s", e)
            except Exception:
                log.exception("job scan failed")
            await wait_for(self._wake.wait(), self.scan_seconds)

    async def scan_once(self) -> int:
        """Claim every claimable job there is room for; returns how many were started."""
        started = 0
        try:
            found = await asyncio.to_thread(find_active, self.paths, tuple(self.kinds), self._scan_cache)
            for ref, status in found:
                if ref in self._jobs:
                    continue
                if len(self._jobs) >= self.max_jobs:
                    if status == JobStatus.RUNNING:  # no room: at least stop it looking like it runs
                        await asyncio.to_thread(liveness.requeue_orphan, self.paths, ref)
                    continue
                if await self._claim(ref) is not None:
                    started += 1
        finally:  # a job that cannot be claimed does not hold up the evaluations
            await self._evaluate_next()
        return started

    async def _evaluate_next(self) -> None:
        """Start the oldest checkpoint evaluation asked for, unless one runs here already (one at a time)."""
        kind = self.kinds.get(BAKE_KIND)
        if not self.active or not isinstance(kind, BakeKind) or self._evaluation is not None:
            return
        claim = await asyncio.to_thread(claim_evaluation, self.paths)
        if claim is None:
            return
        if not self.active:  # closing meanwhile: the request stays
            claim.lock.release()
            return
        task = asyncio.create_task(run_evaluation(kind.settings, claim), name=f"stimserver-evaluation-{claim.step}")
        self._evaluation = task
        task.add_done_callback(lambda _: self._evaluation_done(task, claim))

    def _evaluation_done(self, task: asyncio.Task[None], claim: EvaluationClaim) -> None:
        claim.lock.release()
        if self._evaluation is task:
            self._evaluation = None
        self.wake()  # the next request, if any

    async def _claim(self, ref: JobRef) -> _Running | None:
        if not self.active or ref in self._jobs or len(self._jobs) >= self.max_jobs or ref.kind not in self.kinds:
            return self._jobs.get(ref)
        if ref.kind == BAKE_KIND and sum(r.kind == BAKE_KIND for r in self._jobs) >= self._max_bakes():
            return None  # each bake is a trainer process: at most max_bakes here, the rest wait
        attempt = asyncio.ensure_future(asyncio.to_thread(transitions.claim, self.paths, ref, self.worker))
        try:
            claimed = await asyncio.shield(attempt)
        except asyncio.CancelledError:
            self._abandoned[attempt] = ref  # close() hands it back if the thread did take the job
            raise
        if claimed is None or not self.active:
            if claimed is not None:
                await asyncio.to_thread(self._hand_back, ref, claimed)
            return None
        lock, record = claimed
        log.info("job %s %s started (attempt %d)", record["job_id"], ref, record["attempt"])
        if ref in self._jobs:  # claimed twice in this process: cannot happen with flock, but be safe
            lock.release()
            return self._jobs[ref]
        running = _Running(asyncio.create_task(self._run(ref, lock, record), name=f"stimserver-job-{ref}"))
        self._jobs[ref] = running
        # Also when the task is cancelled before it ever ran (and so never reached its finally).
        running.task.add_done_callback(lambda _: self._release(ref, lock, running))
        return running

    def _hand_back(self, ref: JobRef, claimed: tuple[FileLock, dict[str, Any]]) -> None:
        """Undo a claim this runner will not run (it is shutting down)."""
        lock, record = claimed
        with lock:
            transitions.requeue(ref.job_dir(self.paths), {**record, "attempt": record["attempt"] - 1})

    def _release(self, ref: JobRef, lock: FileLock, running: _Running) -> None:
        lock.release()
        if self._jobs.get(ref) is running:
            del self._jobs[ref]
        running.done.set()
        self.wake()  # room for another job

    def _max_bakes(self) -> int:
        kind = self.kinds.get(BAKE_KIND)
        return kind.settings.max_bakes if isinstance(kind, BakeKind) else 0

    # -- running one job -------------------------------------------------------------------
    async def _run(self, ref: JobRef, lock: FileLock, record: dict[str, Any]) -> None:
        kind = self.kinds[ref.kind]
        try:
            ex = Execution(
                ref=ref, paths=self.paths, kind=kind, record=record, lock=lock,
                llm=JobLLM(self.llm_client, kind.max_concurrency(record["spec"])), datasets=self.datasets,
                flush_lines=self.flush_lines, flush_seconds=self.flush_seconds, on_lines=self.on_lines,
                stopping=lambda: (running := self._jobs.get(ref)) is not None and running.stopping)
            if isinstance(kind, BakeKind):
                await run_bake(ex, kind.settings)  # a trainer process, not lines
            else:
                await execute(ex)
        finally:
            running = self._jobs.get(ref)
            if running is not None:
                self._release(ref, lock, running)
            else:
                lock.release()
