"""The rollout view in a real browser: trajectories grouped under their stimulus, Markdown, failures.

Rollout lines are written as a job of kind ``rollout`` through the store (an import);
``rollout_server`` serves them through the real rollout routes.
"""
from __future__ import annotations

import orjson

from stimserver.store.paths import DataPaths
from stimserver.store.records import Records
from tests.conftest import import_jsonl

from .conftest import artifact_dir, sign_in

MASTER = "ui-rollout-master-key-0123456789"
MARKDOWN = ("Here is **the answer**:\n\n- first point\n- second with `code`\n\n"
            "```python\nprint('hi')\n```\n\nSee [the docs](https://example.org/docs) or "
            "[this](javascript:window.__xss=4). <img src=x onerror=\"window.__xss=5\"> <script>window.__xss=6</script>")


def stimulus(i: int, question: str) -> dict:
    return {"unconditioned_stimulus": {"messages": [{"role": "system", "content": "Shared teacher prompt."},
                                                    {"role": "user", "content": question}]},
            "conditioned_stimulus": {"messages": [{"role": "user", "content": question}]}}


def trajectory(i: int, t: int, question: str, content: str | None, error: str | None = None) -> dict:
    row = {"stimulus_id": i, "trajectory_id": t, "question": question, "stimulus": question, **stimulus(i, question),
           "model": "test-model", "temperature": 1.0}
    if content is None:
        row.update(response=None, error=error, tokens=0)
    else:
        row.update(response={"role": "assistant", "content": content, "finish_reason": "stop",
                             "usage": {"prompt_tokens": 12, "completion_tokens": 30 + t, "total_tokens": 42 + t}},
                   tokens=42 + t)
    return row


def write(records: Records, kind: str, rows: list[dict], tmp) -> None:
    src = tmp / f"{kind}.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    import_jsonl(records, "alice", "r1", "t1", src, kind=kind)


def test_trajectories_grouped_markdown_tokens_and_failures(page, rollout_server, tmp_path):
    records = Records(DataPaths(rollout_server.settings.data_dir))
    questions = ["What is 2+2?", "Name a prime.", "<script>window.__xss=7</script>"]
    write(records, "stim", [{"stimulus_id": i, "question": q, **stimulus(i, q)} for i, q in enumerate(questions)],
          tmp_path)
    write(records, "rollout", [
        trajectory(0, 0, questions[0], MARKDOWN), trajectory(0, 1, questions[0], "Four."),
        trajectory(1, 0, questions[1], "7"), trajectory(1, 1, questions[1], None, error="provider timed out"),
        trajectory(2, 0, questions[2], "<b>bold?</b>"), trajectory(2, 1, questions[2], "ok"),
    ], tmp_path)
    base = rollout_server.base_url
    sign_in(page, base, MASTER, user="alice")
    page.goto(base + "/ui/repo/r1")
    page.wait_for_selector("tr[data-target='t1'] td:nth-child(3) .badge")
    assert "6 lines" in page.text_content("tr[data-target='t1'] td:nth-child(3)")
    page.click("tr[data-target='t1'] td:nth-child(3) a")
    page.wait_for_selector(".row[data-line='5'] .q")
    assert page.url.endswith("/ui/repo/r1/target/t1/rollout")
    # grouped: the question on the first trajectory of each stimulus, the others under it
    assert page.get_attribute(".row[data-line='0']", "class").split()[0] == "group-start"
    assert page.get_attribute(".row[data-line='1']", "class").split()[0] == "group-more"
    assert page.text_content(".row[data-line='0'] .q") == "What is 2+2?"
    assert page.text_content(".row[data-line='1'] .q") == "↳ trajectory 1"
    assert page.text_content(".row[data-line='4'] .q") == questions[2]
    assert page.text_content(".row[data-line='0'] .tok") == "42 tok"
    assert page.text_content(".row[data-line='3'] .badge") == "failed"
    # the response as Markdown: emphasis, a list, a code block, a safe link and only that
    page.click(".row[data-line='0']")
    page.wait_for_selector(".response .md")
    md = page.query_selector(".response .md")
    assert md.query_selector("strong").text_content() == "the answer"
    assert [li.text_content() for li in md.query_selector_all("ul li")] == ["first point", "second with code"]
    assert md.query_selector("pre.code code").text_content() == "print('hi')"
    assert md.query_selector("pre.code").get_attribute("data-lang") == "python"
    links = md.query_selector_all("a")
    assert [a.get_attribute("href") for a in links] == ["https://example.org/docs"]
    assert "[this](javascript:window.__xss=4)" in md.text_content()
    assert '<img src=x onerror="window.__xss=5">' in md.text_content() and "<script>" in md.text_content()
    assert "12 prompt + 30 completion = 42" in page.text_content(".tokens")
    page.screenshot(path=str(artifact_dir() / "viewer-rollout.png"))
    # a failed trajectory shows its error
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.wait_for_selector(".failed-traj")
    assert page.text_content(".failed-traj") == "Failed trajectory: provider timed out"
    page.click(".row[data-line='4']")
    page.wait_for_selector(".linehead:has-text('Line 4')")
    assert page.text_content(".response .md") == "<b>bold?</b>"
    # stats of a rollout, with the token histogram
    page.click("button[data-tab='stats']")
    page.wait_for_selector(".histogram .bin")
    assert "failed trajectories" in page.text_content("table.stats")
    assert len(page.query_selector_all(".histogram .bin")) >= 2
    # search within the response field
    page.fill("#search", "four")
    page.select_option("#field", "response.content")
    page.keyboard.press("Enter")
    page.wait_for_selector("#search-progress:has-text('done')")
    assert [m.get_attribute("data-line") for m in page.query_selector_all(".matches li")] == ["1"]
    assert page.get_attribute("a.button:has-text('SFT rows')", "href").endswith("/rollout/export?format=sft")
    page.wait_for_timeout(200)
    assert page.evaluate("window.__xss") is None
    assert page.query_selector_all("main img, main script, main a[href^='javascript']") == []


def test_a_target_without_rollout_says_so(page, rollout_server, tmp_path):
    records = Records(DataPaths(rollout_server.settings.data_dir))
    src = tmp_path / "only-stim.jsonl"
    src.write_bytes(orjson.dumps({"stimulus_id": 0, "question": "Only stim?"}) + b"\n")
    import_jsonl(records, "alice", "r1", "t2", src)
    base = rollout_server.base_url
    sign_in(page, base, MASTER, user="alice")
    page.goto(base + "/ui/repo/r1/target/t2/rollout")
    page.wait_for_selector(".jobbar .badge")
    assert page.text_content(".jobbar .badge") == "not started"
    assert rows_count(page) == 0


def rows_count(page) -> int:
    return len(page.query_selector_all(".vlist .row"))


MARKDOWN_CASES = {
    "nested-spans": ("**bold with *em* and `code`** end", "bold with em and code end"),
    "unclosed-fence": ("```\nno end\n", "no end\n"),  # to the end of the text, as CommonMark
    "unclosed-spans": ("**open *and _more `tick", "**open *and _more `tick"),
    "snake_case": ("use my_var and a__b__c here", "use my_var and a__b__c here"),
    "html-stays-text": ("<b onclick=x>hi</b>", "<b onclick=x>hi</b>"),
    "data-url": ("[x](data:text/html,<script>alert(1)</script>)", "[x](data:text/html,<script>alert(1)</script>)"),
    "deep-list": ("\n".join("  " * i + "- item" for i in range(60)), "item" * 60),
    "long-line": ("[" * 3000 + "](" * 3000 + "`" + "<" * 3000, "[" * 3000 + "](" * 3000 + "`" + "<" * 3000),
}


def test_markdown_renders_text_only_and_ends_on_any_input(page, rollout_server):
    """Each case renders (a hang would time the test out) to exactly its text, with no link but http(s)."""
    page.goto(rollout_server.base_url + "/ui/signin")
    got = page.evaluate("""async (cases) => {
        const { renderMarkdown } = await import('/ui/static/markdown.js');
        const out = {};
        for (const [name, src] of Object.entries(cases)) {
            const el = renderMarkdown(src);
            out[name] = [el.textContent, [...el.querySelectorAll('a')].map(a => a.getAttribute('href')),
                         el.querySelectorAll('script, img, iframe, [onclick], [onerror]').length];
        }
        return out;
    }""", {name: src for name, (src, _) in MARKDOWN_CASES.items()})
    for name, (_, text) in MARKDOWN_CASES.items():
        assert got[name] == [text, [], 0], name


def test_a_rollout_whose_trajectories_all_repeat_shows_its_warning(page, rollout_server, tmp_path):
    """The server decoded greedily at temperature 1: the status's warning is shown above the trajectories."""
    from stimserver.store import jobrecords
    from stimserver.store.answers import write_duplicates

    records = Records(DataPaths(rollout_server.settings.data_dir))
    questions = ["Say hello.", "Describe a cat.", "Name a river."]
    write(records, "stim", [{"stimulus_id": i, "question": q, **stimulus(i, q)} for i, q in enumerate(questions)],
          tmp_path)
    write(records, "rollout", [trajectory(i, t, q, f"The same answer to {q}") for i, q in enumerate(questions)
                               for t in range(2)], tmp_path)
    job_dir = records.paths.job_dir("alice", "r1", "t1", "rollout")
    record = jobrecords.read_record(job_dir)
    record["config"] = {"model_name": "test-model", "num_traj_per_stimulus": 2, "temperature": 1.0, "max_tokens": 32,
                        "max_concurrency": 4, "extra_kwargs": {}, "stim_job_id": None}
    jobrecords.write_record(job_dir, record)
    write_duplicates(job_dir, 3, [0, 1, 2])
    sign_in(page, rollout_server.base_url, MASTER, user="alice")
    page.goto(rollout_server.base_url + "/ui/repo/r1/target/t1/rollout")
    page.wait_for_selector("#job-warning")
    warning = page.text_content("#job-warning")
    assert "all 3 stimuli compared got identical trajectories at temperature 1.0" in warning
    assert page.get_attribute("#job-warning", "role") == "alert"
    page.screenshot(path=str(artifact_dir() / "viewer-rollout-duplicates.png"))
    # the stats tab counts them from the lines themselves
    page.click("text=stats")
    page.wait_for_selector("table.stats")
    assert "3 of 3 compared" in page.text_content("table.stats")


def test_the_job_bar_shows_tokens_and_dollars_or_why_not(page, rollout_server, tmp_path):
    """The status's usage in the job bar: requests, tokens (cached among them) and the cost, or why it is unknown."""
    from stimserver.store.answers import write_usage

    records = Records(DataPaths(rollout_server.settings.data_dir))
    write(records, "stim", [{"stimulus_id": 0, "question": "Q?", **stimulus(0, "Q?")}], tmp_path)
    write(records, "rollout", [trajectory(0, t, "Q?", f"answer {t}") for t in range(2)], tmp_path)
    job_dir = records.paths.job_dir("alice", "r1", "t1", "rollout")
    write_usage(job_dir, {"requests": 2, "input_tokens": 3000, "output_tokens": 90, "retries": 0, "rate_limited": 0,
                          "cached_input_tokens": 1200, "cache_write_tokens": 0, "cost_usd": 0.012345,
                          "price_table": "2026-12-06", "cost_unknown": None})
    sign_in(page, rollout_server.base_url, MASTER, user="alice")
    page.goto(rollout_server.base_url + "/ui/repo/r1/target/t1/rollout")
    page.wait_for_selector("#job-usage")
    assert page.text_content("#job-usage") == " · 2 requests, 3,000 (1,200 cached) in / 90 out tokens · $0.0123"
    assert page.get_attribute("#job-cost", "title") == "price table 2026-12-06"
    page.screenshot(path=str(artifact_dir() / "viewer-rollout-cost.png"))
    # another target whose model has no price (a complete job's status is cached: a new job, not a new file)
    for kind, rows in (("stim", [{"stimulus_id": 0, "question": "Q?", **stimulus(0, "Q?")}]),
                       ("rollout", [trajectory(0, t, "Q?", f"answer {t}") for t in range(2)])):
        src = tmp_path / f"t2-{kind}.jsonl"
        src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        import_jsonl(records, "alice", "r1", "t2", src, kind=kind)
    write_usage(records.paths.job_dir("alice", "r1", "t2", "rollout"), {
        "requests": 2, "input_tokens": 3000, "output_tokens": 90, "cost_usd": 0.0, "price_table": "2026-12-06",
        "cost_unknown": "no price for model 'test-model'"})
    page.goto(rollout_server.base_url + "/ui/repo/r1/target/t2/rollout")
    page.wait_for_selector("#job-cost.muted")
    assert page.text_content("#job-cost") == " · cost unknown"
    assert "no price for model 'test-model'" in page.get_attribute("#job-cost", "title")
