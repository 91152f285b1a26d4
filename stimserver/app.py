"""create_app(settings): the only factory. Wiring only — no logic lives here."""
from __future__ import annotations

from aiohttp import web

from .auth import Authenticator, KeyStore, auth_middleware
from .config import Settings
from .errors import error_middleware
from .handlers import health, jobs
from .keys import AUTH, PATHS, RECORDS, SETTINGS
from .logs import request_id_middleware
from .masterkey import load_master_key
from .store.paths import DataPaths
from .store.records import Records

__all__ = ["create_app"]

ROUTE_TABLES = (health.routes, jobs.routes)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware, auth_middleware],
        client_max_size=settings.max_body_bytes,
    )
    paths = DataPaths(settings.data_dir)
    app[SETTINGS] = settings
    app[PATHS] = paths
    app[RECORDS] = Records(paths)
    app[AUTH] = Authenticator(load_master_key(settings), settings.master_user, KeyStore(paths.keys_file))
    for table in ROUTE_TABLES:
        app.add_routes(table)
    return app
