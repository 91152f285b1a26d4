"""API keys across hosts: made on one host, usable on every host at once; revoked on one,
refused on every other within ``store.keys.RECHECK_SECONDS`` (the documented bound)."""
from __future__ import annotations

import sys
import time

from stimserver.store.keys import RECHECK_SECONDS

from . import cluster


def stimserver_on(n: int, *args: str) -> str:
    return cluster.host(n).sh(sys.executable, "-m", "stimserver", *args, "--data", str(cluster.DATA)).stdout


def test_a_key_revoked_on_one_host_is_refused_on_all_within_the_bound(mh):
    token = stimserver_on(1, "keys", "create", "--user", "carol").strip().splitlines()[-1]
    for n in (1, 2, 3):  # created on host 1: works everywhere at once (an unknown id is looked up)
        assert mh.web(n).call("GET", "/v1/repo", key=token, user=None)[0] == 200
    key_id = next(line.split()[0] for line in stimserver_on(2, "keys", "list").splitlines()
                  if line.split()[1:2] == ["carol"])
    stimserver_on(1, "keys", "revoke", key_id)
    revoked_at = time.monotonic()
    time.sleep(RECHECK_SECONDS + 0.1)  # the bound, plus a margin for the request to leave
    statuses = {n: mh.web(n).call("GET", "/v1/repo", key=token, user=None)[0] for n in (1, 2, 3)}
    assert statuses == {1: 401, 2: 401, 3: 401}
    print(f"revoked key refused on all hosts {time.monotonic() - revoked_at:.2f} s after the revoke returned")
