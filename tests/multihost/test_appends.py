"""No host serves a torn or uncommitted line while another host's worker appends.

An LLM job (the fake provider answers slowly) grows its output on whichever host's worker
claimed it, while readers on all three web hosts and through nginx page through it: every
page parses, every line sits at its own number, a host's committed count never goes back,
and every line served while the job ran is byte-identical to the finished output."""
from __future__ import annotations

import threading
import time

import orjson

from .conftest import oneshot

REPO, TARGET = "grow", "llm"


def test_pages_read_on_every_host_while_another_appends_are_whole_and_committed(mh):
    mh.provider.fake.latency = 0.25
    mh.make_target(REPO, TARGET, [oneshot(600)], max_concurrency=2)
    path = mh.stim(REPO, TARGET) + "/output"
    readers = {f"host{n}": mh.web(n) for n in (1, 2, 3)} | {"nginx": mh.nginx}
    seen: dict[str, dict[int, bytes]] = {name: {} for name in readers}
    while_running = dict.fromkeys(readers, 0)  # pages read while the job was growing
    problems: list[str] = []
    done = threading.Event()

    def read(name: str) -> None:
        api, last_total, offset = readers[name], 0, 0
        for _ in range(20_000):
            status, page = api.call("GET", f"{path}?offset={offset}&limit=37")
            if status == 404:  # not submitted yet
                if done.is_set():
                    return
                time.sleep(0.05)
                continue
            if status != 200:
                problems.append(f"{name}: {status} {page}")
                return
            total = page["lines"] or 0
            if total < last_total:
                problems.append(f"{name}: committed count went back from {last_total} to {total}")
            last_total = max(last_total, total)
            while_running[name] += page["status"] == "running" and 0 < total < 600
            for i, line in enumerate(page["output"]):
                if line["stimulus_id"] != offset + i:
                    problems.append(f"{name}: line {offset + i} holds stimulus {line['stimulus_id']}")
                seen[name][offset + i] = orjson.dumps(line)
            if offset + len(page["output"]) > total:
                problems.append(f"{name}: served {offset + len(page['output'])} lines of {total} committed")
            offset += len(page["output"])
            if not page["has_more"]:
                if done.is_set():
                    return
                if page["status"] in ("complete", "failed"):
                    offset = 0  # the end: read it all again while the test looks at the status
                time.sleep(0.02)

    threads = [threading.Thread(target=read, args=(name,)) for name in readers]
    for t in threads:
        t.start()
    try:
        mh.nginx.ok("POST", mh.stim(REPO, TARGET))
        final = mh.wait_status(mh.nginx, REPO, TARGET, ("complete", "failed"), timeout=120)
    finally:
        done.set()
        for t in threads:
            t.join(120)
    assert final["status"] == "complete", final
    assert problems == []
    assert all(while_running.values()), while_running  # else this test proved nothing
    print(f"pages read while another host appended: {while_running}")
    lines = [orjson.dumps(line) for line in mh.all_lines(mh.web(2), REPO, TARGET)]
    assert len(lines) == 600 and len({orjson.loads(x)["question"] for x in lines}) == 600
    for name, served in seen.items():
        assert served, f"{name} read nothing"
        assert all(lines[n] == raw for n, raw in served.items()), name
