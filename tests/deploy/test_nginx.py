"""deploy/nginx.conf in front of a real `stimserver serve --workers 2`, driven as users drive it."""
from __future__ import annotations

import aibread
import orjson
import pytest

from tests.serverproc import create_key, request

from .conftest import DEPLOY_CONF, Nginx, render

OUTPUT = "/v1/repo/demo/targets/geo/stim/output"


_open: list[aibread.Bread] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _open:
        _open.pop().close()  # its pooled connections, before the GC finds them


def client(deploy, key: str, **kw) -> aibread.Bread:
    kw.setdefault("max_retries", 0)
    bread = aibread.Bread(api_key=key, base_url=f"http://127.0.0.1:{deploy['nginx'].port}", **kw)
    _open.append(bread)
    return bread


def test_config_is_valid_nginx_and_only_addresses_are_changed(deploy):
    assert deploy["nginx"].check().returncode == 0, deploy["nginx"].check().stderr
    original = DEPLOY_CONF.read_text()
    rendered = render(original, 1, 2).splitlines()
    changed = [(a, b) for a, b in zip(original.splitlines(), rendered) if a != b]
    assert len(changed) == 2 and len(rendered) == len(original.splitlines())
    assert "@" not in "".join(line for line in original.splitlines() if not line.lstrip().startswith("#")
                              and "@stimserver" not in line and "@request" not in line)


def test_official_client_pages_through_nginx(deploy):
    key = create_key(deploy["data"], "alice")  # made by the CLI after the servers started
    bread = client(deploy, key)
    seen, offset = [], 0
    while True:
        page = bread.targets.stim.get_output("geo", repo_name="demo", offset=offset, limit=100)
        assert page.status == "complete" and page.lines == 250
        seen += page.output
        if not page.has_more:
            break
        offset += page.limit
    assert seen == deploy["lines"]
    assert bread.targets.stim.get("geo", repo_name="demo").status == "complete"
    assert bread.health.check().status == "healthy"


def test_large_pages_arrive_whole_and_identical(deploy):
    server, nginx = deploy["server"], deploy["nginx"]
    path = "/v1/repo/demo/targets/big/stim/output?offset=0&limit=1000"
    direct = request(server.port, "GET", path, server.headers("alice"))
    proxied = request(nginx.port, "GET", path, server.headers("alice"))
    assert direct[0] == proxied[0] == 200
    assert len(proxied[2]) > 10_000_000 and proxied[2] == direct[2]
    assert "temporary file" not in nginx.error_log()


@pytest.mark.parametrize("case", ["401", "403", "404", "422"])
def test_errors_keep_their_json_bodies(deploy, case):
    server = deploy["server"]
    alice = create_key(deploy["data"], "alice") if case == "403" else None
    calls = {
        "401": (aibread.AuthenticationError, lambda: client(deploy, "wrong-key").targets.stim.get(
            "geo", repo_name="demo")),
        "403": (aibread.PermissionDeniedError, lambda: client(deploy, alice).targets.stim.get(
            "geo", repo_name="demo", user_id="bob")),
        "404": (aibread.NotFoundError, lambda: client(deploy, server.master_key).targets.stim.get_output(
            "nope", repo_name="demo", user_id="alice")),
        "422": (aibread.UnprocessableEntityError, lambda: client(deploy, server.master_key).targets.stim.get_output(
            "geo", repo_name="demo", user_id="alice", limit=5000)),
    }
    error, call = calls[case]
    with pytest.raises(error) as e:
        call()
    assert e.value.status_code == int(case)
    assert isinstance(e.value.body, dict) and e.value.body["code"] and e.value.body["message"]
    if case == "422":
        assert e.value.body["detail"][0]["loc"] == ["query", "limit"]
    # the same through nginx and directly, byte for byte
    path = {"401": OUTPUT, "403": OUTPUT + "?user_id=bob", "404": "/v1/repo/demo/targets/nope/stim",
            "422": OUTPUT + "?limit=5000"}[case]
    key = {"401": "wrong", "403": alice}.get(case, server.master_key)
    headers = {"Authorization": f"Bearer {key}", **({} if case == "403" else {"X-User-Id": "alice"})}
    via_nginx = request(deploy["nginx"].port, "GET", path, headers)
    direct = request(server.port, "GET", path, headers)
    assert via_nginx[0] == direct[0] == int(case)
    assert via_nginx[1]["content-type"].startswith("application/json")
    assert orjson.loads(via_nginx[2]) == orjson.loads(direct[2])


def test_too_large_body_is_refused_by_nginx_in_json(deploy):
    status, headers, body = request(deploy["nginx"].port, "POST", "/v1/repo",
                                    {"Authorization": "Bearer x", "Content-Type": "application/json"},
                                    body=b"{" + b" " * (11 * 1024 * 1024) + b"}")
    assert status == 413 and headers["content-type"].startswith("application/json")
    assert orjson.loads(body)["code"] == "PAYLOAD_TOO_LARGE"


def test_real_client_address_and_request_id_reach_the_access_log(deploy):
    server, nginx = deploy["server"], deploy["nginx"]
    headers = server.headers("alice")
    # the client on 127.0.0.5, nginx on 127.0.0.1: stimserver logs the client, with nginx as "via"
    status, h, _ = request(nginx.port, "GET", OUTPUT + "?limit=1", {**headers, "X-Request-Id": "trace-me-1"},
                           source="127.0.0.5")
    assert status == 200 and h["x-request-id"] == "trace-me-1"
    # a forged X-Forwarded-For is not believed: nginx appends the real client, which is not a trusted proxy
    request(nginx.port, "GET", OUTPUT + "?limit=1", {**headers, "X-Request-Id": "trace-me-2",
                                                     "X-Forwarded-For": "198.51.100.9"}, source="127.0.0.5")
    # straight to stimserver from an untrusted address: the header is ignored
    request(server.port, "GET", OUTPUT + "?limit=1", {**headers, "X-Request-Id": "trace-me-3",
                                                      "X-Forwarded-For": "198.51.100.9"}, source="127.0.0.6")
    # no id sent: nginx makes one, stimserver uses and returns it
    _, h4, _ = request(nginx.port, "GET", OUTPUT + "?limit=1", headers, source="127.0.0.5")
    assert len(h4["x-request-id"]) == 32

    log = server.logged("trace-me-1", "trace-me-2", "trace-me-3", h4["x-request-id"])
    assert (log["trace-me-1"]["remote"], log["trace-me-1"]["via"]) == ("127.0.0.5", "127.0.0.1")
    assert (log["trace-me-2"]["remote"], log["trace-me-2"]["via"]) == ("127.0.0.5", "127.0.0.1")
    assert (log["trace-me-3"]["remote"], log["trace-me-3"]["via"]) == ("127.0.0.6", None)
    assert log[h4["x-request-id"]]["remote"] == "127.0.0.5"
    assert log["trace-me-1"]["user"] == "alice" and log["trace-me-1"]["route"].endswith("/stim/output")
    assert server.master_key not in server.stdout.read_text()  # never a token in the log
    nginx_log = (nginx.dir / "access.log").read_text()
    assert "rid=trace-me-1" in nginx_log and f"rid={h4['x-request-id']}" in nginx_log


def test_stimserver_restart_behind_nginx(deploy):
    server, nginx = deploy["server"], deploy["nginx"]
    bread = client(deploy, server.master_key)
    before = bread.targets.stim.get_output("geo", repo_name="demo", user_id="alice", offset=200, limit=50)
    assert server.terminate() == 0

    status, headers, body = request(nginx.port, "GET", OUTPUT, server.headers("alice"))
    assert status == 503 and headers["content-type"].startswith("application/json")
    assert orjson.loads(body)["code"] == "SERVICE_UNAVAILABLE" and headers["retry-after"] == "1"
    with pytest.raises(aibread.InternalServerError):  # a 5xx: the client's retries would carry on
        bread.targets.stim.get("geo", repo_name="demo", user_id="alice")

    server.start()
    # nginx's pooled connections to the old processes are dead; it must not show that to anyone
    for _ in range(5):
        after = bread.targets.stim.get_output("geo", repo_name="demo", user_id="alice", offset=200, limit=50)
        assert after.output == before.output and after.has_more is False


def test_loadtest_through_nginx(deploy):
    from tests.scripts.test_loadtest import run_loadtest

    server, nginx = deploy["server"], deploy["nginx"]
    result = run_loadtest(f"http://127.0.0.1:{nginx.port}", server.master_key, user="alice", repo="demo",
                          target="geo", requests=300, duration=20, concurrency=4)
    assert result["errors"] == {} and result["requests"] == 300
    assert set(result["patterns"]) == {"scan", "deep", "status"}


def test_the_file_as_shipped_passes_nginx_t_inside_debians_nginx_conf(tmp_path):
    """Unmodified, in conf.d/ of the Debian package's own configuration (its default site removed)."""
    import shutil
    import subprocess

    from .conftest import nginx_binary

    etc = tmp_path / "nginx"
    shutil.copytree("/etc/nginx", etc, symlinks=True)
    (etc / "sites-enabled" / "default").unlink(missing_ok=True)
    shutil.copy(DEPLOY_CONF, etc / "conf.d" / "stimserver.conf")
    main = etc / "nginx.conf"
    main.write_text(main.read_text().replace("/etc/nginx/", f"{etc}/"))
    r = subprocess.run([nginx_binary(), "-t", "-c", str(main)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "[warn]" not in r.stderr and "[emerg]" not in r.stderr, r.stderr


def test_a_rollout_run_and_paged_through_nginx_by_two_workers(tmp_path):
    """A real rollout behind nginx (serve --workers 2, a fake OpenAI-compatible provider here), paged by the client."""
    import time

    from stimserver.store.paths import DataPaths
    from tests.jobs.conftest import hardcoded, seed_target
    from tests.llm.fake_providers import FakeOpenAI, ProviderThread, Reply
    from tests.serverproc import ServerProcess, free_port

    from .conftest import Nginx

    provider = ProviderThread(FakeOpenAI(api_key=None))
    fake = provider.start()
    fake.default = lambda body: Reply(f"Answer to {body['messages'][-1]['content']}")
    data = tmp_path / "data"
    seed_target(DataPaths(data), [hardcoded(60)], user="alice", repo="demo", target="geo", model_name="m",
                num_traj_per_stimulus=3)
    server = ServerProcess(data, free_port(), tmp_path, workers=2,
                           env={"STIMSERVER_TRUSTED_PROXIES": "127.0.0.1", "OPENAI_BASE_URL": f"{fake.url}/v1"})
    nginx = Nginx(tmp_path / "nginx", server.port)
    try:
        server.start()
        nginx.start()
        bread = aibread.Bread(api_key=server.master_key, base_url=f"http://127.0.0.1:{nginx.port}", max_retries=0)
        _open.append(bread)
        me = {"user_id": "alice"}
        for kind in (bread.targets.stim, bread.targets.rollout):
            kind.run("geo", repo_name="demo", poll=False, **me)
            deadline = time.monotonic() + 60
            while (status := kind.get("geo", repo_name="demo", **me)).status != "complete":
                assert status.status in ("pending", "running"), status
                assert time.monotonic() < deadline
                time.sleep(0.05)
        seen, offset = [], 0
        while True:
            page = bread.targets.rollout.get_output("geo", repo_name="demo", offset=offset, limit=50, **me)
            assert page.status == "complete" and page.lines == page.total_expected == 180
            seen += page.output
            if not page.has_more:
                break
            offset += page.limit
    finally:
        nginx.stop()
        server.terminate()
        provider.stop()
    assert [(r["stimulus_id"], r["trajectory_id"]) for r in seen] == [(s, t) for s in range(60) for t in range(3)]
    assert all(r["response"]["content"] == f"Answer to {r['question']}" for r in seen)
    assert len(fake.received) == 180


def test_a_bake_run_and_downloaded_through_nginx_by_two_workers(tmp_path):
    """A bake (a tiny model) behind nginx, serve --workers 2: run, polled, metrics, and its signed link."""
    import io
    import tarfile
    import time

    import httpx

    from stimserver.store.atomic import write_json_atomic
    from stimserver.store.paths import DataPaths
    from stimserver.store.records import Records
    from tests.conftest import import_jsonl
    from tests.serverproc import ServerProcess, free_port
    from tests.test_client_bakes import OVERRIDES, rollout_lines
    from tests.train import tiny

    data = tmp_path / "data"
    paths = DataPaths(data)
    write_json_atomic(paths.repo("alice", "demo") / "repo.json", {"repo_name": "demo",
                                                                  "base_model": str(tiny.model_dir())})
    src = tmp_path / "rollout.jsonl"
    src.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in rollout_lines()))
    import_jsonl(Records(paths), "alice", "demo", "french", src, kind="rollout")
    server = ServerProcess(data, free_port(), tmp_path, workers=2,
                           env={"STIMSERVER_TRUSTED_PROXIES": "127.0.0.1", "STIMSERVER_BAKE_THREADS": "1",
                                "STIMSERVER_BAKE_EVAL_SAMPLES": "1", "HF_HUB_OFFLINE": "1"})
    nginx = Nginx(tmp_path / "nginx", server.port)
    try:
        server.start()
        nginx.start()
        bread = aibread.Bread(api_key=server.master_key, base_url=f"http://127.0.0.1:{nginx.port}", max_retries=0)
        _open.append(bread)
        me = {"user_id": "alice"}
        bread.bakes.create(repo_name="demo", bake_name="b1", template="default", overrides=OVERRIDES, **me)
        bread.bakes.run("b1", repo_name="demo", poll=False, **me)
        deadline = time.monotonic() + 180
        while (status := bread.bakes.get("b1", repo_name="demo", **me)).status != "complete":
            assert status.status in ("pending", "running"), status
            assert time.monotonic() < deadline
            time.sleep(0.2)
        rows = bread.bakes.get_metrics("b1", repo_name="demo", **me)
        link = bread.bakes.download("b1", repo_name="demo", **me)
        assert link.url.startswith(f"http://127.0.0.1:{nginx.port}/v1/downloads/bakes/alice/demo/b1/")
        archive = httpx.get(link.url)
        forged = httpx.get(link.url.replace("signature=", "signature=0"))
    finally:
        nginx.stop()
        server.terminate()
    assert [r["iter"] for r in rows if r["type"] == "train"] == list(range(1, status.total_steps + 1))
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        assert any(name.endswith("/adapter_model.safetensors") for name in tar.getnames())
    assert forged.status_code == 403 and forged.json()["code"]
