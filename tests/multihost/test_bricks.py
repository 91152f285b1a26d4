"""One brick of the replica-3 volume dies: pages are still served and jobs still commit (two
bricks are a quorum). It comes back: self-heal brings it level, byte for byte."""
from __future__ import annotations

from . import cluster
from .conftest import hardcoded

REPO = "bricks"


def brick_file(brick: int, relative: str) -> bytes:
    return (cluster.STATE / "bricks" / f"b{brick}" / relative).read_bytes()


def test_pages_and_commits_go_on_without_a_brick_and_it_heals(mh):
    mh.make_target(REPO, "before", [hardcoded(120, "b")])
    mh.nginx.ok("POST", mh.stim(REPO, "before"))
    mh.wait_status(mh.nginx, REPO, "before", ("complete",))
    expected = mh.all_lines(mh.web(1), REPO, "before")
    cluster.kill_brick(1)
    try:
        for n in (1, 2, 3):
            assert mh.all_lines(mh.web(n), REPO, "before") == expected
        mh.make_target(REPO, "during", [hardcoded(300, "d")])
        mh.web(2).ok("POST", mh.stim(REPO, "during"))
        assert mh.wait_status(mh.web(3), REPO, "during", ("complete", "failed"))["status"] == "complete"
        assert [line["question"] for line in mh.all_lines(mh.nginx, REPO, "during")] == [f"d {i}?" for i in range(300)]
    finally:
        cluster.restart_bricks()
    took = cluster.heal()
    output = "data/users/alice/repos/bricks/targets/during/stim/output.jsonl"
    assert brick_file(1, output) == brick_file(2, output) == brick_file(3, output)
    assert brick_file(1, output).count(b"\n") == 300
    print(f"brick 1 healed {took:.1f} s after it was started again")
