#!/usr/bin/env python3
"""Measure the viewer's bake page (/ui/repo/R/bake/B) in a real browser on a bake of 10,000 steps.

    python scripts/bench/bench_viewer_bake.py               # 10,000 metrics rows
    python scripts/bench/bench_viewer_bake.py --rows 50000  # a longer bake

A bake is written as files the way the trainer writes them (store.bakefiles: bake.json, the
job record, trainer-plan.json, metrics.jsonl with one train row per step and an eval row every
100 steps, a checkpoint every 1,000 steps, eval-before.json and eval.json with 16 answered
questions), twice: one complete, one running (its job lock held by this script, so the
server sees a live trainer). ``stimserver serve`` starts with STIMSERVER_RUN_JOBS=0 (nothing
trains), headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) signs in, and
the figures come from the page's own Performance API (``bake.js``):

1. first paint: ``bake:chart`` is marked once the status and every metrics row are in and both
   charts are drawn, ``bake:painted`` once the next frame is painted; both are times since the
   navigation started (HTML, scripts, the two requests, the JSON, the drawing);
2. redraw on one new row: on the running bake, a row is appended to metrics.jsonl; the page
   polls the status each second, fetches the rows, adds those past the ones it drew and redraws;
   the redraw is timed in the page with performance.now() around it (``timings.redraws``);
3. for scale: the redraw of a row outside the axes (the whole chart again) and of a scale
   change (log), timed the same way.

Until ``api.sessions.READ_ROUTES`` lets the viewer's cookie read the bake routes, the server
runs in a thread of this script with them added (said in the output), not as ``serve``.

Prints one table. Machines here are noisy: compare numbers of the same run.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from bench_output import free_port, stop  # noqa: E402 (a sibling script, not a package)
from bench_viewer import ARGS, CHROMIUM, WAIT_MARK, start_server  # noqa: E402

USER, REPO = "bench", "benchrepo"
QUESTIONS = ["Write a short sentence about rain.", "What do you eat for breakfast?", "Describe your favourite animal.",
             "Name a colour.", "What is your favourite season?", "How do you get to work?"]


def train_row(i: int, total: int) -> dict:
    loss = 0.9 * math.exp(-4 * i / total) + 0.04 + 0.03 * math.sin(i * 1.7) ** 2
    return {"type": "train", "iter": i, "epoch": round(i / total, 5), "loss": round(loss, 6),
            "lr": 2e-4 * (1 - (i - 1) / total), "step_time": 0.41, "iter_time": 0.41, "tokens": 180 + i % 7,
            "seqlen": 64}


def eval_row(i: int, total: int) -> dict:
    kl = 0.85 * math.exp(-3.5 * i / total) + 0.08
    return {"type": "eval", "iter": i, "epoch": round(i / total, 5), "eval_loss": round(kl * 1.05, 6),
            "heldout_kl": round(kl, 6)}


def prepare(work: Path, rows: int) -> str:
    """A fresh data directory with a target and two bakes; returns an API key."""
    import orjson

    from stimserver.schemas.targets import DEFAULT_BASE_MODEL, DEFAULT_TARGET_CONFIG
    from stimserver.store import bakefiles, importer
    from stimserver.store.paths import BAKE_KIND, DataPaths
    from stimserver.store.records import Records

    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    data.mkdir(parents=True)
    records = Records(DataPaths(data))
    for kind in ("stim", "rollout"):
        side = {"messages": [{"role": "user", "content": "?"}]}
        lines = [{"stimulus_id": i, "question": q, "unconditioned_stimulus": side, "conditioned_stimulus": side,
                  **({"trajectory_id": 0, "response": {"role": "assistant", "content": "Oui.", "finish_reason": "stop"},
                      "tokens": 3} if kind == "rollout" else {})} for i, q in enumerate(QUESTIONS)]
        src = work / f"{kind}.jsonl"
        src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
        importer.import_jsonl(records, USER, REPO, "french", src, kind=kind, default_config=DEFAULT_TARGET_CONFIG,
                              base_model=DEFAULT_BASE_MODEL)
    config = {"type": "single_baker", "datasets": [{"target": "french", "weight": 1.0}], "epochs": 1,
              "micro_batch_size": 2, "gradient_accumulation_steps": 1, "seed": 42,
              "model": {"type": "bake", "baked_adapter_config": {"r": 8, "lora_alpha": 16}},
              "data": {"beta": 0.0, "temperature": 1.0, "max_length": 512, "train_eval_split": [0.9, 0.1]},
              "optimizer": {"type": "adamw", "learning_rate": 2e-4}, "scheduler": {"type": "linear"},
              "checkpoint": [{"save_every_n_steps": 1000, "save_end_of_training": True}],
              "train_log_iter_interval": 1, "eval_interval": 100}
    samples = [{"target": "french", "stimulus_id": i, "question": QUESTIONS[i % len(QUESTIONS)],
                "teacher": {"answer": "Il pleut doucement sur la ville, et les rues brillent.", "language": "fr"},
                "base": {"answer": "The rain falls softly on the city, and the streets shine.", "language": "en"},
                "baked": {"answer": "La pluie tombe doucement sur la ville.", "language": "fr"},
                "kl_before": 0.9, "kl_after": 0.1} for i in range(16)]
    for bake, status, job_id in (("done", "complete", 1), ("live", "running", 2)):
        paths = DataPaths(data)
        job_dir = paths.job_dir(USER, REPO, bake, BAKE_KIND)
        job_dir.mkdir(parents=True)
        paths.bake_file(USER, REPO, bake).write_bytes(orjson.dumps({
            "bake_name": bake, "template": "default", "overrides": {"datasets": config["datasets"]}, "config": config,
            "created_at": "2026-12-07T10:00:00Z"}))
        (job_dir / "job.json").write_bytes(orjson.dumps({
            "job_id": job_id, "kind": "bake", "status": status, "config": config, "error": None, "attempt": 1,
            "interruptions": 0, "stalled_deaths": 0, "progress_line": 0, "created_at": "2026-12-07T10:00:00Z",
            "started_at": "2026-12-07T10:00:00Z", "finished_at": None, "worker": None, "orphaned_at": None,
            "spec": {"user": USER, "repo": REPO, "bake": bake, "config": config, "parent": None, "processes": 1,
                     "datasets": [{"target": "french", "weight": 1.0, "trajectories": 6, "skipped_failed": 0,
                                   "used": 6}]}}))
        total = rows if status == "complete" else rows + 1000
        bakefiles.write_json(job_dir, bakefiles.PLAN, {"total_steps": total, "steps_per_epoch": total})
        out = [eval_row(0, total)]
        for i in range(1, rows + 1):
            out.append(train_row(i, total))
            if i % 100 == 0:
                out.append(eval_row(i, total))
        bakefiles.append_rows(job_dir, out)
        for step in range(1000, rows + 1, 1000):
            work_dir = job_dir / bakefiles.WORK / str(step)
            work_dir.mkdir(parents=True)
            (work_dir / bakefiles.CHECKPOINT_INFO).write_bytes(orjson.dumps({"step": step}))
            bakefiles.publish_checkpoint(job_dir, work_dir, step)
        before = {"heldout": {"examples": 32, "stimuli": 16, "kl": 0.81}, "samples": [
            {k: v for k, v in s.items() if k not in ("baked", "kl_after")} for s in samples]}
        bakefiles.write_json(job_dir, bakefiles.EVAL_BEFORE, before)
        if status == "complete":
            bakefiles.write_json(job_dir, bakefiles.EVAL, {
                "checkpoint": rows, "heldout": {"examples": 32, "stimuli": 16, "kl_before": 0.81, "kl_after": 0.12,
                                                "kl_drop": 0.85},
                "behaviour": {"check": "language", "teacher_language": "fr", "questions": 16, "teacher_rate": 0.94,
                              "base_rate": 0.0, "baked_rate": 0.81}, "samples": samples})
    done = subprocess.run([sys.executable, "-m", "stimserver", "keys", "create", "--user", USER, "--data", str(data)],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


BAKE_READS = re.compile(r"/v1/repo/[^/]+/bakes(?:/[^/]+(?:/metrics|/evaluation|/download)?)?"
                        r"|/v1/repo/[^/]+/recipe/[^/]+/dependency-graph|/v1/repo/[^/]+/tree")


class _Either:
    def __init__(self, *patterns: re.Pattern[str]) -> None:
        self.patterns = patterns

    def fullmatch(self, path: str) -> re.Match[str] | None:
        return next((m for p in self.patterns if (m := p.fullmatch(path))), None)


def start_in_thread(data: Path) -> tuple[int, Callable[[], None]]:
    """The app in a thread of this process, its session reads widened to the bake routes."""
    import asyncio
    import threading

    from aiohttp import web

    from stimserver.api import sessions
    from stimserver.config import Settings
    from stimserver.web.app import create_app

    sessions.READ_ROUTES = _Either(sessions.READ_ROUTES, BAKE_READS)  # type: ignore[assignment]
    settings = Settings.build(data_dir=data, access_log=False, run_jobs=False,
                              master_key="bench-bake-master-key-" + os.urandom(8).hex())
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["port"] = runner.addresses[0][1]
        box["stop"] = stop_event = asyncio.Event()
        box["loop"] = asyncio.get_running_loop()
        ready.set()
        await stop_event.wait()
        await runner.cleanup()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    if not ready.wait(60):
        raise SystemExit("the in-process server did not start")

    def halt() -> None:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)

    return box["port"], halt


def ms(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} ms (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


NEW_ROWS = """async ([count, timeout]) => {
    const t0 = performance.now();
    while (window.__bake.rows() < count) {
        if (performance.now() - t0 > timeout) return null;
        await new Promise((r) => setTimeout(r, 5));
    }
    const r = window.__bake.timings.redraws; return r[r.length - 1]; }"""
TIMED = """([what, k]) => { const b = window.__bake; const t0 = performance.now();
    if (what === 'log') b.lossChart.setLog(!b.lossChart.log);
    else { b.lossChart.add('loss', b.lossChart.byKey.get('loss').xs.at(-1) + 1, 10 ** (k + 1)); b.lossChart.flush(); }
    return performance.now() - t0; }"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000, help="training steps logged (one metrics row each)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/stimserver-bench-bake"))
    ap.add_argument("--reps", type=int, default=9, help="navigations and appended rows measured")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from stimserver.store import bakefiles
    from stimserver.store.locks import FileLock
    from stimserver.store.output import lock_path
    from stimserver.store.paths import BAKE_KIND, DataPaths

    token = prepare(args.work, args.rows)
    data = args.work / "data"
    live_dir = DataPaths(data).job_dir(USER, REPO, "live", BAKE_KIND)
    lock = FileLock.acquire(lock_path(live_dir), blocking=True)  # a "trainer": the running bake is live
    assert lock is not None
    from stimserver.api.sessions import READ_ROUTES

    if READ_ROUTES.fullmatch(f"/v1/repo/{REPO}/bakes/done/metrics"):
        port = free_port()
        os.environ["STIMSERVER_RUN_JOBS"] = "0"  # the server (a child) trains nothing
        proc = start_server(data, port, args.work / "serve.log")
        server = "stimserver serve"

        def halt() -> None:
            stop(proc)
    else:
        port, halt = start_in_thread(data)
        server = "the app in a thread of this script (the session cookie does not read bakes in this checkout yet)"
    base = f"http://127.0.0.1:{port}"
    table: list[tuple[str, str]] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(base + "/ui/signin")
            page.fill("#key", token)
            page.click("form.signin button[type=submit]")
            page.wait_for_selector("#signout")
            view = f"{base}/ui/repo/{REPO}/bake/done"
            charts, painted = [], []
            for i in range(args.reps + 1):
                page.goto(view)
                drawn = page.evaluate(WAIT_MARK, "bake:chart")
                shown = page.evaluate(WAIT_MARK, "bake:painted")
                if i == 0:
                    table.append(("first paint, first visit (cold script cache)", f"{shown:7.1f} ms"))
                else:
                    charts.append(drawn)
                    painted.append(shown)
            points = page.evaluate("window.__bake.lossChart.points() + window.__bake.lrChart.points()")
            first_draw = page.evaluate("window.__bake.timings.firstDrawMs")
            size = page.evaluate("performance.getEntriesByType('resource').filter(e => e.name.endsWith('/metrics'))"
                                 ".map(e => [e.encodedBodySize, e.duration])[0]")
            table.append((f"charts drawn ({args.rows:,} rows, {points:,} points) after navigation", ms(charts)))
            table.append(("first paint (the frame after) after navigation", ms(painted)))
            table.append(("  of which: drawing both charts", f"{first_draw:7.2f} ms (last navigation)"))
            table.append(("  of which: GET …/metrics", f"{size[1]:7.1f} ms, {size[0] / 1e6:.2f} MB"))
            # the running bake: one new row at a time, as the trainer appends them
            page.goto(f"{base}/ui/repo/{REPO}/bake/live")
            page.evaluate(WAIT_MARK, "bake:painted")
            seen = page.evaluate("window.__bake.rows()")
            total = args.rows + 1000
            redraws, latencies = [], []
            for k in range(args.reps):
                step = args.rows + 1 + k
                t0 = time.perf_counter()
                bakefiles.append_rows(live_dir, [train_row(step, total)])
                seen += 1
                got = page.evaluate(NEW_ROWS, [seen, 10_000])
                latencies.append((time.perf_counter() - t0) * 1000)
                if got is None:
                    raise SystemExit("the page did not pick up the new row within 10 s")
                redraws.append(got)
            full = page.evaluate("window.__bake.lossChart.stats.full")
            table.append(("redraw on one new row (running bake, in the page)", ms(redraws)))
            table.append(("  row appended → drawn (the page polls each second)", ms(latencies)))
            table.append(("  full redraws of the loss chart meanwhile", f"{full - 1} (appended segments only)"))
            outside = [page.evaluate(TIMED, ["outside", k]) for k in range(5)]  # each above the last axes
            table.append(("a row outside the axes (the whole chart again)", ms(outside)))
            logs = [page.evaluate(TIMED, ["log", k]) for k in range(4)]
            table.append(("log scale on/off (the whole chart again)", ms(logs)))
            browser.close()
    finally:
        halt()
        lock.release()
    width = max(len(k) for k, _ in table)
    print(f"\nbake page, {args.rows:,} metrics rows (Chromium {CHROMIUM}, 1366×768; server: {server})")
    for name, value in table:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
