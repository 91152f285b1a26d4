"""Request ids and the buffered access log (issue 13's logging points).

Ids: 16 hex characters from the pid, an epoch and a counter; unique within a process,
across the processes of ``serve --workers N`` and after a fork. The access log: one line
per request, buffered, every line out after SIGTERM.
"""
from __future__ import annotations

import asyncio
import http.client
import io
import os
import select
import time

import orjson
import pytest

from stimserver.web import logs
from stimserver.web.logs import _LineBuffer, _RequestIds, flush_access_log, new_request_id
from tests.serverproc import ServerProcess, free_port, request

HEX = frozenset("0123456789abcdef")


class Recorder(io.BytesIO):
    """A stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, b: bytes) -> int:  # type: ignore[override]  # BytesIO takes any buffer; these are bytes
        self.writes.append(bytes(b))
        return super().write(b)


def test_ids_are_16_hex_characters_unique_and_carry_the_pid() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 16 and set(i) <= HEX for i in ids)
    assert {int(i[:6], 16) for i in ids} == {os.getpid()}


def test_a_counter_that_wraps_moves_to_the_next_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _RequestIds()
    monkeypatch.setattr(logs, "_COUNTER_LIMIT", 3)
    made = [ids() for _ in range(10)]
    assert len(set(made)) == 10 and all(len(i) == 16 for i in made)
    assert len({i[6:10] for i in made}) == 4  # epochs: 3 ids each


def test_a_forked_child_makes_other_ids_and_does_not_repeat_buffered_lines(tmp_path, monkeypatch) -> None:
    out = tmp_path / "log"
    with open(out, "ab", buffering=0) as stream:
        monkeypatch.setattr(logs.JsonAccessLogger, "stream", stream)
        logs._buffer.forget()
        parent_id = new_request_id()

        async def two_lines() -> None:  # the first goes out at once, the second waits for its second
            logs._buffer.add(b'{"n":1}\n')
            logs._buffer.add(b'{"n":2}\n')

        monkeypatch.setattr(_LineBuffer, "FLUSH_SECONDS", 3600.0)
        logs._buffer._last_write = -float("inf")
        asyncio.run(two_lines())
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report an id, log a line of its own, leave at once
            try:
                os.write(write, new_request_id().encode())
                logs._buffer.add(b'{"n":3}\n')  # no loop here: written at once
                flush_access_log()
            finally:
                os._exit(0)
        os.close(write)
        child_id = os.read(read, 64).decode()
        os.close(read)
        assert os.waitpid(pid, 0)[1] == 0
    assert child_id[:6] == f"{pid:06x}" and parent_id[:6] == f"{os.getpid():06x}"
    assert sorted(out.read_bytes().splitlines()) == [b'{"n":1}', b'{"n":2}', b'{"n":3}']  # each exactly once


def test_without_an_event_loop_each_line_is_written_at_once() -> None:
    stream = Recorder()
    buf = _LineBuffer(lambda: stream)
    for i in range(3):
        buf.add(b"%d\n" % i)
        assert stream.getvalue().endswith(b"%d\n" % i)


async def test_a_burst_is_buffered_then_written_in_whole_line_chunks(monkeypatch) -> None:
    monkeypatch.setattr(_LineBuffer, "FLUSH_SECONDS", 0.05)
    stream = Recorder()
    buf = _LineBuffer(lambda: stream)
    # ~8 KB in all: under MAX_BUFFER_BYTES, so only the timer writes them
    lines = [orjson.dumps({"n": i, "pad": "x" * (i % 50)}) + b"\n" for i in range(200)]
    for line in lines:
        buf.add(line)
    assert stream.writes == [lines[0]]  # the log was quiet: the first line at once, the rest wait
    await asyncio.sleep(0.2)  # past the flush timer, which was armed first
    assert stream.getvalue() == b"".join(lines)  # all, in order, once
    assert all(len(w) <= select.PIPE_BUF and w.endswith(b"\n") for w in stream.writes)
    assert len(stream.writes) < len(lines) / 5


async def test_a_full_buffer_is_written_without_waiting(monkeypatch) -> None:
    monkeypatch.setattr(_LineBuffer, "FLUSH_SECONDS", 3600.0)
    monkeypatch.setattr(_LineBuffer, "MAX_BUFFER_BYTES", 1000)
    stream = Recorder()
    buf = _LineBuffer(lambda: stream)
    for i in range(30):
        buf.add(b"%099d\n" % i)
    assert len(stream.getvalue()) >= 2000  # written at each 1000 bytes, not held for an hour
    buf.flush()
    assert stream.getvalue().count(b"\n") == 30


def test_a_broken_stream_drops_lines_and_does_not_raise() -> None:
    class Closed(io.BytesIO):
        def write(self, b: bytes) -> int:  # type: ignore[override]  # the signature is BytesIO's
            raise OSError(28, "No space left on device")

    buf = _LineBuffer(lambda: Closed())
    buf.add(b"x\n")
    buf.flush()


# -- a real server -------------------------------------------------------------------------------


def test_ids_are_unique_across_the_processes_of_workers_2(tmp_path) -> None:
    server = ServerProcess(tmp_path / "data", free_port(), tmp_path, workers=2).start()
    try:
        ids: list[str] = []
        deadline = time.monotonic() + 60
        pids: set[int] = set()
        while time.monotonic() < deadline and (len(pids) < 2 or len(ids) < 100):
            status, headers, _ = request(server.port, "GET", "/v1/health")  # a fresh connection each
            assert status == 200
            ids.append(headers["x-request-id"])
            if len(ids) % 20 == 0:
                pids = {line["pid"] for line in server.logged(*ids).values() if line["request_id"] in ids}
        assert len(pids) == 2, "every connection went to one process"
        assert len(set(ids)) == len(ids)
        log = server.logged(*ids)
        for rid in ids:  # each process makes ids from its own pid
            assert int(rid[:6], 16) == log[rid]["pid"]
    finally:
        assert server.terminate() == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_writes_every_request_line_once(tmp_path, workers: int) -> None:
    server = ServerProcess(tmp_path / "data", free_port(), tmp_path, workers=workers).start()
    sent: list[str] = []
    try:
        conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(4)]
        for n in range(400):  # quick enough that most lines are still buffered at the signal
            rid = f"burst-{workers}-{n}"
            conn = conns[n % len(conns)]
            conn.request("GET", "/v1/health", headers={"X-Request-Id": rid})
            r = conn.getresponse()
            r.read()
            assert r.status == 200 and r.headers["X-Request-Id"] == rid  # a sane incoming id is kept
            sent.append(rid)
        for conn in conns:
            conn.close()
    finally:
        assert server.terminate() == 0
    logged = [line["request_id"] for line in server.access_log() if line["request_id"].startswith("burst-")]
    assert sorted(logged) == sorted(sent)  # every one, once


async def test_a_line_added_while_a_flush_is_armed_is_written_by_that_flush(monkeypatch) -> None:
    monkeypatch.setattr(_LineBuffer, "FLUSH_SECONDS", 0.05)
    stream = Recorder()
    buf = _LineBuffer(lambda: stream)
    buf.add(b"1\n")  # quiet log: at once
    buf.add(b"2\n")  # arms the timer
    buf.add(b"3\n")  # rides on it
    assert stream.getvalue() == b"1\n"
    await asyncio.sleep(0.2)
    assert stream.getvalue() == b"1\n2\n3\n"


def test_a_flush_armed_on_a_loop_that_closed_does_not_strand_lines(monkeypatch) -> None:
    monkeypatch.setattr(_LineBuffer, "FLUSH_SECONDS", 3600.0)
    stream = Recorder()
    buf = _LineBuffer(lambda: stream)

    async def two() -> None:
        buf.add(b"a\n")
        buf.add(b"b\n")  # waits for a timer that this loop will never run

    asyncio.run(two())
    buf._last_write = -float("inf")
    buf.add(b"c\n")  # no loop now, nothing armed that can fire: everything goes out
    assert stream.getvalue() == b"a\nb\nc\n"


@pytest.mark.parametrize("path", ['/v1/repo/a"b/x', "/v1/repo/\\x/y", "/v1/repo/üñí/ç", "/v1/repo/\x01/z"])
def test_a_logged_line_is_json_whatever_the_path(path, monkeypatch) -> None:
    """The line is formatted by hand (issue 13): every string still goes through orjson."""
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from stimserver.api.auth import Identity
    from stimserver.api.keys import IDENTITY, REQUEST_ID

    stream = Recorder()
    monkeypatch.setattr(logs, "_buffer", _LineBuffer(lambda: stream))
    request = make_mocked_request("GET", "/", app=web.Application())
    monkeypatch.setattr(type(request), "path", path)
    monkeypatch.setattr(type(request), "remote", "127.0.0.1")
    monkeypatch.setattr(logs, "_route", lambda request: "/v1/repo/{repo_name}/x")
    request[REQUEST_ID] = "r1"
    request[IDENTITY] = Identity('al"ice', 'al"ice', False)
    logs.JsonAccessLogger(web.access_logger, "").log(request, web.Response(status=201), 0.0012345)
    entry = orjson.loads(stream.getvalue())
    assert list(entry) == ["ts", "request_id", "remote", "via", "method", "route", "path", "status",
                           "duration_ms", "bytes", "user", "pid"]
    assert entry["route"] == "/v1/repo/{repo_name}/x" and entry["method"] == "GET" and entry["via"] is None
    assert entry["path"] == path and entry["user"] == 'al"ice' and entry["status"] == 201
    assert entry["duration_ms"] == 1.234 and entry["request_id"] == "r1" and entry["pid"] == os.getpid()
    assert abs(entry["ts"] - time.time()) < 60


def test_the_logger_reads_the_requests_own_state_dict():
    """``logs.request_state`` is aiohttp's dict behind ``request[key]`` (the page path writes to it too)."""
    from aiohttp.test_utils import make_mocked_request

    from stimserver.api.keys import REQUEST_ID

    request = make_mocked_request("GET", "/")
    request[REQUEST_ID] = "r1"
    assert logs.request_state(request) is request._state and logs.request_state(request)[REQUEST_ID] == "r1"
    assert logs.REQUEST_ERROR not in logs.request_state(request)
