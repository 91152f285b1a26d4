"""GET …/stim/output/search, …/sample and …/stats over HTTP: answers, continuation, errors, isolation."""
from __future__ import annotations

import orjson
import pytest

BASE = "/v1/repo/repo1/targets/t1/stim/output"


@pytest.fixture
def alice(master_headers):
    return {**master_headers, "X-User-Id": "alice"}


def row(i: int) -> dict:
    tag = "<confident>" if i % 10 == 3 else "<unsure>"
    return {"stimulus_id": i, "question": f"Question {i % 250}? {tag}", "type": "oneshot_qs" if i % 3 else "persona",
            "response": {"content": f"answer {i}", "n": i}}


async def get(client, path, headers):
    r = await client.get(path, headers=headers)
    assert r.content_type == "application/json"
    return r.status, await r.json()


async def test_search_substring_continues_to_the_end(client, make_job, alice, settings):
    rows = make_job(lines=3000, record=row)
    expected = [i for i, r in enumerate(rows) if "<CONFIDENT>".lower() in orjson.dumps(r).decode().lower()]
    found, offset, calls = [], 0, 0
    while offset is not None:
        status, body = await get(client, f"{BASE}/search?q=%3CConfident%3E&limit=7&offset={offset}", alice)
        assert status == 200
        assert body["lines"] == 3000 and body["status"] == "complete"
        for m in body["matches"]:
            assert m["record"] == rows[m["line"]]
        found += [m["line"] for m in body["matches"]]
        assert body["next_offset"] is None or body["next_offset"] > offset
        offset = body["next_offset"]
        calls += 1
    assert found == expected and calls >= len(expected) // 7


async def test_search_scans_a_bounded_number_of_bytes(aiohttp_client, settings, make_job, alice):
    from stimserver.config import Settings
    from stimserver.web.app import create_app

    small = Settings.build(**{**{f: getattr(settings, f) for f in ("data_dir", "master_key", "access_log")},
                              "search_scan_bytes": 4096})
    client = await aiohttp_client(create_app(small))
    rows = make_job(lines=2000, record=row)
    offset, found, steps = 0, [], 0
    while offset is not None:
        status, body = await get(client, f"{BASE}/search?regex=answer%201%5Cd%5Cd%22&offset={offset}", alice)
        assert status == 200
        assert body["scanned_bytes"] <= 4096 + 200  # the budget, plus at most the line under way
        found += [m["line"] for m in body["matches"]]
        offset = body["next_offset"]
        steps += 1
    assert found == [i for i in range(len(rows)) if 100 <= i <= 199]
    assert steps > 10


async def test_search_by_field(client, make_job, alice):
    rows = make_job(lines=300, record=row)
    status, body = await get(client, f"{BASE}/search?field=response.content&regex=%5Eanswer%2012%24", alice)
    assert [m["line"] for m in body["matches"]] == [12]
    status, body = await get(client, f"{BASE}/search?field=response.n&regex=%5E29%24", alice)
    assert [m["line"] for m in body["matches"]] == [29]
    # the substring "Question 1?" is in the question field; "stimulus_id" only in the keys
    status, body = await get(client, f"{BASE}/search?field=question&q=question%201%3F&limit=1000", alice)
    assert [m["line"] for m in body["matches"]] == [i for i, r in enumerate(rows) if r["question"].startswith(
        "Question 1?")]
    status, body = await get(client, f"{BASE}/search?field=question&q=stimulus_id", alice)
    assert body["matches"] == [] and body["next_offset"] is None


async def test_line_anchors_and_no_match_across_lines(client, make_job, alice):
    make_job(lines=50, record=row)
    _, body = await get(client, f"{BASE}/search?regex=%5E%7B%22stimulus_id%22%3A7%2C", alice)  # ^{"stimulus_id":7,
    assert [m["line"] for m in body["matches"]] == [7]
    _, body = await get(client, f"{BASE}/search?regex=%7D%7D%5B%5Ex%5D%2A%7B&limit=1000", alice)  # }}[^x]*{
    assert body["matches"] == []  # [^x] never takes a newline: a match is inside one line


@pytest.mark.parametrize("query, name", [
    ("regex=(a", "regex"), ("regex=(a)%5C1", "regex"), ("regex=((a%7B1000%7D)%7B1000%7D)%7B1000%7D", "regex"),
    ("q=", "q"), ("regex=", "regex"), ("q=a&regex=(b", "regex"), ("q=" + "a" * 1001, "q"),
    ("q=a&field=", "field"), ("q=a&field=a..b", "field"), ("q=a&limit=0", "limit"), ("q=a&limit=1001", "limit"),
    ("q=a&offset=-1", "offset"), ("q=a&offset=x", "offset"),
])
async def test_bad_search_is_422_naming_it(client, make_job, alice, query, name):
    make_job(lines=3)
    status, body = await get(client, f"{BASE}/search?{query}", alice)
    assert status == 422, body
    assert body["code"] == "VALIDATION_ERROR"
    assert body["detail"][0]["loc"] == ["query", name]
    if name == "regex" and "(a" in query:
        assert "(a" in body["message"]


async def test_neither_q_nor_regex_matches_every_line(client, make_job, alice):
    """The document makes both optional: without them a search lists lines (with field, those that have it)."""
    make_job(lines=5, record=lambda i: {"stimulus_id": i, "question": f"Q{i}?", **({"note": "x"} if i % 2 else {})})
    status, body = await get(client, f"{BASE}/search?limit=3", alice)
    assert status == 200 and [m["line"] for m in body["matches"]] == [0, 1, 2]
    status, body = await get(client, f"{BASE}/search?field=note", alice)
    assert status == 200 and [m["line"] for m in body["matches"]] == [1, 3]


async def test_q_and_regex_together_match_lines_that_match_both(client, make_job, alice):
    make_job(lines=30, record=lambda i: {"stimulus_id": i, "question": f"Capital number {i}?"})
    status, body = await get(client, f"{BASE}/search?q=CAPITAL&regex=number%202", alice)  # 2, 20..29
    assert status == 200 and [m["line"] for m in body["matches"]] == [2, *range(20, 30)]
    status, body = await get(client, f"{BASE}/search?q=capital&regex=%209%5C%3F%24&field=question", alice)  # " 9\?$"
    assert status == 200 and [m["line"] for m in body["matches"]] == [9]
    status, body = await get(client, f"{BASE}/search?q=nowhere&regex=number", alice)
    assert status == 200 and body["matches"] == []


async def test_pathological_pattern_is_linear(client, make_job, alice):
    """(a+)+$ on a long run of a's is exponential for a backtracking engine; RE2 answers at once."""
    make_job(lines=20, record=lambda i: {"stimulus_id": i, "question": "a" * 5000 + "!"})
    status, body = await get(client, f"{BASE}/search?field=question&regex=%5E(a%2B)%2B%24", alice)
    assert status == 200 and body["matches"] == [] and body["next_offset"] is None
    status, body = await get(client, f"{BASE}/search?regex=(a%7C aa)*b", alice)
    assert status == 200 and body["matches"] == []


async def test_sample_is_deterministic_distinct_and_bounded(client, make_job, alice):
    rows = make_job(lines=500)
    _, a = await get(client, f"{BASE}/sample?n=50&seed=42", alice)
    _, b = await get(client, f"{BASE}/sample?n=50&seed=42", alice)
    _, c = await get(client, f"{BASE}/sample?n=50&seed=43", alice)
    assert a == b and a != c
    lines = [s["line"] for s in a["samples"]]
    assert len(set(lines)) == 50 and lines == sorted(lines)
    assert all(s["record"] == rows[s["line"]] for s in a["samples"])
    assert a["seed"] == 42 and a["n"] == 50 and a["lines"] == 500 and a["status"] == "complete"
    _, d = await get(client, f"{BASE}/sample?n=1000&seed=1", alice)
    assert [s["line"] for s in d["samples"]] == list(range(500))
    _, e = await get(client, f"{BASE}/sample", alice)
    assert len(e["samples"]) == 10
    for bad in ("n=0", "n=1001", "seed=-1", "seed=x"):
        status, body = await get(client, f"{BASE}/sample?{bad}", alice)
        assert status == 422 and body["detail"][0]["loc"] == ["query", bad.split("=")[0]]


async def test_stats_answer(client, make_job, alice):
    rows = make_job(lines=1000, record=row)
    status, body = await get(client, f"{BASE}/stats", alice)
    assert status == 200
    assert body["lines"] == 1000 and body["status"] == "complete"
    assert body["distinct_questions"] == len({r["question"] for r in rows})
    assert body["repeated_question_lines"] == 1000 - body["distinct_questions"]
    assert body["by_type"] == {"oneshot_qs": 666, "persona": 334}
    assert body["rollout"] is None and body["tokens"] is None
    assert (await get(client, f"{BASE}/stats", alice))[1] == body


async def test_never_run_and_unknown(client, make_job, alice, records):
    make_job(lines=1)
    records.create_target("alice", "repo1", {**records.target("alice", "repo1", "t1"), "target_name": "t2"})
    other = "/v1/repo/repo1/targets/t2/stim/output"
    _, body = await get(client, f"{other}/search?q=a", alice)
    assert body["matches"] == [] and body["next_offset"] is None and body["status"] == "not_started"
    _, body = await get(client, f"{other}/sample", alice)
    assert body["samples"] == [] and body["lines"] == 0
    _, body = await get(client, f"{other}/stats", alice)
    assert body["lines"] == 0 and body["status"] == "not_started"
    for what in ("search?q=a", "sample", "stats"):
        status, body = await get(client, f"/v1/repo/repo1/targets/nope/stim/output/{what}", alice)
        assert status == 404


async def test_another_users_output_is_never_searched(client, make_job, master_headers, user_key):
    make_job(lines=20, user="alice", record=lambda i: {"stimulus_id": i, "question": "alice secret"})
    make_job(lines=5, user="bob", record=lambda i: {"stimulus_id": i, "question": "bob's own"})
    bob = user_key("bob")
    for what in ("search?q=secret", "sample?n=20", "stats"):
        status, body = await get(client, f"{BASE}/{what}", bob)
        assert status == 200
        assert "alice" not in orjson.dumps(body).decode()
        status, body = await get(client, f"{BASE}/{what}", {**bob, "X-User-Id": "alice"})
        assert status == 403
    status, body = await get(client, f"{BASE}/search?q=secret", {**master_headers, "X-User-Id": "carol"})
    assert status == 404


async def test_the_new_routes_are_counted_by_route_template(client, make_job, alice):
    make_job(lines=5)
    for what in ("output/search?q=Question", "output/sample", "output/stats", "export"):
        r = await client.get(f"/v1/repo/repo1/targets/t1/stim/{what}", headers=alice)
        assert r.status == 200
        await r.read()
    text = await (await client.get("/metrics")).text()
    for what in ("output/search", "output/sample", "output/stats", "export"):
        route = f"/v1/repo/{{repo_name}}/targets/{{target_name}}/stim/{what}"
        assert any(route in line and 'status="200"' in line for line in text.splitlines()), what


async def test_a_scan_under_way_blocks_no_other_request(client, make_job, alice, monkeypatch):
    """The scan runs in its own threads: while one is held mid-scan, pages, stats and samples still answer."""
    import asyncio
    import threading

    from stimserver.store import scan

    make_job(lines=20)
    entered, release = threading.Event(), threading.Event()
    real = scan.search

    def held(*args):
        entered.set()
        release.wait(30)
        return real(*args)

    monkeypatch.setattr(scan, "search", held)
    searching = asyncio.ensure_future(client.get(f"{BASE}/search?q=Question", headers=alice))
    try:
        await asyncio.to_thread(entered.wait, 30)
        assert entered.is_set() and not searching.done()
        status, page = await get(client, "/v1/repo/repo1/targets/t1/stim/output?limit=5", alice)
        assert status == 200 and len(page["output"]) == 5
        status, _ = await get(client, f"{BASE}/sample?n=3", alice)
        assert status == 200
    finally:
        release.set()
    r = await searching
    assert r.status == 200 and len((await r.json())["matches"]) == 20
