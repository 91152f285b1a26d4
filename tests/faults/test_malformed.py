"""Requests aiohttp's parser refuses, each carrying a user token and the master key (issue 16, point 2).

Every one must get the JSON error shape with a fitting status, echo nothing of itself,
get an access-log line (route null), and leave neither secret in any body, header,
stdout (the access log) or stderr (the server log). The real server runs as a
subprocess; requests go over a raw socket, since no HTTP client sends these.
"""
from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from stimserver.api.auth import KeyStore
from stimserver.store.paths import DataPaths
from tests.serverproc import ServerProcess, free_port

Build = Callable[[str, str], bytes]  # (user token, master key) -> the raw request


def _head(line: str, *headers: str) -> bytes:
    return (line + "\r\n" + "".join(h + "\r\n" for h in ("Host: x", *headers)) + "\r\n").encode("latin-1")


CASES: list[tuple[str, Build, int, str]] = [
    ("authorization-with-trailing-nul",
     lambda u, m: _head(f"GET /v1/repo?key={m} HTTP/1.1", f"Authorization: Bearer {u}\x00"), 400, "INVALID_INPUT"),
    ("authorization-over-8190-bytes",
     lambda u, m: _head("GET /v1/repo HTTP/1.1", f"X-Api-Key: {m}", f"Authorization: Bearer {u}{'x' * 8200}"),
     431, "HEADERS_TOO_LARGE"),
    ("nul-in-another-header",
     lambda u, m: _head("GET /v1/repo HTTP/1.1", f"Authorization: Bearer {m}", f"X-Note: {u}\x00"),
     400, "INVALID_INPUT"),
    ("control-character-in-a-header",
     lambda u, m: _head("GET /v1/repo HTTP/1.1", f"Authorization: Bearer {u}\x01{m}"), 400, "INVALID_INPUT"),
    ("space-in-a-header-name",
     lambda u, m: _head("GET /v1/repo HTTP/1.1", f"Author ization: Bearer {u}", f"X-M: {m}"), 400, "INVALID_INPUT"),
    ("one-100-kb-header",
     lambda u, m: _head("GET /v1/repo HTTP/1.1", f"Authorization: Bearer {m}", f"X-Pad: {u}{'p' * 100_000}"),
     431, "HEADERS_TOO_LARGE"),
    ("100-kb-of-headers",
     lambda u, m: _head("GET /v1/repo HTTP/1.1", f"Authorization: Bearer {u}", f"X-M: {m}",
                        *(f"X-H{i}: {'y' * 90}" for i in range(1000))), 431, "HEADERS_TOO_LARGE"),
    ("20000-character-url",
     lambda u, m: _head(f"GET /v1/repo?token={u}&key={m}&pad={'z' * 20_000} HTTP/1.1"), 414, "URI_TOO_LONG"),
    ("token-in-the-query-of-a-bad-request-line",
     lambda u, m: _head(f"GET /v1/repo?token={u}&key={m} HTTP/1.1 junk"), 400, "INVALID_INPUT"),
    ("space-in-the-url",
     lambda u, m: _head(f"GET /v1/repo?token={u} &key={m} HTTP/1.1"), 400, "INVALID_INPUT"),
    ("control-character-in-the-url",
     lambda u, m: _head(f"GET /v1/repo?token={u}\x01&key={m} HTTP/1.1"), 400, "INVALID_INPUT"),
    ("bad-method",
     lambda u, m: _head(f"G\x01T /v1/repo?token={u}&key={m} HTTP/1.1"), 400, "INVALID_INPUT"),
    ("bad-http-version",
     lambda u, m: _head(f"GET /v1/repo?token={u}&key={m} HTTP/9.9"), 400, "INVALID_INPUT"),
    ("tls-handshake-on-the-http-port",
     lambda u, m: b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + u.encode() + m.encode(), 400, "INVALID_INPUT"),
]


def exchange(port: int, raw: bytes) -> bytes:
    """Send ``raw``, read until the server closes; what it answered (a reset after the answer is fine)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        try:
            conn.sendall(raw)
        except OSError:
            pass  # the server may answer and close before it has read all of a huge request
        got = b""
        try:
            while chunk := conn.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
        return got


def parse(answer: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The responses in ``answer``: (status, lower-cased headers, body) each."""
    out = []
    while answer:
        head, _, rest = answer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        out.append((int(status_line.split()[1]), headers, rest[:length]))
        answer = rest[length:]
    return out


def _serve(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]):
    root: Path = tmp_path_factory.mktemp("malformed")
    _, user_token = KeyStore(DataPaths(root / "data").keys_file).create("alice")
    server = ServerProcess(root / "data", free_port(), root, env=env).start()
    yield server, user_token
    server.kill()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """A server with one user key, on aiohttp's C parser (what pip installs)."""
    yield from _serve(tmp_path_factory, {})


@pytest.fixture(scope="module")
def served_py(tmp_path_factory: pytest.TempPathFactory):
    """The same on aiohttp's pure-Python parser (AIOHTTP_NO_EXTENSIONS=1), whose errors differ in type and text."""
    yield from _serve(tmp_path_factory, {"AIOHTTP_NO_EXTENSIONS": "1"})


# The pure-Python parser takes "HTTP/9.9" as a version and waits for a line end after TLS bytes: nothing to refuse.
PYTHON_PARSER_ACCEPTS = {"bad-http-version", "tls-handshake-on-the-http-port"}
PARSER_CASES = [pytest.param(fixture, *case[1:], id=f"{fixture}-{case[0]}") for fixture in ("served", "served_py")
                for case in CASES if fixture == "served" or case[0] not in PYTHON_PARSER_ACCEPTS]


def secrets_of(server: ServerProcess, user_token: str) -> list[bytes]:
    """The secrets, whole and their distinctive tails (a truncated echo would still show those)."""
    return [s.encode() for s in (user_token, user_token[-16:], server.master_key, server.master_key[-16:])]


def assert_no_secret(server: ServerProcess, user_token: str, *blobs: bytes) -> None:
    streams = {"response": b"".join(blobs), "stdout": server.stdout.read_bytes(), "stderr": server.stderr.read_bytes()}
    for where, text in streams.items():
        for secret in secrets_of(server, user_token):
            assert secret not in text, f"a secret is in {where}"


@pytest.mark.parametrize("fixture, build, status, code", PARSER_CASES)
def test_malformed_request_gets_json_and_leaks_nothing(request: pytest.FixtureRequest, fixture: str, build: Build,
                                                       status: int, code: str) -> None:
    server, user_token = request.getfixturevalue(fixture)
    answer = exchange(server.port, build(user_token, server.master_key))
    [(got, headers, body)] = parse(answer)
    assert got == status, answer[:300]
    assert headers["content-type"].startswith("application/json")
    error = orjson.loads(body)
    assert set(error) == {"message", "code"} and error["code"] == code and error["message"]
    rid = headers["x-request-id"]
    line = server.logged(rid)[rid]
    assert (line["route"], line["method"], line["path"], line["status"], line["error"]) == (None, None, None,
                                                                                              status, code)
    assert_no_secret(server, user_token, answer)


def test_a_malformed_request_after_a_good_one_on_the_same_connection(served) -> None:
    server, user_token = served
    good = _head("GET /v1/repo HTTP/1.1", f"Authorization: Bearer {user_token}")
    bad = _head(f"GET /v1/repo?token={user_token}&key={server.master_key} HTTP/1.1 junk")
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(good)  # answered first: aiohttp drops a good request parsed in one read with a bad one
        answer = b""
        while b"{\"repos\":[]}" not in answer:
            answer += conn.recv(65536)
        conn.sendall(bad)  # the same kept-alive connection
        while chunk := conn.recv(65536):
            answer += chunk
    (s1, h1, b1), (s2, h2, b2) = parse(answer)
    assert s1 == 200 and orjson.loads(b1) == {"repos": []}
    assert s2 == 400 and orjson.loads(b2)["code"] == "INVALID_INPUT"
    lines = server.logged(h1["x-request-id"], h2["x-request-id"])
    assert lines[h1["x-request-id"]]["route"] == "/v1/repo" and lines[h1["x-request-id"]]["user"] == "alice"
    assert lines[h2["x-request-id"]]["route"] is None
    assert_no_secret(server, user_token, answer)


def test_a_large_header_block_within_the_limits_is_served(served) -> None:
    """100 KB over 13 headers each below the limit is valid HTTP: served, and still nothing echoed."""
    server, user_token = served
    raw = _head("GET /v1/repo HTTP/1.1", f"Authorization: Bearer {server.master_key}", "Connection: close",
                *(f"X-H{i}: {user_token}{'y' * 7_900}" for i in range(13)))
    answer = exchange(server.port, raw)
    [(status, headers, body)] = parse(answer)
    assert status == 200 and orjson.loads(body) == {"repos": []}
    assert server.logged(headers["x-request-id"])[headers["x-request-id"]]["route"] == "/v1/repo"
    assert_no_secret(server, user_token, answer)


def test_after_shutdown_no_secret_and_no_traceback_anywhere(served) -> None:
    server, user_token = served
    for _, build, _, _ in CASES:  # each once more, then a clean stop: every buffered line is out
        exchange(server.port, build(user_token, server.master_key))
    assert server.terminate() == 0
    assert_no_secret(server, user_token)
    err = server.stderr.read_bytes()
    assert b"Traceback" not in err and b"Error handling request" not in err
    log = server.access_log()
    refused = [line for line in log if line.get("error")]
    assert len(refused) >= 2 * len(CASES) + 1
    assert len({line["request_id"] for line in log}) == len(log)  # one line per request
