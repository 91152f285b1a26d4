"""Endpoints of the Bread API that stimserver does not serve: a JSON 404 that says so.

Bakes and recipes belong to model training, which is out of scope. 404 (never 5xx)
keeps the official client from retrying, and the message tells the user why.
Registered last, so any real route for the same path wins.
"""
from __future__ import annotations

from aiohttp import web

from ..api.errors import NotFound

routes = web.RouteTableDef()

_TAIL = "{tail:(/.*)?}"
_NOT_SERVED = {
    "/v1/repo/{repo_name}/bakes" + _TAIL: "bakes (model training) are not served by stimserver",
    "/v1/repo/{repo_name}/recipe" + _TAIL: "recipes (bake lineage) are not served by stimserver",
}


def _not_served(reason: str):
    async def handler(request: web.Request) -> web.Response:
        raise NotFound(f"{reason}: {request.method} {request.path} is not available")

    return handler


for _path, _reason in _NOT_SERVED.items():
    routes.route("*", _path)(_not_served(_reason))
