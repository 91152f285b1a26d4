"""Forwarded headers count only from trusted proxies; the access log names the real client."""
from __future__ import annotations

import io

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from stimserver.api.keys import CLIENT_ADDR, CLIENT_SCHEME
from stimserver.config import Settings
from stimserver.web.app import create_app
from stimserver.web.logs import JsonAccessLogger, flush_access_log
from stimserver.web.proxy import TrustedProxies, client_address, forwarded_middleware
from tests.conftest import MASTER_KEY


@pytest.mark.parametrize("spec, address, trusted", [
    ("127.0.0.1", "127.0.0.1", True),
    ("127.0.0.1", "127.0.0.2", False),
    ("10.0.0.0/8, 192.168.1.7", "10.200.3.4", True),
    ("10.0.0.0/8, 192.168.1.7", "192.168.1.7", True),
    ("10.0.0.0/8, 192.168.1.7", "192.168.1.8", False),
    ("::1", "::1", True),
    ("127.0.0.1", "::ffff:127.0.0.1", True),  # a dual-stack socket's way of writing it
    ("fd00::/8", "fd12::1", True),
    ("127.0.0.1", "not-an-ip", False),
    ("127.0.0.1", None, False),
    (None, "127.0.0.1", False),
])
def test_trusts(spec, address, trusted):
    assert TrustedProxies(spec).trusts(address) is trusted


@pytest.mark.parametrize("forwarded_for, client", [
    ("203.0.113.9", "203.0.113.9"),
    ("198.51.100.1, 203.0.113.9", "203.0.113.9"),       # the left part came from the client: not believed
    ("203.0.113.9, 10.0.0.5", "203.0.113.9"),            # through two trusted proxies
    ("10.0.0.6, 10.0.0.5", "10.0.0.6"),                  # only proxies: the farthest one
    ("garbage, 10.0.0.5", "10.0.0.5"),                   # garbage stops the walk at the last good hop
    ("203.0.113.9:5555", "203.0.113.9"),
    ("[2001:db8::7]:443", "2001:db8::7"),
    (" , ", "10.0.0.1"),                                  # nothing usable: the peer itself
])
def test_client_is_the_first_untrusted_hop_from_the_right(forwarded_for, client):
    assert TrustedProxies("10.0.0.0/8").client("10.0.0.1", forwarded_for) == client


def test_settings_check_the_list():
    assert Settings.build(trusted_proxies=" 127.0.0.1 , 10.0.0.0/8 ").trusted_proxies == "127.0.0.1,10.0.0.0/8"
    assert Settings.build(trusted_proxies=" , ").trusted_proxies is None
    assert Settings.from_env({"STIMSERVER_TRUSTED_PROXIES": "::1"}).trusted_proxies == "::1"
    assert Settings.build().trusted_proxies is None
    with pytest.raises(ValueError, match="STIMSERVER_TRUSTED_PROXIES"):
        Settings.build(trusted_proxies="127.0.0.1,nginx.local")


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"client": client_address(request), "scheme": request.get(CLIENT_SCHEME),
                              "forwarded": CLIENT_ADDR in request})


@pytest.mark.parametrize("spec, headers, expected", [
    ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},
     {"client": "203.0.113.9", "scheme": "https", "forwarded": True}),
    ("127.0.0.0/8", {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"},
     {"client": "203.0.113.9", "scheme": None, "forwarded": True}),
    ("127.0.0.1", {"X-Forwarded-Proto": "gopher"}, {"client": "127.0.0.1", "scheme": None, "forwarded": False}),
    ("10.0.0.0/8", {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},  # the test client is not a proxy
     {"client": "127.0.0.1", "scheme": None, "forwarded": False}),
], ids=["trusted", "trusted-chain", "bad-proto", "untrusted-peer"])
async def test_middleware(aiohttp_client, spec, headers, expected):
    app = web.Application(middlewares=[forwarded_middleware(TrustedProxies(spec))])
    app.router.add_get("/", echo)
    client = await aiohttp_client(app)
    assert await (await client.get("/", headers=headers)).json() == expected


async def test_no_trusted_proxy_no_forwarded_step(aiohttp_client, settings, monkeypatch):
    """The app's one middleware (pipeline.py) consults forwarded headers only when proxies are trusted."""
    import stimserver.web.pipeline as pipeline

    calls = []
    monkeypatch.setattr(pipeline, "note_forwarded", lambda request, proxies: calls.append(proxies))
    plain = await aiohttp_client(create_app(settings))
    assert (await plain.get("/v1/health", headers={"X-Forwarded-For": "203.0.113.9"})).status == 200
    assert calls == []
    behind = await aiohttp_client(create_app(Settings.build(data_dir=settings.data_dir, master_key=MASTER_KEY,
                                                            trusted_proxies="127.0.0.1")))
    assert (await behind.get("/v1/health")).status == 200
    assert len(calls) == 1


@pytest.mark.parametrize("trusted, remote, via", [("127.0.0.1", "203.0.113.9", "127.0.0.1"),
                                                  (None, "127.0.0.1", None)])
async def test_access_log_names_the_real_client(aiohttp_client, tmp_path, monkeypatch, trusted, remote, via):
    import logging

    stream = io.BytesIO()
    monkeypatch.setattr(JsonAccessLogger, "stream", stream)
    app = create_app(Settings.build(data_dir=tmp_path / "data", master_key=MASTER_KEY, trusted_proxies=trusted))
    server = TestServer(app)
    await server.start_server(access_log_class=JsonAccessLogger, access_log=logging.getLogger("test.access"))
    client = await aiohttp_client(server)
    r = await client.get("/v1/repo", headers={"Authorization": f"Bearer {MASTER_KEY}", "X-Request-Id": "rid-1",
                                              "X-Forwarded-For": "203.0.113.9"})
    assert r.status == 200 and r.headers["X-Request-Id"] == "rid-1"
    await client.close()  # the log line is written once the response is done
    flush_access_log()  # lines are buffered for up to a second (logs.py); serve flushes them on shutdown
    entry = orjson.loads(stream.getvalue().splitlines()[-1])
    assert (entry["remote"], entry["via"], entry["user"], entry["request_id"]) == (remote, via, "admin", "rid-1")
    assert entry["route"] == "/v1/repo" and entry["status"] == 200
    assert MASTER_KEY.encode() not in stream.getvalue()
