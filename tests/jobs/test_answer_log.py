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


def _bill(usd, tokens=10):
    return {"input_tokens": tokens, "output_tokens": 2, "cached_input_tokens": 4, "cache_write_tokens": 0,
            "cost_usd": usd, "price_table": "t1", "cost_unknown": None}


async def test_a_resumed_jobs_usage_is_rebuilt_from_the_bills_in_its_logs(tmp_path):
    # The usage file lags the log (saved once a second, or after a batch's commit): a crash in between
    # must neither lose the logged answers' cost nor count it twice on the resume.
    from stimserver.jobs.engine import JobLLM
    from stimserver.store.answers import write_usage

    log = AnswerLog.open(tmp_path, "rollout")
    log.append_many([(0, {"response": {"content": "a"}, "billed": _bill(0.5)}),
                     (1, {"error": "rejected"}),
                     (2, {"response": {"content": "c"}, "billed": _bill(0.25)})])
    log.close()
    with open(answer_log_path(tmp_path, "rollout"), "ab") as f:
        f.write(b'{"request": 0, "answer": {"response": {}, "billed": {"cost_usd": 9}}}\n')  # never twice
        f.write(b'{"request": 3, "answer": {"resp')  # torn
    write_usage(tmp_path, {"requests": 1, "input_tokens": 10, "cost_usd": 0.5, "retries": 3, "rate_limited": 1})
    llm = JobLLM(lambda: None, 4)  # type: ignore[arg-type, return-value]
    await llm.attach(tmp_path)
    usage = llm.usage
    assert (usage.requests, usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (2, 20, 4, 8)
    assert usage.cost_usd == pytest.approx(0.75) and usage.price_table == "t1" and usage.cost_unknown is None
    assert (usage.retries, usage.rate_limited) == (3, 1)  # failed attempts are only in the usage file


async def test_answers_logged_without_bills_keep_the_usage_file(tmp_path):
    from stimserver.jobs.engine import JobLLM
    from stimserver.store.answers import write_usage

    log = AnswerLog.open(tmp_path, "0")
    log.append(0, {"questions": ["a?"]})  # logged by a version that kept no bills
    log.append(1, {"questions": ["b?"], "billed": _bill(0.1)})
    log.close()
    write_usage(tmp_path, {"requests": 2, "input_tokens": 30, "cost_usd": 0.3})
    llm = JobLLM(lambda: None, 4)  # type: ignore[arg-type, return-value]
    await llm.attach(tmp_path)
    assert (llm.usage.requests, llm.usage.input_tokens, llm.usage.cost_usd) == (2, 30, 0.3)


async def test_an_unpriced_bill_makes_the_rebuilt_cost_unknown(tmp_path):
    from stimserver.jobs.engine import JobLLM

    log = AnswerLog.open(tmp_path, "rollout")
    log.append(0, {"response": {}, "billed": {**_bill(None), "cost_unknown": "no price for model 'x'"}})
    log.append(1, {"response": {}, "billed": _bill(0.2)})
    log.close()
    llm = JobLLM(lambda: None, 4)  # type: ignore[arg-type, return-value]
    await llm.attach(tmp_path)
    assert llm.usage.requests == 2 and llm.usage.cost_unknown == "no price for model 'x'"
