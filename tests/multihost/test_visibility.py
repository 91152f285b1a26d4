"""A change made through one host is seen by the very next read on another: a record (a
prompt), a job re-run, a deleted output and a deleted target. No cache may rely on local
change notification; each re-checks the file's identity, which a rename on any host changes."""
from __future__ import annotations

from .conftest import hardcoded

REPO = "vis"


def teacher_of(line):
    return line["unconditioned_stimulus"]["messages"][0]["content"]


def test_a_rerun_on_one_host_is_seen_by_the_next_page_on_another(mh):
    a, b, c = mh.web(1), mh.web(2), mh.web(3)
    mh.make_target(REPO, "rerun", [hardcoded(40, "r")])
    a.ok("POST", mh.stim(REPO, "rerun"))
    first_job = mh.wait_status(a, REPO, "rerun", ("complete",))["job_id"]
    first = mh.all_lines(b, REPO, "rerun")  # b and c now hold the complete output open (opencache)
    assert mh.all_lines(c, REPO, "rerun") == first and teacher_of(first[0]) == "You are the teacher."

    a.ok("PUT", f"/v1/repo/{REPO}/prompts/teacher", {"messages": [{"role": "system", "content": "Be brief."}]})
    assert b.ok("GET", f"/v1/repo/{REPO}/prompts/teacher")["messages"][0]["content"] == "Be brief."

    a.ok("DELETE", mh.stim(REPO, "rerun") + "/output")
    for api in (b, c):
        status, page = api.call("GET", mh.stim(REPO, "rerun") + "/output")
        assert status == 404 or page["output"] == [], (status, page)

    a.ok("POST", mh.stim(REPO, "rerun"))
    done = mh.wait_status(a, REPO, "rerun", ("complete",))
    for api in (b, c):  # the next read after host 1 said complete
        page = api.ok("GET", mh.stim(REPO, "rerun") + "/output?limit=1000")
        assert page["job_id"] == done["job_id"] != first_job
        assert [teacher_of(line) for line in page["output"]] == ["Be brief."] * 40
        assert [line["question"] for line in page["output"]] == [f"r {i}?" for i in range(40)]


def test_a_target_deleted_on_one_host_is_gone_from_the_next_read_on_another(mh):
    a, b = mh.web(3), mh.web(1)
    mh.make_target(REPO, "gone", [hardcoded(25, "g")])
    a.ok("POST", mh.stim(REPO, "gone"))
    mh.wait_status(a, REPO, "gone", ("complete",))
    assert len(b.ok("GET", mh.stim(REPO, "gone") + "/output?limit=100")["output"]) == 25  # cached on b
    a.ok("DELETE", f"/v1/repo/{REPO}/targets/gone")
    assert b.call("GET", mh.stim(REPO, "gone") + "/output?limit=100")[0] == 404
    assert b.call("GET", f"/v1/repo/{REPO}/targets/gone")[0] == 404
    assert "gone" not in b.ok("GET", f"/v1/repo/{REPO}/targets")["targets"]
