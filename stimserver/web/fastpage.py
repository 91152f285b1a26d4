"""A complete job's page answered before aiohttp's router and middleware (issue 13).

``GET /v1/repo/{repo}/targets/{target}/{kind}/output`` of a complete job is most of the
traffic, and for it aiohttp's generic path — the router trying the route table, the
middleware chain, the handler's glue — was about a sixth of a request. ``PageApplication``
is the app, and its ``_handle`` gives such a request to ``FastPage.answer`` first. That
answers only the plain case, with the same steps as ``pipeline.request_middleware`` and
``handlers.jobs.get_output`` (trusted proxies, the request id, the key, the job record,
the page from the open outputs through ``jobs.complete_page``, the metrics) and the same
route object, so the body, the headers, the access-log line and the counted metrics are
the ones the ordinary path makes. Plain means: GET (not HEAD), a path of plain names
(no percent escapes), a query of at most ``offset`` and ``limit`` once each as plain
in-range integers, no ``Expect``, no user named (no ``X-User-Id``; ``user_id`` is not a
plain query), a key ``Authenticator.plain_identity`` accepts, a job of a kind in
``jobs.PAGE_HANDLERS`` whose record says complete and whose page the open outputs hold.
Anything else, and every error, goes the ordinary way, so errors keep the one JSON shape.
"""
from __future__ import annotations

import re
import time
import warnings

from aiohttp import web
from aiohttp.web_urldispatcher import ResourceRoute, UrlMappingMatchInfo

from ..api.auth import AUTH
from ..api.keys import IDENTITY, RECORDS, REQUEST_ID, SETTINGS
from ..api.paging import MAX_QUERY_INT
from ..handlers.jobs import PAGE_HANDLERS, complete_page
from ..jobs import JobRef, JobStatus
from ..store.paths import MAX_NAME
from .logs import PAGE_ROUTE, request_id_of, request_state
from .metrics import METRICS
from .proxy import TrustedProxies, note_forwarded

__all__ = ["PageApplication", "FastPage"]

_NAME = r"([A-Za-z0-9][A-Za-z0-9._-]*)"  # store.paths.name_problem's names; the length is checked apart
_PAGE = re.compile(rf"/v1/repo/{_NAME}/targets/{_NAME}/([a-z_]+)/output(?:\?(.*))?", re.DOTALL)
_TEMPLATE = re.compile(r"/v1/repo/\{repo_name\}/targets/\{target_name\}/([a-z_]+)/output")
_INTEGER = re.compile(r"[0-9]{1,20}")
_USUAL_QUERY = re.compile(r"offset=([0-9]{1,20})&limit=([0-9]{1,20})")
_COMPLETE = JobStatus.COMPLETE.value
_KEPT_SIZE = 1024  # JobRefs and route matches kept, each


class FastPage:
    """The plain complete-job page of one app; see the module doc. Made at the app's startup."""

    def __init__(self, app: web.Application, proxies: TrustedProxies | None) -> None:
        settings = app[SETTINGS]
        self.auth = app[AUTH]
        self.records = app[RECORDS]
        self.metrics = app[METRICS]
        self.proxies = proxies if proxies else None
        self.default_limit = settings.default_page_size
        self.max_limit = settings.max_page_size
        self.routes = page_routes(app)
        self.templates = {kind: route.resource.canonical for kind, route in self.routes.items()
                          if route.resource is not None}
        self._refs: dict[tuple[str, str, str, str], JobRef] = {}
        self._matches: dict[tuple[ResourceRoute, str, str], UrlMappingMatchInfo] = {}

    def _query(self, query: str | None) -> tuple[int, int] | None:
        """``(offset, limit)`` of a plain query, or None (then ``paging.page_params`` decides)."""
        offset, limit = 0, self.default_limit
        if not query:
            return offset, limit
        usual = _USUAL_QUERY.fullmatch(query)  # the official client's own form: one match, no loop
        if usual is not None:
            offset, limit = int(usual.group(1)), int(usual.group(2))
            return (offset, limit) if 1 <= limit <= self.max_limit and offset <= MAX_QUERY_INT else None
        seen = set()
        for part in query.split("&"):
            name, eq, value = part.partition("=")
            if not eq or name in seen or not _INTEGER.fullmatch(value):
                return None
            seen.add(name)
            if name == "offset":
                offset = int(value)
                if offset > MAX_QUERY_INT:
                    return None  # paging.page_params refuses it in the one error shape
            elif name == "limit":
                limit = int(value)
                if not 1 <= limit <= self.max_limit:
                    return None
            else:
                return None
        return offset, limit

    def answer(self, request: web.Request, app: web.Application) -> web.StreamResponse | None:
        """The response to a plain complete-job page request, or None: the ordinary path answers it."""
        started = time.perf_counter()
        found = _PAGE.fullmatch(request.raw_path)
        if found is None:
            return None
        state = request_state(request)  # written as request[key] = ..., without aiohttp's per-call key checks
        if state is None:  # no state dict (another aiohttp): the ordinary path answers
            return None
        repo, target, kind, query = found.groups()
        route = self.routes.get(kind)
        if route is None or len(repo) > MAX_NAME or len(target) > MAX_NAME:
            return None
        page = self._query(query)
        headers = request.headers
        if page is None or "X-User-Id" in headers or "Expect" in headers:
            return None
        identity = self.auth.plain_identity(headers.get("Authorization"))
        if identity is None:
            return None
        records = self.records
        offset, limit = page
        try:
            job, version = records.job_versioned(identity.user, repo, target, kind)
            if job is None or version is None or job.get("status") != _COMPLETE:
                return None
            response = complete_page(records, self._ref(identity.user, repo, target, kind), job, version, offset,
                                     limit)
        except Exception:  # the ordinary path meets it again and answers it in the one error shape
            return None
        if response is None:
            return None
        request._match_info = self._match_info(app, route, repo, target)
        if self.proxies is not None:
            note_forwarded(request, self.proxies)
        state[IDENTITY] = identity
        rid = state[REQUEST_ID] = request_id_of(request)
        state[PAGE_ROUTE] = (self.templates[kind], request.raw_path.partition("?")[0])  # = request.path here
        response.headers["X-Request-Id"] = rid
        body = response.body
        self.metrics.observe(self.templates[kind], "GET", response.status, time.perf_counter() - started,
                             len(body) if isinstance(body, bytes) else 0)  # what observe_request counts
        return response

    def _ref(self, user: str, repo: str, target: str, kind: str) -> JobRef:
        """``JobRef(user, repo, target, kind)``, made once per job (a frozen dataclass is slow to make)."""
        key = (user, repo, target, kind)
        found = self._refs.get(key)
        if found is None:
            if len(self._refs) >= _KEPT_SIZE:
                self._refs.clear()
            found = self._refs[key] = JobRef(user, repo, target, kind)
        return found

    def _match_info(self, app: web.Application, route: ResourceRoute, repo: str, target: str) -> UrlMappingMatchInfo:
        """The frozen match of ``route`` for these names, as the router makes it; kept per (route, names),
        since a frozen match is never changed and the same few pages are asked for again and again."""
        key = (route, repo, target)
        found = self._matches.get(key)
        if found is None:
            found = UrlMappingMatchInfo({"repo_name": repo, "target_name": target}, route)
            found.add_app(app)
            found.freeze()
            if len(self._matches) >= _KEPT_SIZE:
                self._matches.clear()
            self._matches[key] = found
        return found


def page_routes(app: web.Application) -> dict[str, ResourceRoute]:
    """The app's GET routes of ``jobs.PAGE_HANDLERS`` on their ``.../<kind>/output`` template, by kind."""
    found: dict[str, ResourceRoute] = {}
    for route in app.router.routes():
        resource = route.resource
        if route.method != "GET" or resource is None or not isinstance(route, ResourceRoute):
            continue
        template = _TEMPLATE.fullmatch(resource.canonical)
        if template is not None and PAGE_HANDLERS.get(template.group(1)) is route.handler:
            found[template.group(1)] = route
    return found


with warnings.catch_warnings():
    # aiohttp discourages subclassing Application; overriding ``_handle`` is the one way in
    # before the router short of a server of our own, and aiohttp's test client uses it too.
    warnings.simplefilter("ignore", DeprecationWarning)

    class PageApplication(web.Application):
        """``web.Application`` whose ``_handle`` tries ``FastPage`` first (set ``fast_page`` at startup)."""

        ATTRS = web.Application.ATTRS | frozenset({"fast_page"})
        fast_page: FastPage | None = None

        async def _handle(self, request: web.Request) -> web.StreamResponse:
            fast = self.fast_page
            if fast is not None and request.method == "GET":
                response = fast.answer(request, self)
                if response is not None:
                    return response
            return await super()._handle(request)
