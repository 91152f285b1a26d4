"""The rollout view in a real browser: trajectories grouped under their stimulus, Markdown, failures.

Rollout lines are written as a job of kind ``rollout`` through the store (an import);
``rollout_server`` serves them through the real rollout routes.
"""
from __future__ import annotations

import re

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


# -- batch mode, the budget, the estimate (docs/viewer.md, "Cost") --------------------------------------------------

BATCH_CONFIG = {"model_name": "gpt-4o-mini", "num_traj_per_stimulus": 2, "max_tokens": 100, "temperature": 1.0,
                "batch": True, "max_cost_usd": 5.0}
COST_QUESTIONS = ["Name a city in France.", "Name a river in Peru.", "Name a lake in Kenya."]


def cost_target(records: Records, target: str, tmp, committed: int, **config) -> None:
    """Target ``target`` of alice/r1 with a complete stim job of COST_QUESTIONS (its config: BATCH_CONFIG and
    ``config``) and a rollout of its first ``committed`` trajectories (2 a stimulus)."""
    from stimserver.schemas.targets import DEFAULT_TARGET_CONFIG

    default = {**DEFAULT_TARGET_CONFIG, **BATCH_CONFIG, **config}
    stims = [{"stimulus_id": i, "question": q, **stimulus(i, q)} for i, q in enumerate(COST_QUESTIONS)]
    for kind, rows in (("stim", stims), ("rollout", [cost_line(n) for n in range(committed)])):
        if kind == "rollout" and not committed:
            continue
        src = tmp / f"{target}-{kind}.jsonl"
        src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        import_jsonl(records, "alice", "r1", target, src, kind=kind, default_config=default)


def cost_line(n: int) -> dict:
    """Rollout line ``n`` of a cost target: trajectory n % 2 of stimulus n // 2."""
    return trajectory(n // 2, n % 2, COST_QUESTIONS[n // 2], f"answer {n}")


def rollout_config(records: Records, target: str, **config) -> dict:
    """The config a rollout job's record shows (jobs/rollout.py's ``plan``), of the target's stim job."""
    stim = records.job("alice", "r1", target, "stim")
    return {**BATCH_CONFIG, "max_concurrency": 10, "extra_kwargs": {}, "stim_job_id": stim["job_id"], **config}


def estimate_reads(page) -> int:
    return sum(r.url.split("?")[0].endswith("/rollout/estimate") for r in page.requests)


def test_a_batch_rollout_shows_its_batches_live_its_budget_and_the_estimate(page, rollout_server, tmp_path):
    """A running batch-mode rollout (batches.json as jobs/batches.py writes it): the batch line and the budget beside
    the cost, refreshed by the status polls without a reload; the estimate asked once, with the run's projection."""
    from stimserver.store.answers import write_usage
    from stimserver.store.atomic import write_json_atomic
    from stimserver.store.locks import FileLock
    from stimserver.store.output import OutputWriter, encode, lock_path

    records = Records(DataPaths(rollout_server.settings.data_dir))
    cost_target(records, "batched", tmp_path, committed=2)
    job_dir = records.paths.job_dir("alice", "r1", "batched", "rollout")
    job = records.job("alice", "r1", "batched", "rollout")

    def batches(done_b: int, collected: bool = False) -> None:
        write_json_atomic(job_dir / "batches.json", {"batches": [
            {"marker": "m-a", "id": "batch_aaa", "requests": [0, 1], "submitted_at": 1, "done": 2, "failed": 0,
             "collected": True},
            {"marker": "m-b", "id": "batch_bbb", "requests": [2, 3], "submitted_at": 2, "done": done_b, "failed": 0,
             "collected": collected},
            {"marker": "m-c", "id": "batch_ccc", "requests": [4, 5], "submitted_at": 3, "done": 1 if collected else 0,
             "failed": 0, "collected": collected}], "attempts": {}})

    lock = FileLock.acquire(lock_path(job_dir), blocking=True)  # a writer holds it: the job is running
    try:
        batches(1)
        write_usage(job_dir, {"requests": 2, "input_tokens": 120, "output_tokens": 80, "cost_usd": 0.0421,
                              "price_table": "2026-12-06", "cost_unknown": None})
        records.write_job("alice", "r1", "batched", "rollout", {**job, "status": "running", "expected_lines": 6,
                                                                "finished_at": None,
                                                                "config": rollout_config(records, "batched")})
        sign_in(page, rollout_server.base_url, MASTER, user="alice")
        page.goto(rollout_server.base_url + "/ui/repo/r1/target/batched/rollout")
        page.wait_for_selector("#batch-note")
        page.evaluate("window.__same_document = true")  # gone if anything reloads the page
        assert page.text_content("#batch-note") == ("batch mode · 2 of 3 batches running · 1 of 4 requests answered at "
                                                    "the provider · results are committed a batch at a time")
        assert page.get_attribute("#batch-note", "title") == "provider batch ids: batch_bbb, batch_ccc"
        assert page.get_attribute(".jobbar progress", "value") == "50"  # 2 lines + 1 answered of 6
        assert page.text_content("#job-usage").endswith(" · $0.0421 of $5.00 budget")
        assert page.query_selector("#budget-hint") is None
        page.screenshot(path=str(artifact_dir() / "viewer-rollout-batch.png"))
        # the provider answers more: the next status poll shows it (no new line needed)
        batches(2)
        page.wait_for_selector("#batch-answered:has-text('2 of 4 requests')")
        assert page.get_attribute(".jobbar progress", "value") == "66.67"
        # the estimate: closed, nothing asked; opened, asked once, whatever the polls do
        assert estimate_reads(page) == 0
        page.click("#estimate summary")
        page.wait_for_selector("table.estimate-table")
        page.wait_for_url(re.compile(r"/rollout\?estimate=1$"))
        current = page.query_selector("table.estimate-table tr.current")
        assert current.get_attribute("data-mode") == "cached_batch" and "this target" in current.text_content()
        assert [r.get_attribute("data-mode") for r in page.query_selector_all("table.estimate-table tbody tr")] == [
            "standard", "cached", "batch", "cached_batch"]
        assert all(td.text_content().startswith("$") for td in page.query_selector_all("table.estimate-table td"))
        assert "an approximation" in page.text_content("#estimate-counted")
        assert page.text_content("#estimate-budget").startswith("budget $5.00 · the worst case, $0.")
        assert "fits" in page.text_content("#estimate-budget")
        assert "this rollout (running): 2 of 6 requests answered, 2 lines committed · spent $0.0421" in \
            page.text_content("#estimate-run")
        assert page.text_content("#estimate-projected") == " · projected $0.1263"  # 0.0421 + 4 × 0.02105
        page.screenshot(path=str(artifact_dir() / "viewer-rollout-estimate.png"))
        batches(2)
        page.wait_for_timeout(1500)  # a poll or more later
        assert estimate_reads(page) == 1
        # the last batches end: their lines are committed, the job completes, the line says just "batch mode"
        with OutputWriter.open(job_dir, lock) as writer:
            writer.append([encode(cost_line(n)) for n in range(2, 6)])
        batches(2, collected=True)
        write_usage(job_dir, {"requests": 6, "input_tokens": 360, "output_tokens": 240, "cost_usd": 0.1263,
                              "price_table": "2026-12-06", "cost_unknown": None})
        records.write_job("alice", "r1", "batched", "rollout", {
            **job, "status": "complete", "expected_lines": 6, "config": rollout_config(records, "batched")})
    finally:
        lock.release()
    page.wait_for_selector(".jobbar .badge:has-text('complete')")
    assert page.text_content("#batch-note") == "batch mode"
    assert page.text_content("#job-usage").endswith(" · $0.1263 of $5.00 budget")
    assert page.text_content("#line-count") == "6 lines"
    assert page.evaluate("window.__same_document") is True
    assert estimate_reads(page) == 1
    page.click("#estimate-again")  # asked again only on request
    page.wait_for_selector("#estimate-run:has-text('(complete)')")
    assert estimate_reads(page) == 2 and page.query_selector("#estimate-projected") is None
    assert all("401" in e for e in page.console_errors), page.console_errors  # only the page's before sign-in


def test_a_rollout_stopped_by_its_budget_says_how_to_resume(page, rollout_server, tmp_path):
    """The job failed before its cost could pass max_cost_usd (the runner's own message): the budget in red, a hint."""
    from types import SimpleNamespace

    from stimserver.jobs.budget import Budget
    from stimserver.jobs.execute import describe
    from stimserver.store.answers import write_usage
    from stimserver.store.jobrecords import JobRef

    records = Records(DataPaths(rollout_server.settings.data_dir))
    cost_target(records, "budget", tmp_path, committed=4, batch=False, max_cost_usd=0.05)
    job_dir = records.paths.job_dir("alice", "r1", "budget", "rollout")
    job = records.job("alice", "r1", "budget", "rollout")
    # the runner's own message: Budget.exhausted's (it reads only the limit and the spent), ended by execute.describe
    stopped = Budget.exhausted(SimpleNamespace(limit=0.05, spent=0.0489), 0.0031)  # type: ignore[arg-type]
    error = describe(stopped, JobRef("alice", "r1", "budget", "rollout"), job)
    write_usage(job_dir, {"requests": 4, "input_tokens": 240, "output_tokens": 160, "cost_usd": 0.0489,
                          "price_table": "2026-12-06", "cost_unknown": None})
    records.write_job("alice", "r1", "budget", "rollout", {
        **job, "status": "failed", "expected_lines": 6, "error": error,
        "config": rollout_config(records, "budget", batch=False, max_cost_usd=0.05)})
    sign_in(page, rollout_server.base_url, MASTER, user="alice")
    page.goto(rollout_server.base_url + "/ui/repo/r1/target/budget/rollout")
    page.wait_for_selector("#budget-hint")
    assert page.text_content(".jobbar .badge") == "failed"
    assert page.text_content("#job-usage").endswith(" · $0.0489 of $0.05 budget")
    assert "over" in page.get_attribute("#job-budget", "class").split()
    assert page.text_content("#job-error") == error  # the runner's message, in the hint's box (not twice)
    assert error.startswith("stopped before the cost could pass max_cost_usd $0.05: $0.0489 spent")
    assert page.query_selector(".jobbar span.error") is None
    hint = page.text_content("#budget-hint")
    assert "Raise max_cost_usd on the target and run the rollout again" in hint and "4 committed lines are kept" in hint
    assert page.get_attribute("#budget-hint", "role") == "alert"
    assert page.query_selector("#batch-note") is None  # not a batch job
    page.screenshot(path=str(artifact_dir() / "viewer-rollout-budget.png"))
    assert all("401" in e for e in page.console_errors), page.console_errors  # only the page's before sign-in


def test_the_estimate_before_a_rollout_and_while_its_stim_runs(page, rollout_server, tmp_path):
    """No rollout yet: the estimate from the complete stim output (an OpenAI-style model: approximated counts), over
    a small budget; a target whose stim job still runs gets the endpoint's 400 message instead of figures."""
    records = Records(DataPaths(rollout_server.settings.data_dir))
    cost_target(records, "planned", tmp_path, committed=0, batch=False, max_cost_usd=0.0001)
    sign_in(page, rollout_server.base_url, MASTER, user="alice")
    page.goto(rollout_server.base_url + "/ui/repo/r1/target/planned/rollout?estimate=1")  # a link opens it
    page.wait_for_selector("table.estimate-table")
    assert page.text_content(".jobbar .badge") == "not started"
    assert page.get_attribute("table.estimate-table tr.current", "data-mode") == "cached"
    assert page.text_content("#estimate-counted").startswith("tokens counted by an approximation (UTF-8 bytes / 4)")
    head = page.text_content(".esthead")
    assert head.startswith("6 requests (3 stimuli × 2) · gpt-4o-mini") and "(100 a request, max_tokens)" in head
    assert page.text_content("#estimate-budget").startswith("budget $0.0001 · the worst case, $0.")
    assert "is over it" in page.text_content("#estimate-budget")
    assert "error" in page.get_attribute("#estimate-budget", "class").split()
    assert page.query_selector("#estimate-run") is None
    for row in page.query_selector_all("table.estimate-table tbody tr"):
        low, high = (float(x.strip().lstrip("$")) for x in row.query_selector(".range").text_content().split("–"))
        assert 0 < low <= float(row.query_selector(".expected").text_content().lstrip("$")) <= high
    page.screenshot(path=str(artifact_dir() / "viewer-rollout-estimate-planned.png"))
    # e toggles it; closed, it leaves the URL
    page.keyboard.press("e")
    page.wait_for_url(re.compile(r"/target/planned/rollout$"))
    assert page.query_selector("#estimate[open]") is None
    # a target whose stim job is not complete: the 400's message, and nothing else
    cost_target(records, "waiting", tmp_path, committed=0)
    stim = records.job("alice", "r1", "waiting", "stim")
    records.write_job("alice", "r1", "waiting", "stim", {**stim, "status": "running", "finished_at": None})
    page.goto(rollout_server.base_url + "/ui/repo/r1/target/waiting/rollout")
    page.wait_for_selector(".jobbar .badge")
    page.keyboard.press("e")
    page.wait_for_selector("#estimate-problem")
    problem = page.text_content("#estimate-problem")
    assert problem.startswith("No estimate yet: Stim job must complete before running rollout")
    assert "the stim job of target 'waiting' is running" in problem
    assert "estimate-na" in page.get_attribute("#estimate-problem", "class")
    assert page.query_selector("table.estimate-table") is None
    page.screenshot(path=str(artifact_dir() / "viewer-rollout-estimate-400.png"))
    assert all("400" in e or "401" in e for e in page.console_errors), page.console_errors  # the 400, before sign-in
