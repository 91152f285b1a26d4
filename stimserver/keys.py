"""Typed keys for state shared through the application and the request.

Declared in one module so every other module can import them without cycles.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # the annotations below name these; importing them for real would make cycles
    from .auth import Authenticator, Identity
    from .config import Settings
    from .jobs import JobRunner
    from .metrics import Metrics
    from .store.paths import DataPaths
    from .store.records import Records

SETTINGS: web.AppKey[Settings] = web.AppKey("SETTINGS")
PATHS: web.AppKey[DataPaths] = web.AppKey("PATHS")
RECORDS: web.AppKey[Records] = web.AppKey("RECORDS")
AUTH: web.AppKey[Authenticator] = web.AppKey("AUTH")
METRICS: web.AppKey[Metrics] = web.AppKey("METRICS")
OPENAPI = web.AppKey("OPENAPI", bytes)

IDENTITY: web.RequestKey[Identity] = web.RequestKey("IDENTITY")
REQUEST_ID = web.RequestKey("REQUEST_ID", str)
# Set by proxy.forwarded_middleware, only for requests from a trusted proxy that forwarded them.
CLIENT_ADDR = web.RequestKey("CLIENT_ADDR", str)
CLIENT_SCHEME = web.RequestKey("CLIENT_SCHEME", str)
# The app's JobRunner: run, status and stop requests go through it (also when this process runs no jobs).
JOB_CONTROL: web.AppKey[JobRunner] = web.AppKey("JOB_CONTROL")
