"""Forwarded headers, believed only from the proxies the settings name.

Behind nginx every request arrives from nginx's address; the real client is in
``X-Forwarded-For`` and the original scheme in ``X-Forwarded-Proto``. Anyone can send
those headers, so they are read only when the connection itself comes from an address
in ``trusted_proxies`` (IPs or CIDRs). ``X-Forwarded-For`` is then read from the right:
each hop appends the address it saw, so the first address that is not itself a trusted
proxy is the client (what is left of it was written by the client and proves nothing).

Nothing is rewritten: the middleware stores the client address and scheme under
``CLIENT_ADDR``/``CLIENT_SCHEME`` on the request, where the access log (and any handler,
through ``client_address``) finds them. With no trusted proxy configured the middleware
is not installed at all.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..api.keys import CLIENT_ADDR, CLIENT_SCHEME

__all__ = ["TrustedProxies", "forwarded_middleware", "note_forwarded", "client_address"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address
_CACHE_SIZE = 4096  # distinct peer/hop addresses remembered; a proxy tier has a handful


def _ip(text: str) -> _IP | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:443", as some proxies write IPv6 hops
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # "1.2.3.4:5678"
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # "::ffff:127.0.0.1" from a dual-stack socket is 127.0.0.1
    return addr


class TrustedProxies:
    """The proxy networks of ``Settings.trusted_proxies`` and who a forwarded request is from."""

    def __init__(self, spec: str | None) -> None:
        self.networks = tuple(ipaddress.ip_network(item.strip(), strict=False)
                              for item in (spec or "").split(",") if item.strip())
        self._known: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str | None) -> bool:
        if not address:
            return False
        known = self._known.get(address)
        if known is None:
            ip = _ip(address)
            known = ip is not None and any(ip.version == net.version and ip in net for net in self.networks)
            if len(self._known) >= _CACHE_SIZE:
                self._known.clear()
            self._known[address] = known
        return known

    def client(self, peer: str, forwarded_for: str) -> str:
        """The client address a trusted ``peer`` reports in its ``X-Forwarded-For`` value."""
        client = peer
        for hop in reversed(forwarded_for.split(",")):
            ip = _ip(hop)
            if ip is None:
                break  # garbage is not believed: the last hop that wrote it is the best we know
            client = str(ip)
            if not self.trusts(client):
                break
        return client


def note_forwarded(request: web.Request, proxies: TrustedProxies) -> None:
    """Record the real client and scheme of a request that came through one of ``proxies``."""
    peer = request.remote
    if peer is not None and proxies.trusts(peer):
        headers = request.headers
        forwarded_for = headers.get("X-Forwarded-For")
        if forwarded_for:
            request[CLIENT_ADDR] = proxies.client(peer, forwarded_for)
        proto = headers.get("X-Forwarded-Proto", "").strip().lower()
        if proto in ("http", "https"):
            request[CLIENT_SCHEME] = proto


def forwarded_middleware(proxies: TrustedProxies) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """A middleware recording the real client of requests that come through ``proxies``.

    The app itself runs ``note_forwarded`` inside its one middleware (``pipeline.py``).
    """

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        note_forwarded(request, proxies)
        return await handler(request)

    return forwarded


def client_address(request: web.BaseRequest) -> str | None:
    """The client's address: as a trusted proxy reported it, else the connection's peer."""
    return request.get(CLIENT_ADDR) or request.remote
