"""The answer log (store/answers.py) and the ordered answer stream (jobs/engine.py) on their own."""
from __future__ import annotations

import asyncio

import pytest

from stimserver.jobs.engine import AnswerStream
from stimserver.store.answers import AnswerLog, answer_log_path


def test_a_torn_last_line_is_cut_and_its_request_asked_again(tmp_path):
    log = AnswerLog.open(tmp_path, "0")
    log.append(0, {"questions": ["a?"]})
    log.append(2, {"questions": ["c?"]})
    log.close()
    path = answer_log_path(tmp_path, "0")
    with open(path, "ab") as f:
        f.write(b'{"request": 1, "answer": {"questi')  # the process died mid-write
    again = AnswerLog.open(tmp_path, "0")
    assert again.done == {0: {"questions": ["a?"]}, 2: {"questions": ["c?"]}}
    assert path.read_bytes().endswith(b"\n")
    again.append(1, {"questions": ["b?"]})
    again.close()
    assert AnswerLog.open(tmp_path, "0").done[1] == {"questions": ["b?"]}


async def test_answers_come_in_request_order_and_logged_ones_are_not_sent(tmp_path):
    sent: list[int] = []

    async def send(n: int) -> int:
        sent.append(n)
        await asyncio.sleep(0.01 * ((7 * n) % 5))  # answers arrive out of order
        return n * 10

    async with AnswerStream(tmp_path, "0", window=4) as stream:
        stream.log.append(3, 30)
        got = [a async for a in stream.ordered(0, 8, send)]
    assert got == [n * 10 for n in range(8)]
    assert sorted(sent) == [0, 1, 2, 4, 5, 6, 7]
    async with AnswerStream(tmp_path, "0", window=4) as stream:
        assert [a async for a in stream.ordered(0, 8, send)] == got
    assert len(sent) == 7  # the second pass read everything from the log


async def test_a_later_failure_stops_the_stream_at_once(tmp_path):
    release = asyncio.Event()

    async def send(n: int) -> int:
        if n == 0:
            await release.wait()  # the head never answers
        if n == 2:
            raise RuntimeError("request 2 failed")
        return n

    async with AnswerStream(tmp_path, "0", window=4) as stream:
        with pytest.raises(RuntimeError, match="request 2 failed"):
            async for _ in stream.ordered(0, 4, send):
                pass
        assert set(stream.log.done) <= {1, 3}  # the head was cancelled, never logged
