"""The viewer at ``/ui/``: its static files and its sign-in (issue 12).

    GET    /ui/                 the page (also every /ui/… path the page routes itself: bookmarks)
    GET    /ui/static/{name}    its script, styles (package data in stimserver/ui/)
    POST   /ui/session          sign in: {"key": API key, "user": view-as user (master only)} → cookie
    GET    /ui/session          who the cookie signs in as (401 when none)
    DELETE /ui/session          sign out: the cookie is cleared
    GET    /v1/repo/{R}/bakes/{B}/evaluation   the bake's stored before/after answers (issue 27);
                                               ?checkpoint=N: with checkpoint N's evaluation as "after"
    POST   /ui/repo/{R}/bakes/{B}/checkpoints/{N}/evaluation   the viewer asks for checkpoint N's evaluation

Every answer carries the viewer's security headers (a CSP without inline script or
style, nosniff, no referrer, no framing). The files are read from the package once,
so an editable and an installed stimserver serve the same bytes.

The evaluation route is an API read like any other (bearer key, or the viewer's cookie):
it serves what the trainer wrote once (``eval-before.json`` at the start of the job,
``eval.json`` at its end, store.bakefiles) and never computes anything on a page view. A
checkpoint evaluated on request (``evals/<N>.json``) is read the same way, with ``?checkpoint=N``.

The viewer's one write is the request for a checkpoint's evaluation. Its session cookie counts
only for reads of the API (api/sessions.py), so the page posts to a route of its own under
``/ui/``, which does what ``POST …/bakes/{B}/checkpoints/{N}/evaluation`` does
(``handlers.bakes.ask_evaluation``) for the cookie's user: only with a valid session cookie
(``SameSite=Strict``: other sites' requests do not carry it), a JSON request (a cross-site page
cannot send one without a preflight, which this server never grants) and, when the browser names
one, the viewer's own ``Origin``.
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ..api.auth import UI_PREFIX, Identity
from ..api.errors import BadRequest, Forbidden, NotFound, ValidationError
from ..api.jsonio import json_response, read_json_object
from ..api.keys import IDENTITY, RECORDS
from ..api.sessions import SESSIONS, Sessions
from ..store import bakefiles
from ..store.paths import BAKE_KIND, check_name
from .bakes import ask_evaluation, bake_context, checkpoint_param, evaluation_answer
from .context import repo_context

__all__ = ["routes", "SECURITY_HEADERS", "sessions_of"]

routes = web.RouteTableDef()

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
STATIC = resources.files("stimserver") / "ui"
_files: dict[str, tuple[bytes, str, str]] = {}


def _asset(name: str) -> tuple[bytes, str, str]:
    """(bytes, content type, ETag) of the packaged file ``name``; 404 for anything else."""
    found = _files.get(name)
    if found is None:
        suffix = name[name.rfind("."):] if "." in name else ""
        if "/" in name or name.startswith(".") or suffix not in CONTENT_TYPES:
            raise NotFound(f"no such file: {name}")
        entry = STATIC / name
        if not entry.is_file():
            raise NotFound(f"no such file: {name}")
        data = entry.read_bytes()
        found = _files[name] = (data, CONTENT_TYPES[suffix], '"' + hashlib.sha256(data).hexdigest()[:20] + '"')
    return found


def _file_response(request: web.Request, name: str) -> web.Response:
    data, content_type, etag = _asset(name)
    headers = {**SECURITY_HEADERS, "ETag": etag}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type=content_type, charset="utf-8", headers=headers)


def _json(data: object, status: int = 200) -> web.Response:
    return json_response(data, status, headers=SECURITY_HEADERS)


def sessions_of(request: web.Request) -> Sessions:
    return request.app[SESSIONS]


def _same_origin(request: web.Request, what: str = "sign-in") -> None:
    """A sign-in (or another post) from another site's page is refused (CSRF); browsers send ``Origin`` on a POST.

    Host names are compared without ports: a proxy may forward ``Host`` without its port (nginx's ``$host``).
    """
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).hostname != urlsplit("//" + request.host).hostname:
        raise Forbidden(f"{what} is accepted only from the viewer's own pages")


@routes.get("/ui")
async def ui_root(request: web.Request) -> web.Response:
    raise web.HTTPFound(UI_PREFIX)


@routes.post("/ui/session")
async def sign_in(request: web.Request) -> web.Response:
    _same_origin(request)
    if request.content_type != "application/json":
        raise BadRequest("send the sign-in as a JSON body (Content-Type: application/json)")
    body = await read_json_object(request)
    key, user = body.get("key"), body.get("user")
    if not isinstance(key, str) or not key.strip():
        raise ValidationError("key: an API key is required", detail=[
            {"loc": ["body", "key"], "msg": "an API key is required", "type": "value_error.missing"}])
    if user is not None and not isinstance(user, str):
        raise ValidationError("user: must be a user name", detail=[
            {"loc": ["body", "user"], "msg": "must be a string", "type": "type_error.str"}])
    sessions = sessions_of(request)
    session, identity = sessions.sign_in(key, user)
    response = _json(_whoami(request, identity, session.expires))
    sessions.set_cookie(request, response, session)
    return response


@routes.get("/ui/session")
async def whoami(request: web.Request) -> web.Response:
    session, identity = sessions_of(request).current(request)
    return _json(_whoami(request, identity, session.expires))


@routes.delete("/ui/session")
async def sign_out(request: web.Request) -> web.Response:
    """Always allowed, cookie or not: clearing a cookie gives nobody anything."""
    response = _json({"signed_in": False})
    Sessions.clear_cookie(request, response)
    return response


def _whoami(request: web.Request, identity: Identity, expires: int) -> dict[str, object]:
    answer: dict[str, object] = {"signed_in": True, "user": identity.user, "key_user": identity.key_user,
                                 "is_master": identity.is_master, "expires_at": expires,
                                 "expires_in": max(0, expires - int(time.time()))}
    if identity.is_master:
        answer["users"] = request.app[RECORDS].user_names()
    return answer


def _evaluation(bake_file: Path, job_dir: Path,
                checkpoint: int | None) -> tuple[dict[str, Any], bakefiles.EvaluationState | None] | None:
    """(``{before, after, evaluations}`` from the job folder, the checkpoint's state); None when the bake does
    not exist. With ``checkpoint``, ``after`` is that checkpoint's evaluation (404 if it is not published)."""
    if not bake_file.is_file():
        return None
    before = bakefiles.read_json(job_dir, bakefiles.EVAL_BEFORE)
    state = None
    if checkpoint is None:
        after = bakefiles.read_json(job_dir, bakefiles.EVAL)
    else:
        if checkpoint not in bakefiles.checkpoint_steps(job_dir):
            raise NotFound(f"bake '{bake_file.parent.name}' has no checkpoint {checkpoint}")
        state = bakefiles.evaluation_state(job_dir, checkpoint)
        after = state.evaluation
    evaluations = {str(step): status for step, status in bakefiles.evaluation_statuses(job_dir).items()}
    return {"before": before if isinstance(before, dict) else None,
            "after": after if isinstance(after, dict) else None, "evaluations": evaluations}, state


@routes.get("/v1/repo/{repo_name}/bakes/{bake_name}/evaluation")
async def bake_evaluation(request: web.Request) -> web.Response:
    """The held-out evaluation the bake stored: the base model's (``before``, written when training
    starts) and the baked model's (``after``, written at the end), each with its sample answers.
    ``null`` for a part not written yet; 404 when the repo or bake does not exist. ``evaluations``:
    ``{step: status}`` of the checkpoints evaluated or asked for. With ``?checkpoint=N`` (a published
    checkpoint, else 404), ``after`` is checkpoint N's evaluation, beside its ``status`` and ``error``."""
    raw = request.query.get("checkpoint")
    checkpoint = None if raw is None else checkpoint_param(raw, "query")
    ctx = repo_context(request)
    bake = check_name(request.match_info["bake_name"], "bake_name")
    paths = ctx.records.paths
    found = await asyncio.to_thread(_evaluation, paths.bake_file(ctx.user, ctx.repo, bake),
                                    paths.job_dir(ctx.user, ctx.repo, bake, BAKE_KIND), checkpoint)
    if found is None:
        raise NotFound(f"bake '{bake}' not found in repo '{ctx.repo}'")
    body, state = found
    if checkpoint is not None and state is not None:
        answer = evaluation_answer(ctx, bake, checkpoint, state)
        body.update({k: answer[k] for k in ("checkpoint", "status", "error", "note", "requested_at", "finished_at")})
    return json_response({"bake_name": bake, **body})


@routes.post("/ui/repo/{repo_name}/bakes/{bake_name}/checkpoints/{checkpoint}/evaluation")
async def ask_checkpoint_evaluation(request: web.Request) -> web.Response:
    """The viewer's "Evaluate checkpoint N": ``POST …/bakes/{B}/checkpoints/{N}/evaluation`` for the session's user."""
    _same_origin(request, "a request for an evaluation")
    if request.content_type != "application/json":
        raise BadRequest("send the request as JSON (Content-Type: application/json)")
    _, identity = sessions_of(request).current(request)
    request[IDENTITY] = identity
    step = checkpoint_param(request.match_info["checkpoint"])
    ctx, _, name, _ = bake_context(request)
    response = await ask_evaluation(request, ctx, name, step)
    response.headers.update(SECURITY_HEADERS)
    return response


@routes.get("/ui/static/{name}")
async def static_file(request: web.Request) -> web.Response:
    return _file_response(request, request.match_info["name"])


@routes.get("/ui/")
async def page(request: web.Request) -> web.Response:
    return _file_response(request, "index.html")


@routes.get("/ui/{route:.+}")
async def page_route(request: web.Request) -> web.Response:
    """A bookmarked view: the same page, which reads its path and shows that view."""
    return _file_response(request, "index.html")
