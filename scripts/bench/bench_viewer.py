#!/usr/bin/env python3
"""Measure the viewer (/ui/) in a real browser on a 2,000,000-line stim output.

    python scripts/bench/bench_viewer.py                 # 2,000,000 lines (made once, kept in --work)
    python scripts/bench/bench_viewer.py --lines 100000  # a quick look

The output is made by scripts/bench/bench_output.py's generator (stim-shaped lines of ~500
bytes, imported with ``stimserver import``: the same fixture as the page benchmark, shared
through ``--work``). Then ``stimserver serve`` starts, headless Chromium (Debian's
/usr/bin/chromium, driven by Playwright) signs in, and the figures come from the page's
own Performance API marks, set by the viewer once every row in view is on screen
(``vlist.js``: ``viewer:rows`` after a navigation, ``viewer:jump`` after "go to line"):

1. first rows on screen after navigation: the mark's time since the navigation started;
2. "go to line N": from the call to the mark, for lines near the end, the middle, the start;
3. scrolling: pages and rows the list fetched (and aborted) per scroll step, against the rows
   a screen holds.

Prints one table. Machines here are noisy: compare numbers of the same run.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_output import free_port, prepare, stop  # noqa: E402 (a sibling script, not a package)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
VIEW = "/ui/repo/benchrepo/target/benchtarget/stim"
WAIT_MARK = """(name) => new Promise((resolve) => {
    const look = () => { const m = performance.getEntriesByName(name, 'mark');
                         if (m.length) resolve(m[m.length - 1].startTime); else setTimeout(look, 2); };
    look(); })"""
JUMP = """async (line) => { performance.clearMarks('viewer:jump'); const t0 = performance.now();
    window.__viewer.jump(line);
    const at = await new Promise((resolve) => { const look = () => {
        const m = performance.getEntriesByName('viewer:jump', 'mark');
        if (m.length) resolve(m[0].startTime); else setTimeout(look, 2); }; look(); });
    return at - t0; }"""
STATS = "() => ({...window.__viewer.list.stats, rows: window.__viewer.list.viewRows()})"


def start_server(data: Path, port: int, log: Path) -> subprocess.Popen:
    import http.client

    proc = subprocess.Popen([sys.executable, "-m", "stimserver", "serve", "--data", str(data), "--port", str(port)],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/v1/health")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"stimserver not ready; see {log}")


def ms(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ms (min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/stimserver-bench"))
    ap.add_argument("--reps", type=int, default=7, help="navigations and jumps measured")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    _, token = prepare(args.work, args.lines)
    port = free_port()
    proc = start_server(args.work / "data", port, args.work / "viewer-serve.log")
    base = f"http://127.0.0.1:{port}"
    rows: list[tuple[str, str]] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(base + "/ui/signin")
            page.fill("#key", token)
            page.click("form.signin button[type=submit]")
            page.wait_for_selector("#signout")
            firsts = []
            for i in range(args.reps + 1):
                page.goto(base + VIEW)
                at = page.evaluate(WAIT_MARK, "viewer:rows")
                if i:  # the first load also compiles the script: reported apart
                    firsts.append(at)
                else:
                    rows.append(("first rows, first visit (cold script cache)", f"{at:7.1f} ms"))
            rows.append(("first rows on screen after navigation", ms(firsts)))
            page.goto(base + VIEW + f"?line={args.lines - 1000}")
            deep = page.evaluate(WAIT_MARK, "viewer:rows")
            rows.append((f"first rows, opened at ?line={args.lines - 1000:,}", f"{deep:7.1f} ms"))
            end = args.lines - 1000
            times = []
            for _ in range(args.reps):  # a fresh page each time: nothing of the end is cached
                page.goto(base + VIEW)
                page.evaluate(WAIT_MARK, "viewer:rows")
                times.append(page.evaluate(JUMP, end))
            rows.append((f"go to line {end:,} (fresh page)", ms(times)))
            targets = [end, args.lines // 2, 5_000]
            times = [page.evaluate(JUMP, t - 997 * k) for k in range(args.reps) for t in targets]
            rows.append(("go to line: end, middle, start in turn", ms(times)))
            # scrolling: one screen per wheel step, each step settled
            page.evaluate(JUMP, args.lines // 3)
            before = page.evaluate(STATS)
            page.mouse.move(300, 400)
            steps = 20
            for _ in range(steps):
                page.mouse.wheel(0, 600)
                page.wait_for_timeout(120)
            after = page.evaluate(STATS)
            fetched = after["rowsFetched"] - before["rowsFetched"]
            pages = after["pagesFetched"] - before["pagesFetched"]
            rows.append(("rows on one screen", f"{after['rows']}"))
            rows.append((f"scroll, {steps} wheel steps of 600 px, settled",
                         f"{pages} pages = {fetched} rows fetched, {fetched / steps:.1f} rows per step"))
            before = page.evaluate(STATS)
            for _ in range(steps):
                page.mouse.wheel(0, 600)  # a fling: no pause between steps
            page.wait_for_timeout(800)
            after = page.evaluate(STATS)
            rows.append((f"fling, {steps} wheel steps at once",
                         f"{after['pagesFetched'] - before['pagesFetched']} pages fetched, "
                         f"{after['aborted'] - before['aborted']} aborted when scrolled past"))
            browser.close()
    finally:
        stop(proc)
    width = max(len(k) for k, _ in rows)
    print(f"\nviewer on a {args.lines:,}-line stim output (Chromium {CHROMIUM}, 1366×768)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
