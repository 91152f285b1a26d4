"""The viewer in a real browser (headless Chromium) against ``stimserver serve`` on the demo data."""
from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from stimserver.store.locks import FileLock
from stimserver.store.output import OutputWriter, encode, lock_path
from stimserver.store.paths import DataPaths
from stimserver.store.records import Records
from tests.conftest import import_jsonl

from .conftest import artifact_dir, sign_in

OUT = "/ui/repo/demo/target/{}/stim"
XSS = ['<script>window.__xss = 1</script>', '<img src=x onerror="window.__xss = 2">',
       '[click me](javascript:window.__xss=3)']


def rows_on_screen(page) -> list[int]:
    return [int(x) for x in page.eval_on_selector_all(".vlist .row:not(.pending)", "rs => rs.map(r => r.dataset.line)")]


def output_offsets(page, since: int = 0) -> list[int]:
    """The offsets of the output pages the page requested (after request number ``since``)."""
    found = []
    for r in page.requests[since:]:
        url = urlsplit(r.url)
        if url.path.endswith("/stim/output") or url.path.endswith("/rollout/output"):
            found.append(int(parse_qs(url.query).get("offset", ["0"])[0]))
    return found


def import_rows(data_dir: Path, target: str, rows: list[dict], kind: str = "stim", user: str = "demo") -> Records:
    records = Records(DataPaths(data_dir))
    src = data_dir.parent / f"{target}-{kind}.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    import_jsonl(records, user, "demo", target, src, kind=kind)
    return records


def stim_row(i: int, question: str) -> dict:
    return {"stimulus_id": i, "question": question, "type": "hardcoded",
            "unconditioned_stimulus": {"messages": [{"role": "system", "content": "Teacher prompt."},
                                                    {"role": "user", "content": question}]},
            "conditioned_stimulus": {"messages": [{"role": "user", "content": question}]}}


def test_sign_in_navigate_and_screenshot(page, demo_server, demo_key):
    base = f"http://127.0.0.1:{demo_server.port}"
    page.goto(base + "/ui/")
    page.wait_for_url(re.compile(r"/ui/signin"))  # not signed in: to the sign-in form
    sign_in(page, base, demo_key)
    assert page.text_content("#who .me") == "demo"
    page.goto(base + "/ui/")
    page.click("ul.repos a")
    page.wait_for_selector("table.targets tr[data-target='geography']")
    assert page.url == base + "/ui/repo/demo"
    geo = page.text_content("tr[data-target='geography']")
    assert "complete" in geo and "40 lines" in geo and "80 lines of 80" in geo  # the demo's rollout
    arithmetic = page.text_content("tr[data-target='arithmetic']")
    assert "150 lines" in arithmetic and "not started" in arithmetic
    page.click("tr[data-target='geography'] a")
    page.wait_for_selector(".vlist .row[data-line='0'] .q")
    assert page.url == base + OUT.format("geography")
    assert page.text_content(".row[data-line='0'] .q") == "What is the capital of Australia?"
    assert rows_on_screen(page)[:3] == [0, 1, 2]
    page.click(".row[data-line='1']")
    page.wait_for_selector(".sidebody .question")
    shot = artifact_dir() / "viewer-demo-geography-stim.png"
    page.screenshot(path=str(shot))
    print(f"\nviewer screenshot: {shot}")
    assert shot.stat().st_size > 10_000
    page.go_back()  # history: back to the targets
    page.wait_for_selector("table.targets")
    assert page.url == base + "/ui/repo/demo"
    page.go_forward()
    page.wait_for_selector(".row[data-line='1'].selected")  # the bookmarkable line came back with the URL


def test_scroll_reads_only_the_pages_in_view_and_jumps(page, demo_server, demo_key):
    base = f"http://127.0.0.1:{demo_server.port}"
    sign_in(page, base, demo_key)
    page.goto(base + OUT.format("arithmetic"))
    page.wait_for_selector(".row[data-line='0'] .q")
    assert output_offsets(page) == [0]  # the first page came with the status; nothing else
    before = len(page.requests)
    page.eval_on_selector(".vlist", "el => { el.scrollTop = el.scrollHeight; }")
    page.wait_for_selector(".row[data-line='149'] .q")
    assert set(output_offsets(page, before)) <= {100, 50}  # the pages of lines ~125..149 only
    assert 100 in output_offsets(page, before)
    before = len(page.requests)
    page.keyboard.press("g")
    assert page.evaluate("document.activeElement.id") == "goto"
    page.keyboard.type("60")
    page.keyboard.press("Enter")
    page.wait_for_selector(".row[data-line='60'].selected .q")
    assert "line=60" in page.url
    assert output_offsets(page, before) == [50]
    page.keyboard.press("j")
    page.wait_for_selector(".row[data-line='61'].selected")
    page.keyboard.press("k")
    page.keyboard.press("k")
    page.wait_for_selector(".row[data-line='59'].selected")
    assert page.text_content(".linehead").startswith("Line 59")
    page.reload()  # the URL holds the line
    page.wait_for_selector(".row[data-line='59'].selected .q")


def test_expanding_a_row_shows_teacher_and_student_with_the_shared_prefix_once(page, demo_server, demo_key):
    base = f"http://127.0.0.1:{demo_server.port}"
    sign_in(page, base, demo_key)
    page.goto(base + OUT.format("geography") + "?line=4")
    page.wait_for_selector(".sidebody .sides")
    teacher, student = page.query_selector_all(".sidebody .sides .messages")
    assert "Teacher" in teacher.text_content() and "Student" in student.text_content()
    for side in (teacher, student):
        msgs = side.query_selector_all(".msg")
        assert len(msgs) == 1 and msgs[0].text_content() == "userWhat is the highest mountain in Africa?"
        assert "shared prompt message" in side.text_content()
    prefix = page.query_selector("details.prefix")
    assert prefix.get_attribute("open") is None  # collapsed
    assert not page.is_visible("details.prefix .msg")
    page.click("details.prefix summary")
    assert "geography and arithmetic tutor" in page.text_content("details.prefix")
    assert page.is_visible("details.prefix .msg")
    # The teacher's system prompt is on the page once: in the prefix, not on the line.
    assert page.inner_text("main").count("You are a geography and arithmetic tutor") == 1


def test_search_streams_highlights_and_jumps(page, demo_server, demo_key):
    base = f"http://127.0.0.1:{demo_server.port}"
    sign_in(page, base, demo_key)
    page.goto(base + OUT.format("geography"))
    page.wait_for_selector(".row[data-line='0'] .q")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "search"
    page.keyboard.type("capital of")
    page.keyboard.press("Enter")
    page.wait_for_selector("#search-progress:has-text('done')")
    matches = page.query_selector_all(".matches li")
    lines = [int(m.get_attribute("data-line")) for m in matches]
    assert lines == [0, 6, 12, 16, 20, 24, 28, 32, 36]
    assert {m.text_content().lower() for m in page.query_selector_all(".matches mark")} == {"capital of"}
    assert "q=capital+of" in page.url and "tab=search" in page.url
    page.click(".matches li[data-line='28'] button")
    page.wait_for_selector(".row[data-line='28'].selected")
    assert page.text_content(".sidebody .question") == "What is the capital of New Zealand?"
    # a regex on one field, opened from its URL
    page.goto(base + OUT.format("geography") + "?q=%5EWhich%20river&regex=1&field=question")
    page.wait_for_selector("#search-progress:has-text('done')")
    assert [int(m.get_attribute("data-line")) for m in page.query_selector_all(".matches li")] == [1, 17, 37]


def test_sample_is_seeded(page, demo_server, demo_key):
    base = f"http://127.0.0.1:{demo_server.port}"
    sign_in(page, base, demo_key)
    page.goto(base + OUT.format("arithmetic") + "?tab=sample&seed=7")
    page.wait_for_selector(".samples li[data-line]")
    first = [m.get_attribute("data-line") for m in page.query_selector_all(".samples li")]
    assert len(first) == 20 and len(set(first)) == 20
    page.fill("#seed", "8")
    page.click(".sampleform button")
    page.wait_for_url(re.compile(r"seed=8"))
    page.wait_for_selector(".samples li[data-line]")
    assert [m.get_attribute("data-line") for m in page.query_selector_all(".samples li")] != first
    page.goto(base + OUT.format("arithmetic") + "?tab=sample&seed=7")
    page.wait_for_selector(".samples li[data-line]")
    assert [m.get_attribute("data-line") for m in page.query_selector_all(".samples li")] == first
    page.click(".samples li button")
    page.wait_for_selector(f".row[data-line='{first[0]}'].selected")
    page.click("button[data-tab='stats']")
    page.wait_for_selector("table.stats")
    assert "150" in page.text_content("table.stats") and "from_dataset" in page.text_content(".sidebody")


def test_a_running_job_shows_new_lines_without_a_reload(page, demo_server, demo_key):
    base = f"http://127.0.0.1:{demo_server.port}"
    records = import_rows(demo_server.data_dir, "live", [stim_row(i, f"Live question {i}?") for i in range(5)])
    job_dir = records.paths.job_dir("demo", "demo", "live", "stim")
    job = records.job("demo", "demo", "live", "stim")
    lock = FileLock.acquire(lock_path(job_dir), blocking=True)  # a writer holds it: the job is running
    try:
        records.write_job("demo", "demo", "live", "stim", {**job, "status": "running", "expected_lines": 10,
                                                           "finished_at": None})
        sign_in(page, base, demo_key)
        page.goto(base + "/ui/repo/demo")
        page.wait_for_selector("tr[data-target='live'] .badge:has-text('running')")
        assert "5 lines" in page.text_content("tr[data-target='live']")
        page.evaluate("window.__same_document = true")  # gone if anything reloads the page
        assert page.get_attribute("tr[data-target='live'] progress", "value") == "50"
        with OutputWriter.open(job_dir, lock) as writer:
            writer.append([encode(stim_row(i, f"Live question {i}?")) for i in range(5, 8)])
            page.wait_for_selector("tr[data-target='live']:has-text('8 lines')")  # the targets page moves too
            assert page.get_attribute("tr[data-target='live'] progress", "value") == "80"
            page.click("tr[data-target='live'] a")
            page.wait_for_selector(".row[data-line='7'] .q")
            assert page.text_content(".jobbar .badge") == "running" and rows_on_screen(page) == list(range(8))
            writer.append([encode(stim_row(i, f"Live question {i}?")) for i in range(8, 10)])
            page.wait_for_selector(".row[data-line='9'] .q")
            assert page.text_content(".row[data-line='9'] .q") == "Live question 9?"
            assert page.text_content("#line-count") == "10 lines"
            records.write_job("demo", "demo", "live", "stim", {**job, "status": "complete", "expected_lines": 10})
    finally:
        lock.release()
    page.wait_for_selector(".jobbar .badge:has-text('complete')")
    assert page.evaluate("window.__same_document") is True  # never reloaded
    status = "/v1/repo/demo/targets/live/stim"
    polls = sum(urlsplit(r.url).path == status for r in page.requests)
    page.wait_for_timeout(2500)
    assert sum(urlsplit(r.url).path == status for r in page.requests) == polls  # it stopped polling


def test_xss_in_a_question_renders_as_text(page, demo_server, demo_key):
    base = f"http://127.0.0.1:{demo_server.port}"
    import_rows(demo_server.data_dir, "xss", [stim_row(i, q) for i, q in enumerate(XSS)])
    sign_in(page, base, demo_key)
    page.goto(base + "/ui/repo/demo/target/xss/stim?line=1&q=onerror")
    page.wait_for_selector(".row[data-line='2'] .q")
    for i, q in enumerate(XSS):
        assert page.text_content(f".row[data-line='{i}'] .q") == q
    page.wait_for_selector(".matches li")
    for i in range(3):
        page.click(f".row[data-line='{i}']")
        page.wait_for_selector(f".linehead:has-text('Line {i}')")
        assert page.text_content(".sidebody .question") == XSS[i]
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert page.query_selector_all("main img, main script, main a[href^='javascript']") == []
    assert page.console_errors == [] or all("401" in e for e in page.console_errors)


def test_the_key_is_never_in_a_url_storage_the_page_or_the_log(page, demo_server, demo_key):
    base = f"http://127.0.0.1:{demo_server.port}"
    sign_in(page, base, demo_key)
    page.goto(base + OUT.format("geography") + "?q=Cairo")
    page.wait_for_selector("#search-progress:has-text('done')")
    page.click("button[data-tab='stats']")
    page.wait_for_selector("table.stats")
    secret = demo_key.split("_", 2)[2]  # ssk_<id>_<secret>: the secret itself may hold '_'s
    urls = [r.url for r in page.requests]
    assert urls and not any(secret in u or demo_key in u for u in urls)
    assert page.evaluate("localStorage.length") == 0 and page.evaluate("sessionStorage.length") == 0
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read the session
    assert secret not in page.content()
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["stimserver_session"] and secret not in cookies[0]["value"]
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "/stim/output/stats" not in demo_server.stdout.read_text():
        time.sleep(0.1)
    log = demo_server.stdout.read_text() + demo_server.stderr.read_text()
    assert "/ui/session" in log and secret not in log and demo_key not in log
    signins = [e for e in demo_server.access_log() if e.get("path") == "/ui/session" and e.get("method") == "POST"]
    assert signins and all(e["status"] == 200 for e in signins)


def test_sign_out(page, demo_server, demo_key):
    base = f"http://127.0.0.1:{demo_server.port}"
    sign_in(page, base, demo_key)
    page.goto(base + OUT.format("geography"))
    page.wait_for_selector(".row[data-line='0'] .q")
    page.click("#signout")
    page.wait_for_url(re.compile(r"/ui/signin"))
    assert page.context.cookies() == []
    assert page.evaluate("fetch('/v1/repo').then(r => r.status)") == 401
    page.goto(base + OUT.format("geography"))
    page.wait_for_url(re.compile(r"/ui/signin\?next="))  # back to the sign-in, the view kept for after it


@pytest.mark.parametrize("user", ["demo"])
def test_the_master_key_views_as_a_user(page, demo_server, user):
    base = f"http://127.0.0.1:{demo_server.port}"
    sign_in(page, base, demo_server.master_key, user=user)
    assert page.text_content("#who .me") == f"viewing as {user} (master key)"
    page.goto(base + "/ui/")
    page.wait_for_selector("ul.repos a")
    assert page.text_content("ul.repos") == "demo"


def test_the_demo_rollout_made_by_the_pipeline(page, demo_server, demo_key):
    """The shipped demo's rollout (run by make_demo_data.py through the real rollout routes) in the browser."""
    base = f"http://127.0.0.1:{demo_server.port}"
    sign_in(page, base, demo_key)
    page.goto(base + "/ui/repo/demo")
    page.click("tr[data-target='geography'] td:nth-child(3) a")
    page.wait_for_selector(".vlist .row[data-line='1'] .q")
    assert page.url == base + "/ui/repo/demo/target/geography/rollout"
    assert page.get_attribute(".row[data-line='0']", "class").split()[0] == "group-start"
    assert page.text_content(".row[data-line='0'] .q") == "What is the capital of Australia?"
    assert page.text_content(".row[data-line='1'] .q") == "↳ trajectory 1"
    page.click(".row[data-line='0']")
    page.wait_for_selector(".response .md")
    assert page.text_content(".response .md").strip()
    assert re.search(r"\d+ prompt \+ \d+ completion = \d+", page.text_content(".tokens"))
    page.screenshot(path=str(artifact_dir() / "viewer-demo-geography-rollout.png"))
