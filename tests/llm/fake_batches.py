"""The clock-paced batch lifecycle behind the fake providers' batch APIs (see fake_providers.py).

Real batches take minutes to hours; a test can neither wait that long nor trust sleeps. So a
fake batch has no task of its own: it takes one *step* every `batch_step_seconds` of the
provider's `clock` (validate, answer `batch_requests_per_step` requests, finalize, ...), and the
steps that fell due are replayed, each at its own time, whenever anything looks at the batches
(every batch API call and every hook). A batch's state is therefore a function of the clock and
of the hooks alone: it survives stopping and restarting the HTTP server, it is the same when
served from a `ProviderThread`, and a test that sets ``server.clock = ManualClock()`` steps it
exactly, with no sleeping at all.

The wire formats live with the providers; this module knows phases, not JSON.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DAY = 24 * 3600.0
PHASES = ("validating", "in_progress", "finalizing", "cancelling", "ended")
ENDS = ("completed", "failed", "expired", "cancelled")


class ManualClock:
    """A clock that moves only when told: set ``server.clock = ManualClock()`` and `advance` it
    to step batches and age prompt-cache entries deterministically."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True)
class Outcome:
    """What one batched request got: the HTTP status and body the synchronous endpoint would
    have answered with."""

    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class BatchItem:
    """One request of a batch, in input order; `outcome` is set once it has been answered."""

    custom_id: str
    body: dict[str, Any]
    outcome: Outcome | None = None


@dataclass
class BatchJob:
    """One batch. Times are on the provider's clock (`times` holds when each phase and the end
    began: "created", "in_progress", "finalizing", "cancelling", and the end's name); `info` holds
    what only one provider needs (metadata, file ids, validation errors)."""

    id: str
    created: float
    expires: float
    headers: Mapping[str, str]
    wall_created: float = 0.0  # the Unix time at `created`, to report times that never jitter
    items: list[BatchItem] = field(default_factory=list)
    phase: str = "in_progress"
    end: str | None = None  # one of ENDS once phase == "ended"
    finalizes: bool = False  # passes through "finalizing" before "completed" (OpenAI)
    held: bool = False
    last_step: float = 0.0
    times: dict[str, float] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)  # the results' order, fixed when the batch ends
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.phase == "ended"

    def wall(self, at: float) -> float:
        """The Unix time of a moment on the provider's clock (monotonic, or a ManualClock)."""
        return self.wall_created + (at - self.created)

    def pending(self) -> list[BatchItem]:
        return [item for item in self.items if item.outcome is None]

    def answered(self) -> list[BatchItem]:
        return [item for item in self.items if item.outcome is not None]

    def results(self) -> list[BatchItem]:
        """Every item in the order the provider hands the results back: not the input order."""
        return [self.items[i] for i in self.order]


class BatchPace:
    """The pace and the test hooks of a provider's batches; the provider supplies `_validate_batch`,
    `_answer_item` and `_batch_ended`.

    Pace: `batch_step_seconds` of `clock` between steps (0 finishes a batch the first time it is
    looked at), `batch_requests_per_step` answered per step, `batch_window_seconds` until a batch
    expires (24 h, as both APIs), `batch_order_seed` for the (deterministic) results order.
    Hooks: `hold` (answer nothing more: the batch stays in progress until `release`, a cancel or
    its expiry), `release`, `expire` (now), `finish_now` (answer everything and end now),
    `advance_batches` (apply the steps due). Every hook is safe to call from another thread."""

    def __init__(self) -> None:
        self.clock: Callable[[], float] = time.monotonic
        self.batch_step_seconds = 0.05
        self.batch_requests_per_step = 10
        self.batch_window_seconds = DAY
        self.batch_order_seed = 0
        self.batches: dict[str, BatchJob] = {}  # in creation order
        self._batch_lock = threading.RLock()  # hooks may come from a test thread (ProviderThread)

    # -- hooks for tests

    def advance_batches(self) -> None:
        """Apply every step that fell due by `clock()`."""
        with self._batch_lock:
            now = self.clock()
            for job in list(self.batches.values()):
                self._advance(job, now)

    def hold(self, batch_id: str) -> None:
        """Stop answering this batch's requests: it reaches and stays `in_progress` (a cancel and
        the expiry still apply) until `release`."""
        with self._batch_lock:
            self.advance_batches()
            self.batches[batch_id].held = True

    def release(self, batch_id: str) -> None:
        """Undo `hold`: the next step comes `batch_step_seconds` from now."""
        with self._batch_lock:
            self.advance_batches()
            job = self.batches[batch_id]
            job.held = False
            job.last_step = max(job.last_step, self.clock())

    def expire(self, batch_id: str) -> None:
        """End the batch as its 24 h window would, now: what was answered stays, the rest expires."""
        with self._batch_lock:
            self.advance_batches()
            job = self.batches[batch_id]
            if not job.ended:
                self._end(job, "expired", self.clock())

    def finish_now(self, batch_id: str | None = None) -> None:
        """End one batch (or every batch) now, answering all its pending requests, hold or not;
        a batch being cancelled ends cancelled, one being validated may still fail validation."""
        with self._batch_lock:
            self.advance_batches()
            now = self.clock()
            for job in [self.batches[batch_id]] if batch_id is not None else list(self.batches.values()):
                job.held = False
                while not job.ended:
                    self._step(job, now, everything=True)

    # -- for the providers

    def _new_batch(self, batch_id: str, headers: Mapping[str, str], items: list[BatchItem], *,
                   validates: bool, finalizes: bool, **info: Any) -> BatchJob:
        """Register a batch created now: in `validating` if the provider validates asynchronously
        (OpenAI's input file), else straight `in_progress` (Anthropic)."""
        with self._batch_lock:
            now = self.clock()
            job = BatchJob(batch_id, created=now, expires=now + self.batch_window_seconds, headers=dict(headers),
                           wall_created=time.time(), items=items, phase="validating" if validates else "in_progress",
                           finalizes=finalizes, last_step=now, times={"created": now}, info=dict(info))
            if not validates:
                job.times["in_progress"] = now
            self.batches[batch_id] = job
            return job

    def _cancel_batch(self, job: BatchJob) -> bool:
        """Start cancelling (it ends `cancelled` a step later); False if it is past cancelling."""
        with self._batch_lock:
            self.advance_batches()
            if job.phase == "cancelling":
                return True
            if job.phase not in ("validating", "in_progress"):
                return False
            now = self.clock()
            job.phase, job.times["cancelling"], job.last_step = "cancelling", now, now
            return True

    def _validate_batch(self, job: BatchJob) -> list[dict[str, Any]]:
        """The reasons the batch fails validation (none: it goes in progress); may fill `job.items`."""
        return []

    def _answer_item(self, job: BatchJob, item: BatchItem, at: float) -> Outcome:
        raise NotImplementedError

    def _batch_ended(self, job: BatchJob) -> None:
        """Called once, when the batch ends (to write result files)."""

    # -- the lifecycle

    def _advance(self, job: BatchJob, now: float) -> None:
        while not job.ended:
            due = job.last_step + max(self.batch_step_seconds, 0.0)
            open_ = job.phase in ("validating", "in_progress")
            if open_ and job.expires <= min(due, now):
                self._end(job, "expired", job.expires)
                return
            if job.held and job.phase == "in_progress":
                if job.expires <= now:
                    self._end(job, "expired", job.expires)
                else:
                    job.last_step = max(job.last_step, now)
                return
            if due > now:
                return
            job.last_step = due
            self._step(job, due)

    def _step(self, job: BatchJob, at: float, *, everything: bool = False) -> None:
        if job.phase == "validating":
            errors = self._validate_batch(job)
            if errors:
                job.info["errors"] = errors
                self._end(job, "failed", at)
            else:
                job.phase, job.times["in_progress"] = "in_progress", at
        elif job.phase == "in_progress":
            pending = job.pending()
            for item in pending if everything else pending[:max(1, self.batch_requests_per_step)]:
                item.outcome = self._answer_item(job, item, at)
            if not job.pending():
                if job.finalizes:
                    job.phase, job.times["finalizing"] = "finalizing", at
                else:
                    self._end(job, "completed", at)
        elif job.phase == "finalizing":
            self._end(job, "completed", at)
        elif job.phase == "cancelling":
            self._end(job, "cancelled", at)

    def _end(self, job: BatchJob, end: str, at: float) -> None:
        job.phase, job.end, job.times[end] = "ended", end, at
        order = list(range(len(job.items)))
        random.Random(f"{self.batch_order_seed}/{job.id}").shuffle(order)
        if len(order) > 1 and order == sorted(order):
            order.reverse()  # never the input order: clients must match results by custom_id
        job.order = order
        self._batch_ended(job)


def page(ids: list[str], *, after: str | None = None, before: str | None = None,
         limit: int = 20) -> tuple[list[str], bool]:
    """One page of a newest-first id list, cursor-paginated as both APIs do: the `limit` ids just
    after `after` (older) or just before `before` (newer), and whether more lie beyond them."""
    if after is not None:
        rest = ids[ids.index(after) + 1:] if after in ids else []
        return rest[:limit], len(rest) > limit
    if before is not None:
        rest = ids[:ids.index(before)] if before in ids else []
        return rest[-limit:], len(rest) > limit
    return ids[:limit], len(ids) > limit
