"""Signed, expiring download links of bake checkpoints: made by ``…/bakes/{b}/download``, served here.

    GET /v1/downloads/bakes/{user}/{repo}/{bake}/{step}?job=J&expires=E&signature=S

needs no bearer key (``api.auth`` lets ``DOWNLOAD_PREFIX`` through): the link itself is the
permission, like an object store's presigned URL. ``S`` is HMAC-SHA256, under the data
directory's download secret (``store.bakes``, shared by every process and host), of the user,
repo, bake, step, job id and expiry (Unix seconds). So a link reaches only what it was made for;
a changed part, an expired link or a link made under another secret answers 403, a bake or
checkpoint that is gone (or a bake deleted and made again: another job id) 404, each with the
one JSON error shape. The answer is the checkpoint's ``.tar.gz`` (``BakeStore.archive``).

The link is absolute, to this server as the client reached it: the scheme and host of the
request, or ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` when a trusted proxy sent them
(``web/proxy.py`` sets ``CLIENT_SCHEME`` only for a trusted proxy; then its host is believed too).
Removing the secret file revokes every link made so far.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
from urllib.parse import urlencode

from aiohttp import web

from ..api.auth import DOWNLOAD_PREFIX
from ..api.errors import Forbidden, NotFound
from ..api.keys import CLIENT_SCHEME, RECORDS
from ..store.bakes import BakeStore
from ..store.paths import name_problem

__all__ = ["routes", "DOWNLOAD_PREFIX", "DOWNLOAD_ROUTE", "signature", "signed_url", "public_base"]

routes = web.RouteTableDef()

DOWNLOAD_ROUTE = DOWNLOAD_PREFIX + "bakes/{user}/{repo_name}/{bake_name}/{checkpoint}"
GZIP = "application/gzip"
_DIGITS = re.compile(r"[0-9]{1,18}")
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_ASK = "ask GET /v1/repo/<repo>/bakes/<bake>/download for a new one"


def signature(secret: bytes, user: str, repo: str, bake: str, step: int, job_id: int, expires: int) -> str:
    message = "\0".join(("stimserver-bake-download", user, repo, bake, str(step), str(job_id), str(expires)))
    digest = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_base(request: web.Request) -> str:
    """``scheme://host`` of this server as the client reached it (a trusted proxy's forwarded values first)."""
    scheme = request.get(CLIENT_SCHEME)
    host = None
    if scheme is not None:  # set only for a request from a trusted proxy (web/proxy.py)
        forwarded = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        if _HOST.fullmatch(forwarded):
            host = forwarded
    return f"{scheme or request.scheme}://{host or request.host}"


def signed_url(request: web.Request, secret: bytes, user: str, repo: str, bake: str, step: int, job_id: int,
               expires_in: int) -> str:
    expires = int(time.time()) + expires_in
    query = urlencode({"job": job_id, "expires": expires,
                       "signature": signature(secret, user, repo, bake, step, job_id, expires)})
    path = DOWNLOAD_ROUTE.format(user=user, repo_name=repo, bake_name=bake, checkpoint=step)
    return f"{public_base(request)}{path}?{query}"


@routes.get(DOWNLOAD_ROUTE)
async def download(request: web.Request) -> web.StreamResponse:
    info, query = request.match_info, request.query
    user, repo, bake, step_text = info["user"], info["repo_name"], info["bake_name"], info["checkpoint"]
    job_text, expires_text, given = query.get("job", ""), query.get("expires", ""), query.get("signature", "")
    if any(name_problem(n) is not None for n in (user, repo, bake)) or not given \
            or not all(_DIGITS.fullmatch(t) for t in (step_text, job_text, expires_text)):
        raise Forbidden(f"not a valid download link; {_ASK}")
    step, job_id, expires = int(step_text), int(job_text), int(expires_text)
    store = BakeStore(request.app[RECORDS])
    expected = signature(store.download_secret(), user, repo, bake, step, job_id, expires)
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass")):
        raise Forbidden(f"the download link's signature does not match (the link was changed, or made under "
                        f"another secret); {_ASK}")
    if time.time() >= expires:
        raise Forbidden(f"the download link expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(expires))}; "
                        f"{_ASK}")
    job = store.job(user, repo, bake) if store.bake(user, repo, bake) is not None else None
    if job is None or job.get("job_id") != job_id:
        raise NotFound(f"bake '{bake}' of this link no longer exists in repo '{repo}'")
    path = await asyncio.to_thread(store.archive, user, repo, bake, step)
    return web.FileResponse(path, headers={
        "Content-Type": GZIP, "Cache-Control": "private, no-store",
        "Content-Disposition": f'attachment; filename="{repo}-{bake}-{step}.tar.gz"'})
