"""The official aibread client reads stim status and pages against a real stimserver."""
from __future__ import annotations

import aibread
import pytest

from .conftest import MASTER_KEY


@pytest.fixture
def server(bread_server):
    return bread_server


def bread(server, key: str = MASTER_KEY) -> aibread.Bread:
    return server.client(key)


@pytest.fixture
def data(make_job):
    return make_job(lines=250, user="alice", repo="demo", target="geo")


def test_get_output_pages_with_user_key(server, data, user_key):
    key = user_key("alice")["Authorization"].split()[1]
    client = bread(server, key)
    seen, offset = [], 0
    while True:
        page = client.targets.stim.get_output("geo", repo_name="demo", offset=offset, limit=100)
        seen += page.output
        assert page.status == "complete" and page.lines == 250
        if not page.has_more:
            break
        offset += page.limit
    assert seen == data


@pytest.mark.parametrize("style", ["user_id", "x_user_id"])
def test_master_key_user_override_styles(server, data, style):
    page = bread(server).targets.stim.get_output("geo", repo_name="demo", limit=5, **{style: "alice"})
    assert page.output == data[:5] and page.offset == 0 and page.limit == 5


def test_status(server, data):
    status = bread(server).targets.stim.get("geo", repo_name="demo", user_id="alice")
    assert status.status == "complete" and status.lines == 250 and status.progress_percent == 100.0
    assert isinstance(status.job_id, int)


def test_errors_arrive_as_client_exceptions(server, data, user_key):
    with pytest.raises(aibread.AuthenticationError) as e:
        bread(server, "wrong-key").targets.stim.get("geo", repo_name="demo")
    assert e.value.status_code == 401 and e.value.body["code"] == "UNAUTHORIZED"

    alice = user_key("alice")["Authorization"].split()[1]
    with pytest.raises(aibread.PermissionDeniedError) as e:
        bread(server, alice).targets.stim.get("geo", repo_name="demo", user_id="bob")
    assert e.value.status_code == 403

    with pytest.raises(aibread.NotFoundError) as e:
        bread(server).targets.stim.get_output("nope", repo_name="demo", user_id="alice")
    assert "nope" in e.value.body["message"]

    with pytest.raises(aibread.UnprocessableEntityError) as e:
        bread(server).targets.stim.get_output("geo", repo_name="demo", user_id="alice", limit=5000)
    assert e.value.body["detail"][0]["loc"] == ["query", "limit"]


def test_strict_response_validation_accepts_every_answer(server, data):
    strict = server.client(MASTER_KEY, _strict_response_validation=True)
    assert strict.targets.stim.get_output("geo", repo_name="demo", user_id="alice", offset=249).has_more is False
    assert strict.targets.stim.get("geo", repo_name="demo", user_id="alice").status == "complete"
    assert strict.health.check().status == "healthy"
