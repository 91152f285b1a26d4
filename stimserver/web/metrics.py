"""Prometheus metrics: the request middleware, job and line counts, GET /metrics.

Series (all prefixed ``stimserver_``)::

    http_requests_total{route, method, status}          requests answered
    http_request_duration_seconds{route, method}        handler latency (histogram)
    http_response_bytes_total{route}                    response body bytes served
    jobs{kind, status}                                  job records on disk by state
    lines_generated_total{kind}                         output lines committed by job runners
    llm_requests_total{provider, model, outcome}        LLM request attempts (ok, rate_limited, retried, failed)
    llm_tokens_total{provider, model, direction}        tokens the providers counted (input, output)
    llm_cost_usd_total{provider, model}                 USD the priced answers cost (``llm.prices``)
    build_info{version}                                 always 1

``route`` is the route template (``/v1/repo/{repo_name}/...``), never the raw path, so
the number of series stays bounded; requests no route matched count as ``unmatched``.

Several processes (``serve --workers N``) share one port, and a scrape reaches any one
of them, so they keep their counters in prometheus-client's multi-process files
(``PROMETHEUS_MULTIPROC_DIR``, set up by ``server.py`` before this module is imported)
and every scrape adds up all of them. Job states are not counted in memory at all: a
scrape counts the ``job.json`` records of the data directory (every process and every
``stimserver worker`` writes there), at most once per ``JOB_SCAN_SECONDS``.
"""
from __future__ import annotations

import asyncio
import os
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from .. import __version__
from ..llm.limiter import COST_LISTENERS, LISTENERS
from ..store.cache import FileCache
from ..store.jobrecords import JobStatus, job_files
from ..store.paths import JOB_KINDS, DataPaths

__all__ = ["METRICS", "Metrics", "observe_request", "routes", "count_lines_generated", "count_llm_cost",
           "multiprocess_dir",
           "JOB_STATES", "FOLD_SECONDS", "fold_on_cleanup"]

METRICS: web.AppKey[Metrics] = web.AppKey("METRICS")


LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_STATES = tuple(s for s in JobStatus if s is not JobStatus.NOT_STARTED)  # what a record can hold
JOB_SCAN_SECONDS = 5.0
FOLD_SECONDS = 1.0  # request counts reach prometheus-client (and other processes' scrapes) within this
FOLD_AT = 128  # or once this many wait (~45 µs to fold): a fold of many holds the loop (p99)
UNMATCHED = "unmatched"

_lines: Counter | None = None


def multiprocess_dir() -> str | None:
    """The multi-process metrics directory in force, if any."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _lines_counter() -> Counter:
    # Process-wide, made on first use: the job runner has no app to find a Metrics object in.
    global _lines
    if _lines is None:
        _lines = Counter("stimserver_lines_generated", "Output lines committed by job runners in this process "
                         "(all processes with multi-process metrics)", ["kind"], registry=None)
    return _lines


def count_lines_generated(lines: int, kind: str = "stim") -> None:
    """For job runners: ``lines`` more output lines of a ``kind`` job are committed."""
    if lines > 0:
        _lines_counter().labels(kind).inc(lines)


_llm: tuple[Counter, Counter] | None = None


def _llm_counters() -> tuple[Counter, Counter]:
    global _llm
    if _llm is None:
        _llm = (Counter("stimserver_llm_requests", "LLM request attempts by provider, model and outcome",
                        ["provider", "model", "outcome"], registry=None),
                Counter("stimserver_llm_tokens", "Tokens the LLM providers counted, by direction",
                        ["provider", "model", "direction"], registry=None))
    return _llm


def count_llm_request(provider: str, model: str, outcome: str, input_tokens: int, output_tokens: int) -> None:
    """For ``llm.limiter``: one attempt ended with ``outcome``, and the tokens its answer counted."""
    requests, tokens = _llm_counters()
    requests.labels(provider, model, outcome).inc()
    if input_tokens:
        tokens.labels(provider, model, "input").inc(input_tokens)
    if output_tokens:
        tokens.labels(provider, model, "output").inc(output_tokens)


if count_llm_request not in LISTENERS:
    LISTENERS.append(count_llm_request)


_cost: Counter | None = None


def _cost_counter() -> Counter:
    global _cost
    if _cost is None:
        _cost = Counter("stimserver_llm_cost_usd", "USD the LLM answers cost by the price table (answers of "
                        "models it has no price for are not counted)", ["provider", "model"], registry=None)
    return _cost


def count_llm_cost(provider: str, model: str, usd: float) -> None:
    """For ``llm.limiter``: an answer of ``model`` cost ``usd`` (``llm.prices``)."""
    _cost_counter().labels(provider, model).inc(usd)


if count_llm_cost not in COST_LISTENERS:
    COST_LISTENERS.append(count_llm_cost)


class JobStates:
    """Counts job records by kind and status, re-reading the disk at most every ``ttl`` seconds."""

    def __init__(self, paths: DataPaths, ttl: float = JOB_SCAN_SECONDS) -> None:
        self.paths = paths
        self.ttl = ttl
        self._counts: dict[tuple[str, str], int] = {}
        self._cache = FileCache(size=1 << 16)  # a scrape re-reads only the records that changed
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    def scan(self) -> dict[tuple[str, str], int]:
        counts = {(kind, state.value): 0 for kind in JOB_KINDS for state in JOB_STATES}
        seen = set()
        for ref, path in job_files(self.paths):
            seen.add(path)
            try:
                record = self._cache.read(path)
            except OSError:
                continue  # removed or being replaced right now: the next scan sees it
            status = record.get("status") if record is not None else None
            if isinstance(status, str) and len(status) <= 32:
                counts[(ref.kind, status)] = counts.get((ref.kind, status), 0) + 1
        self._cache.keep_only(seen)
        return counts

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._at >= self.ttl:
                self._counts = await asyncio.to_thread(self.scan)
                self._at = time.monotonic()

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("stimserver_jobs", "Job records in the data directory by kind and status",
                                   labels=["kind", "status"])
        for (kind, status), n in sorted(self._counts.items()):
            family.add_metric([kind, status], n)
        yield family


class _Static:
    """Collector for series that are the same in every process."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("stimserver_build_info", "stimserver version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


class _Lines:
    def collect(self) -> Iterator[Metric]:
        yield from _lines_counter().collect()
        for counter in _llm_counters():
            yield from counter.collect()
        yield from _cost_counter().collect()


class Metrics:
    """The request metrics of one app, and the exposition of everything."""

    def __init__(self, paths: DataPaths, *, job_scan_seconds: float = JOB_SCAN_SECONDS) -> None:
        self.multiprocess = multiprocess_dir()
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("stimserver_http_requests", "HTTP requests answered, by route template, method "
                                "and status", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("stimserver_http_request_duration_seconds", "Time from routing to the handler's "
                                 "response, by route template and method", ["route", "method"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.bytes = Counter("stimserver_http_response_bytes", "Response body bytes served, by route template",
                             ["route"], registry=self.registry)
        self.jobs = JobStates(paths, job_scan_seconds)
        _lines_counter().labels("stim")  # the series exists (at 0) before the first job
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any, Any]] = {}
        self._bounds = list(self.latency._upper_bounds)
        self._pending: list[tuple[str, str, int, float, int]] = []  # requests not yet folded in (see observe)
        self._timer: asyncio.TimerHandle | None = None

    def observe(self, route: str, method: str, status: int, seconds: float, nbytes: int) -> None:
        """Count one answered request: now into a list, into prometheus-client within ``FOLD_SECONDS``.

        Four ``inc``s a request, each taking a lock (and in the multi-process mode writing a
        file's page), were a measurable share of a page (issue 13); kept as a tuple and summed
        in one loop when folded, a request costs an append. A scrape folds this process's
        counts first; another process's arrive within ``FOLD_SECONDS``. At most ``FOLD_AT``
        wait, so memory stays bounded however busy the second.
        """
        pending = self._pending
        pending.append((route, method, status, seconds, nbytes))
        if len(pending) >= FOLD_AT:
            self.fold()
        elif self._timer is None:
            self._arm()

    def _arm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a script, a test): nothing would fold later
            self.fold()
            return
        self._timer = loop.call_later(FOLD_SECONDS, self.fold)

    def fold(self) -> None:
        """Add the pending counts to prometheus-client's values (a scrape, the timer, shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        sums: dict[tuple[str, str, int], list[Any]] = {}
        bounds = self._bounds
        for route, method, status, seconds, nbytes in pending:
            key = (route, method, status)
            counts = sums.get(key)
            if counts is None:
                counts = sums[key] = [0, 0.0, [0] * len(bounds), 0]
            counts[0] += 1
            counts[1] += seconds
            counts[2][bisect_left(bounds, seconds)] += 1
            counts[3] += nbytes
        for key, (count, seconds, buckets, nbytes) in sums.items():
            children = self._children.get(key)
            if children is None:
                route, method, status = key
                latency = self.latency.labels(route, method)
                children = self._children[key] = (self.requests.labels(route, method, str(status))._value,
                                                  latency._sum, latency._buckets, self.bytes.labels(route)._value)
            requests, total, bucket_values, body = children
            requests.inc(count)
            total.inc(seconds)
            for value, n in zip(bucket_values, buckets, strict=True):
                if n:
                    value.inc(n)
            if nbytes:
                body.inc(nbytes)

    async def exposition(self) -> bytes:
        self.fold()
        await self.jobs.refresh()
        if self.multiprocess:
            registry = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(registry, self.multiprocess)
        else:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Lines())
            for collector in (self.requests, self.latency, self.bytes):
                registry.register(collector)
        registry.register(self.jobs)
        registry.register(_Static())
        return generate_latest(registry)


async def fold_on_cleanup(app: web.Application) -> None:
    """``app.on_cleanup`` hook: the last second's counts are folded in before the process ends."""
    app[METRICS].fold()


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def observe_request(metrics: Metrics, request: web.Request, started: float,
                    response: web.StreamResponse | None = None, status: int = 0) -> None:
    """Count one answered request (``response``, or a bare ``status`` for a passing HTTP exception)."""
    body = response.body if isinstance(response, web.Response) else None
    metrics.observe(_route(request), request.method, response.status if response is not None else status,
                    time.perf_counter() - started, len(body) if isinstance(body, (bytes, bytearray)) else 0)


routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition; public, like /v1/health."""
    body = await request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
