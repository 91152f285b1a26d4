"""The bake views in a real browser (issue 27): the repo view's bakes, a bake's page with its charts,
before/after answers, checkpoints, datasets, lineage and config — complete, running and failed.

Bakes are written as files the way the trainer writes them (``bake_fixtures``); the app runs in a
thread of this process on them (``run_jobs`` off: nothing trains here) and serves them through the
bake API (handlers/bakes.py, recipes.py, downloads.py) and the viewer's evaluation read.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import orjson
import pytest

from stimserver.store import bakefiles
from stimserver.store.locks import FileLock
from stimserver.store.output import lock_path
from stimserver.store.paths import BAKE_KIND, DataPaths
from stimserver.store.records import Records
from tests.conftest import import_jsonl

from . import bake_fixtures as bf
from .conftest import artifact_dir, sign_in

MASTER = "ui-bake-master-key-0123456789abcdef"
SHOTS = Path("/tmp/shots")
TOTAL = 120


def shot(page, name: str) -> Path:
    """A screenshot in the UI artifacts folder and in /tmp/shots (looked at while building the view)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    # the view scrolls inside <main>: a viewport as tall as its content shows all of it
    tall = page.evaluate("(() => { const el = document.querySelector('.bakepage, .repopage');"
                         " return el ? el.scrollHeight + el.getBoundingClientRect().top + 16 : 0; })()")
    size = page.viewport_size
    if tall > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": min(int(tall), 4000)})
        page.wait_for_timeout(100)
    page.screenshot(path=str(path))
    page.screenshot(path=str(artifact_dir() / name))
    page.set_viewport_size(size)
    return path


def _targets(data_dir: Path, tmp: Path) -> None:
    records = Records(DataPaths(data_dir))
    for t in ("french", "spanish"):
        for kind in ("stim", "rollout"):
            rows = [{"stimulus_id": i, "question": f"Q{i}?", "unconditioned_stimulus": {"messages": [
                {"role": "system", "content": "Answer in French only."}, {"role": "user", "content": f"Q{i}?"}]},
                "conditioned_stimulus": {"messages": [{"role": "user", "content": f"Q{i}?"}]}}
                for i in range(4)]
            if kind == "rollout":
                rows = [{**r, "trajectory_id": 0, "response": {"role": "assistant", "content": "Oui.",
                                                               "finish_reason": "stop"}, "tokens": 3} for r in rows]
            src = tmp / f"{t}-{kind}.jsonl"
            src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
            import_jsonl(records, bf.USER, bf.REPO, t, src, kind=kind)
        path = records.paths.target(bf.USER, bf.REPO, t) / "target.json"
        record = orjson.loads(path.read_bytes())
        record["config"]["teacher_prompt"] = t
        path.write_bytes(orjson.dumps(record))
        records.create_prompt(bf.USER, bf.REPO, {"prompt_name": t, "messages": [
            {"role": "system", "content": f"Answer in {t.title()} only."}], "tools": None,
            "created_at": "2026-12-07T10:00:00Z"})


@pytest.fixture(scope="module")
def bake_server(tmp_path_factory):
    from stimserver.config import Settings
    from stimserver.web.app import create_app
    from tests.aibread_server import ServerThread

    root = tmp_path_factory.mktemp("ui-bakes")
    settings = Settings.build(data_dir=root / "data", master_key=MASTER, access_log=False, run_jobs=False)
    _targets(settings.data_dir, root)
    data = settings.data_dir
    bf.write_bake(data, "b1", status="complete", config=bf.bake_config(["french", "spanish"]),
                  rows=bf.rows_with_evals(TOTAL, TOTAL), total_steps=TOTAL, checkpoints=(40, 80, 120),
                  evaluate="both", job_id=91)
    bf.write_bake(data, "b2", status="complete", config=bf.bake_config(["french"], parent="alice/r1/b1/120"),
                  rows=bf.rows_with_evals(20, 20), total_steps=20, checkpoints=(20,), evaluate="both", job_id=92)
    bf.write_bake(data, "broken", status="failed", config=bf.bake_config(["french"]), rows=[], total_steps=None,
                  error="model: no model 'qwen-9000' in the models directory (looked in /srv/models, the HF cache)",
                  job_id=93)
    bf.write_bake(data, "diverged", status="failed", config=bf.bake_config(["spanish"]),
                  rows=bf.rows_with_evals(30, TOTAL), total_steps=TOTAL, checkpoints=(10, 20),
                  error="the disk is full: checkpoint 30 of the bake was not written", job_id=94)
    server = ServerThread(settings, create_app(settings)).start()
    server.settings = settings
    try:
        yield server
    finally:
        server.stop()


def job_dir(server, bake: str) -> Path:
    return DataPaths(server.settings.data_dir).job_dir(bf.USER, bf.REPO, bake, BAKE_KIND)


def open_bake(page, server, bake: str, query: str = "") -> None:
    sign_in(page, server.base_url, MASTER, user=bf.USER)
    page.goto(f"{server.base_url}/ui/repo/{bf.REPO}/bake/{bake}{query}")
    page.wait_for_selector("#bake-status .badge")


def console_errors(page) -> list[str]:
    """Console errors but a 401 resource load: the page's ``GET /ui/session`` before signing in and
    Chromium's own ``/favicon.ico`` (an API path: 401 without a key). A bake read refused the cookie
    would not pass unnoticed: the page would go to the sign-in form and the test's selectors fail."""
    return [e for e in page.console_errors if "status of 401 (Unauthorized)" not in e]


def wait_until(page, expression: str, seconds: float = 10) -> None:
    """``page.wait_for_function`` evaluates a string, which the viewer's CSP forbids: poll instead."""
    deadline = time.monotonic() + seconds
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        page.wait_for_timeout(50)


def checkpoint_rows(page) -> list[str]:
    return page.eval_on_selector_all("#checkpoints tr", "rs => rs.map(r => r.dataset.checkpoint)")


def series_points(page, chart: str, key: str) -> int:
    return page.evaluate(f"window.__bake.{chart}.byKey.get('{key}').xs.length")


# -- the repo view ------------------------------------------------------------------------------------
def test_the_repo_view_lists_bakes_beside_the_targets(page, bake_server):
    sign_in(page, bake_server.base_url, MASTER, user=bf.USER)
    page.goto(bake_server.base_url + "/ui/repo/r1")
    page.wait_for_selector("#bakes tr[data-bake='b1'] .badge")
    b1 = page.text_content("#bakes tr[data-bake='b1']")
    assert "complete" in b1 and f"step {TOTAL} of {TOTAL}" in b1
    assert page.text_content("tr[data-bake='b1'] td.newest") == "120"
    assert page.text_content("tr[data-bake='b1'] td.heldout") == "0.81 → 0.12"
    assert re.fullmatch(r"0\.\d+", page.text_content("tr[data-bake='b1'] td.loss"))
    assert "failed" in page.text_content("tr[data-bake='broken']")
    assert "qwen-9000" in page.text_content("tr[data-bake='broken'] .error")
    # beside each target: the bakes that train on it
    french = page.text_content("tr[data-target='french'] td.usedby")
    assert "b1" in french and "b2" in french and "broken" in french and "diverged" not in french
    shot(page, "bake-repo-view.png")
    page.click("#bakes tr[data-bake='b1'] td:first-child a")
    page.wait_for_selector("#loss-chart .series")
    assert page.url.endswith("/ui/repo/r1/bake/b1")
    assert console_errors(page) == [], page.console_errors


# -- a complete bake ------------------------------------------------------------------------------------
def test_a_complete_bake_page(page, bake_server):
    open_bake(page, bake_server, "b1")
    page.wait_for_selector("#samples article.sample")
    page.wait_for_selector("#lineage svg .node")
    assert page.text_content("#bake-status .badge") == "complete"
    assert f"step {TOTAL} of {TOTAL}" in page.text_content("#bake-steps")
    assert page.text_content("#bake-newest strong") == "120"
    # the charts: every train row, the eval rows, the learning rate, checkpoints marked on the axis
    assert series_points(page, "lossChart", "loss") == TOTAL
    assert series_points(page, "lossChart", "eval_loss") == TOTAL // 10 + 1
    assert series_points(page, "lossChart", "heldout_kl") == TOTAL // 10 + 1
    assert series_points(page, "lrChart", "lr") == TOTAL
    assert len(page.query_selector_all("#loss-chart .s-eval_loss circle.dot")) == TOTAL // 10 + 1
    assert len(page.query_selector_all("#loss-chart .marker")) == 3
    d = page.get_attribute("#loss-chart .s-loss path.line", "d")
    assert d.startswith("M") and d.count("L") == TOTAL - 1
    assert page.query_selector("#lr-chart .s-lr path.line") is not None
    # evaluation summary
    assert "0.81 → 0.12" in page.text_content("#heldout-kl") and "−85 %" in page.text_content("#heldout-kl")
    assert "teacher 92 % · base 0 % · baked 75 %" in page.text_content("#behaviour")
    # before and after: teacher / base / baked for each question, the language check, per-question KL
    cards = page.query_selector_all("#samples article.sample")
    assert len(cards) == len(bf.SAMPLES)
    first = cards[0]
    assert first.query_selector(".question").text_content() == bf.SAMPLES[0][0]
    cols = first.query_selector_all(".three .answer")
    assert [c.query_selector("h3").text_content().split(" · ")[0] for c in cols] == ["Teacher", "Base", "Baked"]
    assert [c.query_selector(".md").text_content() for c in cols] == list(bf.SAMPLES[0][1:4])
    assert [c.query_selector(".lang").text_content() for c in cols] == ["fr ✓", "en ✗", "fr ✓"]
    assert "KL 0.92 → 0.11" in first.query_selector(".qhead").text_content()
    third = cards[2].query_selector_all(".lang")
    assert third[2].text_content() == "en ✗" and "lang-off" in third[2].get_attribute("class")
    # model text stays text
    xss = cards[3]
    assert xss.query_selector(".question").text_content().startswith("<script>")
    assert xss.query_selector(".col-teacher strong").text_content() == "Rouge"
    assert page.evaluate("window.__xss") is None
    assert page.query_selector_all("main img, main script") == []
    # checkpoints (newest first) and datasets linking to their rollouts
    assert checkpoint_rows(page) == ["120", "80", "40"]
    assert "alice/r1/b1/120" in page.text_content("#checkpoints tr[data-checkpoint='120']")
    links = page.eval_on_selector_all("#datasets li > a:first-child", "as => as.map(a => a.getAttribute('href'))")
    assert links == ["/ui/repo/r1/target/french/rollout", "/ui/repo/r1/target/spanish/rollout"]
    assert "7 trajectories" in page.text_content("#datasets li[data-target='french']")
    # the config, collapsed until asked
    assert page.get_attribute("#config", "open") is None
    assert '"learning_rate": 0.0002' in page.text_content("#config pre")
    # lineage: prompts → targets → b1 → b2
    nodes = page.eval_on_selector_all("#lineage .node", "ns => ns.map(n => n.dataset.node)")
    assert set(nodes) == {"prompt:french", "prompt:spanish", "target:french", "target:spanish", "bake:b1", "bake:b2"}
    assert "current" in page.get_attribute("#lineage .node[data-node='bake:b1']", "class")
    edges = set(page.eval_on_selector_all("#lineage path.edge", "es => es.map(e => e.dataset.from + '>' + e.dataset.to)"
                                          ))
    assert {"prompt:french>target:french", "target:french>bake:b1", "target:spanish>bake:b1",
            "bake:b1>bake:b2"} <= edges
    xs = {n: page.eval_on_selector(f"#lineage .node[data-node='{n}'] rect", "r => +r.getAttribute('x')")
          for n in ("prompt:french", "target:french", "bake:b1", "bake:b2")}
    assert xs["prompt:french"] < xs["target:french"] < xs["bake:b1"] < xs["bake:b2"]
    shot(page, "bake-complete.png")
    # the download button asks for a signed link, then the browser follows it
    with page.expect_download() as got:
        page.click("#checkpoints tr[data-checkpoint='80'] button.download")
    asked = [r.url for r in page.requests if "/bakes/b1/download" in r.url]
    assert asked and asked[-1].endswith("/v1/repo/r1/bakes/b1/download?checkpoint=80")
    assert got.value.url == page.evaluate("window.__bakeDownload")
    # a lineage node is a link: the child bake's page
    page.click("#lineage a.nodelink:has(.node[data-node='bake:b2'])")
    page.wait_for_url(re.compile(r"/ui/repo/r1/bake/b2$"))
    page.wait_for_selector("#lineage .node.current[data-node='bake:b2']")
    assert page.text_content("#bake-status .badge") == "complete"
    page.go_back()
    page.wait_for_selector("#lineage .node.current[data-node='bake:b1']")
    assert console_errors(page) == [], page.console_errors


# -- a running bake -------------------------------------------------------------------------------------
def test_a_running_bake_grows_its_chart_without_a_reload(page, bake_server):
    data = bake_server.settings.data_dir
    rows = bf.rows_with_evals(30, TOTAL)
    folder = bf.write_bake(data, "live", status="running", config=bf.bake_config(["french"]), rows=rows,
                           total_steps=TOTAL, checkpoints=(10, 20), evaluate="before", job_id=95)
    lock = FileLock.acquire(lock_path(folder), blocking=True)  # a trainer holds it: the bake is running
    try:
        open_bake(page, bake_server, "live")
        page.wait_for_selector("#loss-chart .s-loss path.line")
        assert page.text_content("#bake-status .badge") == "running"
        assert series_points(page, "lossChart", "loss") == 30
        page.wait_for_selector("#samples article.sample")
        # before training: teacher and base answers, the baked column waits
        assert page.text_content("#samples article.sample .col-baked p.muted") == "after training"
        assert "0.81 before training" in page.text_content("#heldout-kl")
        full = page.evaluate("window.__bake.lossChart.stats.full")
        paths_before = len(page.query_selector_all("#loss-chart .s-loss path.line"))
        shot(page, "bake-running-before.png")
        bakefiles.append_rows(folder, bf.train_rows(31, 31, TOTAL))  # one new row
        wait_until(page, "window.__bake.lossChart.byKey.get('loss').xs.length === 31")
        page.wait_for_selector("#bake-steps:has-text('step 31 of')")
        # drawn by appending a segment, not by redrawing the chart
        assert page.evaluate("window.__bake.lossChart.stats.full") == full
        assert len(page.query_selector_all("#loss-chart .s-loss path.line")) == paths_before + 1
        # more rows, an eval row and a checkpoint
        bakefiles.append_rows(folder, bf.train_rows(32, 40, TOTAL) + [bf.eval_row(40, TOTAL)])
        bf.publish(folder, 40, bf.train_rows(40, 40, TOTAL))
        wait_until(page, "window.__bake.lossChart.byKey.get('eval_loss').xs.length === 5")
        page.wait_for_selector("#checkpoints tr[data-checkpoint='40']")
        assert series_points(page, "lossChart", "loss") == 40 and series_points(page, "lrChart", "lr") == 40
        assert page.text_content("#bake-newest strong") == "40"
        assert page.evaluate("Math.max(...window.__bake.timings.redraws)") < 50  # (timed in the bench, not here)
        shot(page, "bake-running-after.png")
        # the bake ends: polling stops, the evaluation comes in
        bakefiles.append_rows(folder, bf.train_rows(41, TOTAL, TOTAL) + [bf.eval_row(TOTAL, TOTAL)])
        bf.publish(folder, TOTAL, bf.train_rows(TOTAL, TOTAL, TOTAL))
        before, after = bf.eval_files(TOTAL)
        bakefiles.write_json(folder, bakefiles.EVAL, after)
        record = orjson.loads((folder / "job.json").read_bytes())
        (folder / "job.json").write_bytes(orjson.dumps({**record, "status": "complete"}))
    finally:
        lock.release()
    page.wait_for_selector("#bake-status .badge:has-text('complete')")
    page.wait_for_selector("#samples article.sample .col-baked .md")
    assert series_points(page, "lossChart", "loss") == TOTAL
    assert "0.81 → 0.12" in page.text_content("#heldout-kl")
    n = len(page.requests)
    time.sleep(2.5)
    assert [r.url for r in page.requests[n:] if "/bakes/live" in r.url] == []  # no polling once it ended
    assert console_errors(page) == [], page.console_errors


# -- failed bakes -----------------------------------------------------------------------------------------
def test_a_failed_bake_shows_its_error_not_a_blank_chart(page, bake_server):
    open_bake(page, bake_server, "broken")
    page.wait_for_selector("#bake-error")
    assert page.is_visible("#bake-error")
    assert "The bake failed: model: no model 'qwen-9000'" in page.text_content("#bake-error")
    assert page.get_attribute("#bake-error", "role") == "alert"
    assert page.is_visible("#chart-note")
    assert "No training step was logged before the bake failed" in page.text_content("#chart-note")
    assert not page.is_visible("#loss-chart")
    page.wait_for_selector("#samples p.muted:has-text('stopped before its evaluation')")
    assert page.text_content("#checkpoints p") == "No checkpoint was published."
    shot(page, "bake-failed-early.png")
    # failed after some steps: the error above the steps it did train
    page.goto(f"{bake_server.base_url}/ui/repo/r1/bake/diverged")
    page.wait_for_selector("#loss-chart .s-loss path.line")
    assert "the disk is full" in page.text_content("#bake-error")
    assert series_points(page, "lossChart", "loss") == 30
    assert page.is_hidden("#chart-note")
    assert checkpoint_rows(page) == ["20", "10"]
    shot(page, "bake-failed-late.png")
    assert console_errors(page) == [], page.console_errors


# -- a checkpoint evaluated on request ----------------------------------------------------------------------
def test_a_checkpoint_is_evaluated_on_request_and_shown(page, bake_server):
    """Pick a checkpoint without an evaluation, ask for it, see its answers once the evaluator stored them.

    Nothing evaluates here (``run_jobs`` off): the test stores the result as the evaluator does, once the
    page's request is there."""
    folder = bf.write_bake(bake_server.settings.data_dir, "steps", status="complete", config=bf.bake_config(["french"]),
                           rows=bf.rows_with_evals(TOTAL, TOTAL), total_steps=TOTAL, checkpoints=(40, 80, 120),
                           evaluate="both", job_id=96)
    open_bake(page, bake_server, "steps")
    page.wait_for_selector("#samples article.sample .col-baked .md")
    options = page.eval_on_selector_all("#eval-checkpoint option", "os => os.map(o => [o.value, o.textContent])")
    assert options == [["120", "step 120 · end of training"], ["80", "step 80"], ["40", "step 40"]]
    assert page.input_value("#eval-checkpoint") == "120"
    assert "step 120" in page.text_content("#samples article.sample .col-baked h3")
    # a checkpoint without an evaluation: the baked column waits, a button asks for it
    page.select_option("#eval-checkpoint", "80")
    page.wait_for_selector("#evaluate-checkpoint")
    assert page.text_content("#evaluate-checkpoint") == "Evaluate checkpoint 80"
    assert "checkpoint=80" in page.url
    assert page.text_content("#samples article.sample .col-baked p.muted") == "not evaluated"
    assert page.text_content("#samples article.sample .col-teacher .md") == bf.SAMPLES[0][1]  # from eval-before.json
    shot(page, "bake-checkpoint-ask.png")
    page.click("#evaluate-checkpoint")
    request = bakefiles.evaluation_file(folder, 80, "request.json")
    deadline = time.monotonic() + 10
    while not request.exists():
        assert time.monotonic() < deadline, "the page's request never reached the bake's folder"
        page.wait_for_timeout(50)
    posts = [r for r in page.requests if r.method == "POST" and "/checkpoints/80/evaluation" in r.url]
    assert [r.url for r in posts] == [f"{bake_server.base_url}/ui/repo/r1/bakes/steps/checkpoints/80/evaluation"]
    page.wait_for_selector("#eval-state .busy")
    assert "Evaluating checkpoint 80… (pending)" in page.text_content("#eval-state")
    assert "no job runner" in page.text_content("#eval-state")  # this server runs none: it says why it waits
    wait_until(page, "document.querySelector('#eval-checkpoint option[value=\"80\"]').textContent"
                     " === 'step 80 · evaluating…'")
    shot(page, "bake-checkpoint-evaluating.png")
    # the evaluator stores its result: the page, polling, shows it without a reload
    _, after = bf.eval_files(80)
    for i, sample in enumerate(after["samples"]):
        sample["baked"] = {"answer": f"Réponse à l'étape 80, question {i + 1}.", "language": "fr"}
    after["heldout"] = {**after["heldout"], "kl_after": 0.34, "kl_drop": 0.58}
    bakefiles.store_evaluation(folder, 80, after)
    bakefiles.end_evaluation_request(folder, 80)
    page.wait_for_selector("#samples article.sample .col-baked .md:has-text('étape 80')")
    assert page.is_hidden("#eval-state")
    baked = page.eval_on_selector_all("#samples .col-baked .md", "ms => ms.map(m => m.textContent)")
    assert baked == [f"Réponse à l'étape 80, question {i + 1}." for i in range(len(bf.SAMPLES))]
    assert "step 80" in page.text_content("#samples article.sample .col-baked h3")
    assert "baked model at checkpoint 80" in page.text_content("#samples-intro")
    assert "0.81 → 0.34" in page.text_content("#samples-intro")
    assert page.text_content("#eval-checkpoint option[value='80']") == "step 80 · evaluated"
    assert "0.81 → 0.12" in page.text_content("#heldout-kl")  # the verdict stays the bake's own
    shot(page, "bake-checkpoint-evaluated.png")
    # the URL holds the choice: a reload shows checkpoint 80's answers at once
    page.reload()
    page.wait_for_selector("#samples article.sample .col-baked .md:has-text('étape 80')")
    assert page.input_value("#eval-checkpoint") == "80"
    # back to the end of training: the default, with no checkpoint in the URL
    page.select_option("#eval-checkpoint", "120")
    page.wait_for_selector(f"#samples article.sample .col-baked .md:has-text('{bf.SAMPLES[0][3]}')")
    assert "checkpoint=" not in page.url
    assert console_errors(page) == [], page.console_errors


# -- keyboard, deep links, sign-in ------------------------------------------------------------------------
def test_keyboard_and_deep_links(page, bake_server):
    open_bake(page, bake_server, "b1", "?sample=2")
    page.wait_for_selector("article.sample.selected[data-sample='2']")
    page.keyboard.press("j")
    page.wait_for_selector("article.sample.selected[data-sample='3']")
    assert "sample=3" in page.url
    page.keyboard.press("k")
    page.keyboard.press("k")
    page.wait_for_selector("article.sample.selected[data-sample='1']")
    page.keyboard.press("l")  # log scale
    wait_until(page, "window.__bake.lossChart.log === true")
    assert page.is_checked("#log-scale") and "log=1" in page.url
    page.keyboard.press("c")  # the config opens
    page.wait_for_selector("#config[open]")
    wait_until(page, "location.search.includes('config=1')")  # <details> fires "toggle" a task later
    # the chart's cursor: focus it, arrow keys move it, the readout says where
    page.focus("#loss-chart")
    page.keyboard.press("End")
    assert page.text_content("#loss-chart .readout").startswith(f"step {TOTAL} · train loss")
    page.keyboard.press("ArrowLeft")
    assert page.text_content("#loss-chart .readout").startswith(f"step {TOTAL - 1} · ")
    assert page.text_content("#lr-chart .readout").startswith(f"step {TOTAL - 1} · learning rate")  # shared
    page.keyboard.press("Home")
    assert "eval loss" in page.text_content("#loss-chart .readout")
    shot(page, "bake-keyboard-log.png")
    # the URL holds the view: reload
    page.reload()
    page.wait_for_selector("article.sample.selected[data-sample='1']")
    page.wait_for_selector("#config[open]")
    assert page.evaluate("window.__bake.lossChart.log") is True
    # lineage nodes take the keyboard too: Tab to a target, Enter opens its rollout
    page.focus("#lineage a.nodelink:has(.node[data-node='target:french'])")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/ui/repo/r1/target/french/rollout$"))
    assert console_errors(page) == [], page.console_errors


def test_a_bake_link_asks_for_sign_in_and_comes_back(page, bake_server):
    page.goto(f"{bake_server.base_url}/ui/repo/r1/bake/b1?sample=1")
    page.wait_for_url(re.compile(r"/ui/signin\?next="))
    page.fill("#key", MASTER)
    page.fill("#view-as", bf.USER)
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("article.sample.selected[data-sample='1']")
    assert page.url.endswith("/ui/repo/r1/bake/b1?sample=1")


def test_the_page_carries_the_viewer_headers_and_no_inline_code(page, bake_server):
    response = page.goto(f"{bake_server.base_url}/ui/repo/r1/bake/b1")
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    for name in ("bake.js", "chart.js", "graph.js"):
        r = page.request.get(f"{bake_server.base_url}/ui/static/{name}")
        assert r.status == 200 and r.headers["content-type"].startswith("text/javascript")
        assert "innerHTML" not in r.text() and "eval(" not in r.text()
        assert r.headers["content-security-policy"] == csp


def test_a_bake_that_does_not_exist(page, bake_server):
    sign_in(page, bake_server.base_url, MASTER, user=bf.USER)
    page.goto(f"{bake_server.base_url}/ui/repo/r1/bake/nope")
    page.wait_for_selector("main p.error")
    assert "nope" in page.text_content("main p.error")


# -- the evaluation route -----------------------------------------------------------------------------------
def test_the_evaluation_route(bake_server):
    import httpx

    base = bake_server.base_url
    auth = {"Authorization": f"Bearer {MASTER}", "X-User-Id": bf.USER}
    r = httpx.get(f"{base}/v1/repo/r1/bakes/b1/evaluation", headers=auth)
    assert r.status_code == 200
    body = r.json()
    assert body["bake_name"] == "b1" and body["after"]["checkpoint"] == 120
    assert body["before"]["heldout"]["kl"] == 0.81 and len(body["after"]["samples"]) == len(bf.SAMPLES)
    r = httpx.get(f"{base}/v1/repo/r1/bakes/broken/evaluation", headers=auth)
    assert r.json() == {"bake_name": "broken", "before": None, "after": None, "evaluations": {}}
    r = httpx.get(f"{base}/v1/repo/r1/bakes/nope/evaluation", headers=auth)
    assert r.status_code == 404 and r.json()["message"] == "bake 'nope' not found in repo 'r1'"
    assert httpx.get(f"{base}/v1/repo/r1/bakes/b1/evaluation").status_code == 401
    assert httpx.get(f"{base}/v1/repo/r1/bakes/..%2Fx/evaluation", headers=auth).status_code in (404, 422)


def test_the_session_cookie_reads_the_bake_routes():
    """The viewer reads the bake API with its cookie: api/sessions.py READ_ROUTES must list these reads."""
    from stimserver.api.sessions import READ_ROUTES

    missing = [p for p in bf.BAKE_READS if not READ_ROUTES.fullmatch(p)]
    assert not missing, f"READ_ROUTES does not cover {missing}"


def test_a_long_series_is_thinned_without_losing_its_extremes(page, bake_server):
    """100,000 points on a ~1,300 px chart: each pixel column keeps its first, lowest, highest and last point."""
    sign_in(page, bake_server.base_url, MASTER, user=bf.USER)
    got = page.evaluate("""async () => {
        const { LineChart } = await import('/ui/static/chart.js');
        const c = new LineChart({ id: 't', title: 't', series: [{ key: 'loss', label: 'loss' }] });
        document.querySelector('main').append(c.el);
        let lo = Infinity, hi = -Infinity;
        for (let i = 1; i <= 100000; i++) {
            const y = 1 + Math.sin(i / 50) + (i === 54321 ? 5 : 0) - (i === 77777 ? 3 : 0);
            lo = Math.min(lo, y); hi = Math.max(hi, y);
            c.add('loss', i, y);
        }
        const t0 = performance.now(); c.flush(); const ms = performance.now() - t0;
        const d = c.el.querySelector('.s-loss path.line').getAttribute('d');
        const ys = d.split(/[ML]/).filter(Boolean).map((p) => +p.split(' ')[1]);
        return { points: ys.length, width: c.dom.w, top: Math.min(...ys), bottom: Math.max(...ys),
                 pyHi: c.py(hi), pyLo: c.py(lo), ms };
    }""")
    assert got["points"] <= 4 * (got["width"] + 2)
    assert abs(got["top"] - got["pyHi"]) < 0.11 and abs(got["bottom"] - got["pyLo"]) < 0.11  # the spikes stay
    print(f"\n100,000 points drawn as {got['points']:,} in {got['ms']:.1f} ms")
