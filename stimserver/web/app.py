"""create_app(settings): the only factory. Wiring only — no logic lives here."""
from __future__ import annotations

import gc
from functools import partial

from aiohttp import web

from ..api.auth import AUTH, Authenticator, KeyStore
from ..api.keys import JOB_CONTROL, OPENAPI, PATHS, RECORDS, SETTINGS
from ..api.sessions import SESSIONS, Sessions
from ..config import Settings
from ..handlers import bakes, downloads, estimate, export, health, jobs, prompts, recipes, repos, search, targets, ui
from ..jobs import BakeSettings, JobRunner, default_kinds
from ..llm.providers import client_factory
from ..store.paths import DataPaths
from ..store.records import Records
from .fastpage import FastPage, PageApplication
from .logs import flush_on_cleanup
from .masterkey import load_master_key
from .metrics import METRICS, Metrics, count_lines_generated, fold_on_cleanup
from .metrics import routes as metrics_routes
from .openapi import openapi_bytes
from .openapi import routes as openapi_routes
from .pipeline import request_middleware
from .proxy import TrustedProxies

__all__ = ["create_app"]

ROUTE_TABLES = (health.routes, jobs.routes, repos.routes, prompts.routes, targets.routes, estimate.routes,
                bakes.routes, recipes.routes, downloads.routes, export.routes, search.routes, ui.routes)


def create_app(settings: Settings) -> PageApplication:
    paths = DataPaths(settings.data_dir)
    metrics = Metrics(paths)
    auth = Authenticator(load_master_key(settings), settings.master_user, KeyStore(paths.keys_file))
    sessions = auth.sessions = Sessions(settings.data_dir, auth, settings.ui_session_seconds)  # the viewer's cookies
    proxies = TrustedProxies(settings.trusted_proxies)
    # One middleware runs forwarded → metrics → request id → errors → auth (pipeline.py);
    # a complete job's plain page is answered before the router, by the same steps (fastpage.py).
    app = PageApplication(middlewares=[request_middleware(auth, metrics, proxies)],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[SESSIONS] = sessions
    app[PATHS] = paths
    app[RECORDS] = Records(paths)
    app[METRICS] = metrics
    app[OPENAPI] = openapi_bytes(settings)
    app[AUTH] = auth
    runner = JobRunner(paths, llm_factory=client_factory(settings), max_jobs=settings.max_jobs,
                       kinds=default_kinds(BakeSettings.from_settings(settings)),
                       orphan_seconds=settings.job_orphan_seconds, on_lines=count_lines_generated)
    app[JOB_CONTROL] = runner  # run/stop requests work even when this process runs no jobs
    if settings.run_jobs:
        app.cleanup_ctx.append(runner.cleanup_ctx)
    for table in ROUTE_TABLES:
        app.add_routes(table)
    app.add_routes(openapi_routes)
    app.add_routes(metrics_routes)
    app.on_startup.append(partial(_start_fast_page, proxies=proxies))
    app.on_startup.append(_freeze_startup_objects)
    app.on_cleanup.append(flush_on_cleanup)
    app.on_cleanup.append(fold_on_cleanup)  # the last second's request counts, before the process ends
    app.on_cleanup.append(_unfreeze)
    app.on_cleanup.append(_close_outputs)  # requests drained at shutdown get their access-log lines
    return app


async def _start_fast_page(app: web.Application, proxies: TrustedProxies) -> None:
    """The page path before the router, made once every route is in (``fastpage.py``)."""
    assert isinstance(app, PageApplication)
    app.fast_page = FastPage(app, proxies)


async def _freeze_startup_objects(app: web.Application) -> None:
    """Move what startup built (schemas, routes, modules) out of the collector's sight.

    A full collection under load otherwise walks those ~55,000 objects every few seconds,
    a 30 ms stall that shows in p99 (issue 13); they live as long as the process anyway.
    """
    gc.collect()
    gc.freeze()


async def _unfreeze(app: web.Application) -> None:
    """Back to ordinary collection when the app stops (tests start many apps in one process)."""
    gc.unfreeze()


async def _close_outputs(app: web.Application) -> None:
    """Close the output files the page fast path kept open (store/opencache.py)."""
    app[RECORDS].outputs.close()
