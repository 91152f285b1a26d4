"""Typed keys for state shared through the application and the request.

The keys of the lower layers' objects (settings, paths, records, the job runner) and of
the request's own values. A key whose value is an object of the edge lives beside its
class (``auth.AUTH``, ``web.metrics.METRICS``), so this module imports nothing above it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .identity import Identity

if TYPE_CHECKING:  # annotations only: importing the job runner for real would load the jobs layer with the keys
    from ..config import Settings
    from ..jobs import JobRunner
    from ..store.paths import DataPaths
    from ..store.records import Records

SETTINGS: web.AppKey[Settings] = web.AppKey("SETTINGS")
PATHS: web.AppKey[DataPaths] = web.AppKey("PATHS")
RECORDS: web.AppKey[Records] = web.AppKey("RECORDS")
OPENAPI = web.AppKey("OPENAPI", bytes)

IDENTITY: web.RequestKey[Identity] = web.RequestKey("IDENTITY")
REQUEST_ID = web.RequestKey("REQUEST_ID", str)
# Set by proxy.forwarded_middleware, only for requests from a trusted proxy that forwarded them.
CLIENT_ADDR = web.RequestKey("CLIENT_ADDR", str)
CLIENT_SCHEME = web.RequestKey("CLIENT_SCHEME", str)
# The app's JobRunner: run, status and stop requests go through it (also when this process runs no jobs).
JOB_CONTROL: web.AppKey[JobRunner] = web.AppKey("JOB_CONTROL")
