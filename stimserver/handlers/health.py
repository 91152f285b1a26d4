"""GET /v1/health: unauthenticated, answers even with a bad token (API.md §4)."""
from __future__ import annotations

from aiohttp import web

from .. import __version__
from ..api.jsonio import json_response
from ..api.keys import PATHS

routes = web.RouteTableDef()


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    data_ok = request.app[PATHS].root.is_dir()
    return json_response({"status": "healthy" if data_ok else "degraded", "api": "stimserver",
                          "version": __version__})
