"""``stimserver worker``: a job runner without a web server.

Any number of workers (and ``serve`` processes with ``run_jobs``) may share one data
directory; the job locks decide who runs what. SIGTERM or SIGINT stops the worker
cleanly: its jobs go back to ``pending`` and the next runner resumes them.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from .config import Settings
from .jobs.bake import BakeSettings
from .jobs.runner import JobRunner, default_kinds
from .store.paths import DataPaths

__all__ = ["run_worker"]


def run_worker(settings: Settings) -> int:
    from .web.preflight import probe_prices
    from .web.server import check_data_dir

    problem = check_data_dir(settings.data_dir) or probe_prices(settings.data_dir)
    if problem:
        print(f"stimserver: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_work(settings))


async def _work(settings: Settings) -> int:
    from .llm.providers import client_factory
    from .web.metrics import count_lines_generated

    runner = JobRunner(DataPaths(settings.data_dir), llm_factory=client_factory(settings), max_jobs=settings.max_jobs,
                       kinds=default_kinds(BakeSettings.from_settings(settings)),
                       orphan_seconds=settings.job_orphan_seconds, on_lines=count_lines_generated)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runner.start()
    print(f"stimserver worker (pid {os.getpid()}): running jobs from {settings.data_dir} "
          f"(at most {settings.max_jobs} at once); Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await runner.close()
    return 0
