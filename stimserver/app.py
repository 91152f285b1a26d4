"""create_app(settings): the only factory. Wiring only — no logic lives here."""
from __future__ import annotations

import os

from aiohttp import web

from .auth import Authenticator, KeyStore, auth_middleware
from .config import Settings
from .errors import error_middleware
from .handlers import health, jobs, prompts, repos, targets, unserved
from .jobs import JobRunner, LLMFactory
from .keys import AUTH, JOB_CONTROL, METRICS, OPENAPI, PATHS, RECORDS, SETTINGS
from .llm import Completer, LLMClient, LLMConfig
from .logs import request_id_middleware
from .masterkey import load_master_key
from .metrics import Metrics, count_lines_generated, metrics_middleware
from .metrics import routes as metrics_routes
from .openapi import openapi_bytes
from .openapi import routes as openapi_routes
from .proxy import TrustedProxies, forwarded_middleware
from .store.paths import DataPaths
from .store.records import Records

__all__ = ["create_app", "llm_factory_from_env"]

ROUTE_TABLES = (health.routes, jobs.routes, repos.routes, prompts.routes, targets.routes, unserved.routes)


def llm_factory_from_env() -> LLMFactory:
    """The LLM client factory job runners get: settings read from the environment when the
    first job needs a client, so a bad setting fails that job rather than the server."""

    def make() -> Completer:
        return LLMClient(LLMConfig.from_env(os.environ))

    return make


def create_app(settings: Settings) -> web.Application:
    proxies = TrustedProxies(settings.trusted_proxies)
    app = web.Application(
        middlewares=[*((forwarded_middleware(proxies),) if proxies else ()), metrics_middleware,
                     request_id_middleware, error_middleware, auth_middleware],
        client_max_size=settings.max_body_bytes,
    )
    paths = DataPaths(settings.data_dir)
    app[SETTINGS] = settings
    app[PATHS] = paths
    app[RECORDS] = Records(paths)
    app[METRICS] = Metrics(paths)
    app[OPENAPI] = openapi_bytes(settings)
    app[AUTH] = Authenticator(load_master_key(settings), settings.master_user, KeyStore(paths.keys_file))
    runner = JobRunner(paths, llm_factory=llm_factory_from_env(), max_jobs=settings.max_jobs,
                       orphan_seconds=settings.job_orphan_seconds, on_lines=count_lines_generated)
    app[JOB_CONTROL] = runner  # run/stop requests work even when this process runs no jobs
    if settings.run_jobs:
        app.cleanup_ctx.append(runner.cleanup_ctx)
    for table in ROUTE_TABLES:
        app.add_routes(table)
    app.add_routes(openapi_routes)
    app.add_routes(metrics_routes)
    return app
