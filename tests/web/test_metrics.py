"""GET /metrics: Prometheus text, requests by route template, latency, bytes, jobs, lines."""
from __future__ import annotations

import asyncio

import orjson
from prometheus_client.parser import text_string_to_metric_families

from stimserver.web.metrics import METRICS, count_lines_generated
from tests.llm.fake_providers import openai_server  # noqa: F401  (fixture)

OUTPUT = "/v1/repo/{repo_name}/targets/{target_name}/stim/output"


async def scrape(client) -> dict[tuple, float]:
    r = await client.get("/metrics")
    assert r.status == 200 and r.content_type == "text/plain"
    text = await r.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def requests_key(route: str, status: int, method: str = "GET") -> tuple:
    return ("stimserver_http_requests_total", (("method", method), ("route", route), ("status", str(status))))


async def test_public_and_in_text_format(client):
    samples = await scrape(client)  # no Authorization header
    assert samples[("stimserver_build_info", (("version", __import__("stimserver").__version__),))] == 1


async def test_requests_by_route_template_status_latency_and_bytes(client, make_job, master_headers):
    make_job(lines=30, user="alice", repo="demo", target="geo")
    sizes = []
    for offset in (0, 10, 20):
        r = await client.get(f"/v1/repo/demo/targets/geo/stim/output?offset={offset}&limit=10",
                             headers={**master_headers, "X-User-Id": "alice"})
        assert r.status == 200
        sizes.append(len(await r.read()))
    assert (await client.get("/v1/repo/demo/targets/geo/stim/output?limit=0",
                             headers={**master_headers, "X-User-Id": "alice"})).status == 422
    assert (await client.get("/v1/repo/demo/targets/geo/stim/output")).status == 401
    assert (await client.get("/no/such/path", headers=master_headers)).status == 404

    samples = await scrape(client)
    assert samples[requests_key(OUTPUT, 200)] == 3
    assert samples[requests_key(OUTPUT, 422)] == 1
    assert samples[requests_key(OUTPUT, 401)] == 1
    assert samples[requests_key("unmatched", 404)] == 1  # raw paths never become labels
    assert not any("/v1/repo/demo" in str(labels) for _, labels in samples)
    hist = (("method", "GET"), ("route", OUTPUT))
    assert samples[("stimserver_http_request_duration_seconds_count", hist)] == 5
    assert samples[("stimserver_http_request_duration_seconds_bucket", (("le", "+Inf"), *hist))] == 5
    assert samples[("stimserver_http_request_duration_seconds_sum", hist)] > 0
    error_bytes = samples[("stimserver_http_response_bytes_total", (("route", OUTPUT),))] - sum(sizes)
    assert error_bytes > 0  # the two JSON error bodies count too


async def test_jobs_by_state_are_counted_from_the_records(client, make_job, records):
    make_job(lines=3, user="alice", repo="demo", target="done")
    make_job(lines=3, user="bob", repo="demo", target="done")
    make_job(lines=3, user="bob", repo="demo", target="broken")
    job_file = records.paths.job_file("bob", "demo", "broken", "stim")
    job_file.write_bytes(orjson.dumps({**orjson.loads(job_file.read_bytes()), "status": "failed"}))
    client.server.app[METRICS].jobs.ttl = 0  # re-read the disk on every scrape
    samples = await scrape(client)
    jobs = {labels: v for (name, labels), v in samples.items() if name == "stimserver_jobs"}
    assert jobs[(("kind", "stim"), ("status", "complete"))] == 2
    assert jobs[(("kind", "stim"), ("status", "failed"))] == 1
    assert jobs[(("kind", "stim"), ("status", "running"))] == 0
    assert jobs[(("kind", "stim"), ("status", "pending"))] == 0


async def test_job_counts_are_cached_between_scrapes(client, make_job):
    make_job(lines=3, user="alice", repo="demo", target="one")
    first = await scrape(client)
    make_job(lines=3, user="alice", repo="demo", target="two")
    key = ("stimserver_jobs", (("kind", "stim"), ("status", "complete")))
    assert (await scrape(client))[key] == first[key] == 1  # within the cache time: the disk is not walked again
    client.server.app[METRICS].jobs.ttl = 0
    assert (await scrape(client))[key] == 2


async def test_job_counts_follow_changes_and_removals(client, make_job, records):
    """Scrapes count through the store's one job glob and cache: changed and removed records are seen."""
    import shutil

    from stimserver.store.jobrecords import job_files

    def jobs(samples, status):
        return samples[("stimserver_jobs", (("kind", "stim"), ("status", status)))]

    make_job(lines=1, user="alice", repo="demo", target="one")
    make_job(lines=1, user="alice", repo="demo", target="two")
    assert sorted(ref.target for ref, _ in job_files(records.paths)) == ["one", "two"]  # what the runner scans
    client.server.app[METRICS].jobs.ttl = 0
    assert jobs(await scrape(client), "complete") == 2
    job_file = records.paths.job_file("alice", "demo", "two", "stim")
    job_file.write_bytes(orjson.dumps({**orjson.loads(job_file.read_bytes()), "status": "running"}))
    samples = await scrape(client)
    assert jobs(samples, "complete") == 1 and jobs(samples, "running") == 1
    shutil.rmtree(records.paths.target("alice", "demo", "two"))
    samples = await scrape(client)
    assert jobs(samples, "complete") == 1 and jobs(samples, "running") == 0


async def test_lines_generated_counter(client):
    key = ("stimserver_lines_generated_total", (("kind", "stim"),))
    before = (await scrape(client))[key]
    count_lines_generated(40)
    count_lines_generated(2, "stim")
    count_lines_generated(0)
    assert (await scrape(client))[key] == before + 42


async def test_a_real_job_counts_its_lines(client, master_headers):
    """The job runner reports every committed line to the counter."""
    key = ("stimserver_lines_generated_total", (("kind", "stim"),))
    before = (await scrape(client)).get(key, 0)
    h = {**master_headers, "X-User-Id": "alice"}
    assert (await client.post("/v1/repo", json={"repo_name": "m"}, headers=h)).status == 201
    for name in ("teacher", "student"):
        r = await client.post("/v1/repo/m/prompts", headers=h,
                              json={"prompt_name": name, "messages": [{"role": "system", "content": name}]})
        assert r.status == 201
    r = await client.post("/v1/repo/m/targets", headers=h, json={
        "target_name": "t", "template": "default",
        "overrides": {"teacher_prompt": "teacher", "student_prompt": "student",
                      "generators": [{"type": "hardcoded", "questions": [f"q{i}?" for i in range(7)]}]}})
    assert r.status == 201
    status = (await (await client.post("/v1/repo/m/targets/t/stim", headers=h)).json())["status"]
    for _ in range(200):
        if status == "complete":
            break
        await asyncio.sleep(0.05)
        status = (await (await client.get("/v1/repo/m/targets/t/stim", headers=h)).json())["status"]
    assert status == "complete"
    assert (await scrape(client))[key] == before + 7


async def test_a_rollout_is_counted_by_kind(aiohttp_client, tmp_path, openai_server):  # noqa: F811
    """stimserver_jobs{kind="rollout",…} and lines_generated_total{kind="rollout"} from a real rollout."""
    from stimserver.config import Settings
    from stimserver.store.paths import DataPaths
    from stimserver.web.app import create_app
    from tests.conftest import MASTER_KEY
    from tests.jobs.conftest import hardcoded, seed_target

    settings = Settings.build(data_dir=tmp_path / "data", master_key=MASTER_KEY, access_log=False,
                              openai_base_url=f"{openai_server.url}/v1", openai_api_key=openai_server.api_key)
    client = await aiohttp_client(create_app(settings))
    key = ("stimserver_lines_generated_total", (("kind", "rollout"),))
    before = await scrape(client)
    assert before[("stimserver_jobs", (("kind", "rollout"), ("status", "complete")))] == 0
    seed_target(DataPaths(settings.data_dir), [hardcoded(3)], model_name="llama3.1:8b", num_traj_per_stimulus=2)
    h = {"Authorization": f"Bearer {MASTER_KEY}", "X-User-Id": "alice"}
    for kind in ("stim", "rollout"):
        r = await client.post(f"/v1/repo/r1/targets/t1/{kind}", headers=h)
        status = (await r.json())["status"]
        for _ in range(400):
            if status == "complete":
                break
            await asyncio.sleep(0.05)
            status = (await (await client.get(f"/v1/repo/r1/targets/t1/{kind}", headers=h)).json())["status"]
        assert status == "complete", kind
    client.server.app[METRICS].jobs.ttl = 0  # no cached job counts
    samples = await scrape(client)
    assert samples[("stimserver_jobs", (("kind", "rollout"), ("status", "complete")))] == 1
    assert samples[key] == before.get(key, 0) + 6


def test_direct_counting_matches_prometheus_clients_own(tmp_path):
    """``Metrics.observe`` counts into the bound values itself (issue 13): the same exposition as
    ``Counter.inc`` / ``Histogram.observe``, bucket edges included (a value on a bound is in that bucket)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from stimserver.store.paths import DataPaths
    from stimserver.web.metrics import LATENCY_BUCKETS, Metrics

    metrics = Metrics(DataPaths(tmp_path))
    registry = CollectorRegistry(auto_describe=False)
    requests = Counter("stimserver_http_requests", metrics.requests._documentation, ["route", "method", "status"],
                       registry=registry)
    latency = Histogram("stimserver_http_request_duration_seconds", metrics.latency._documentation,
                        ["route", "method"], buckets=LATENCY_BUCKETS, registry=registry)
    body = Counter("stimserver_http_response_bytes", metrics.bytes._documentation, ["route"], registry=registry)
    values = [0.0, 0.0004, *LATENCY_BUCKETS, 0.0026, 7.5, 99.0]
    for i, seconds in enumerate(values):
        route, status = ("/a", 200) if i % 3 else ("/b/{x}", 404)
        metrics.observe(route, "GET", status, seconds, i * 10)
        requests.labels(route, "GET", str(status)).inc()
        latency.labels(route, "GET").observe(seconds)
        child = body.labels(route)  # bound at the first request, as Metrics binds it
        if i:
            child.inc(i * 10)
    ours = CollectorRegistry(auto_describe=False)
    for collector in (metrics.requests, metrics.latency, metrics.bytes):
        ours.register(collector)
    def samples(reg: CollectorRegistry) -> list[bytes]:  # creation times differ, by a few microseconds
        return [line for line in generate_latest(reg).splitlines() if b"_created" not in line]

    assert samples(ours) == samples(registry) and len(samples(ours)) > 40


def _value(metrics, route: str, status: int) -> float:
    return metrics.requests.labels(route, "GET", str(status))._value.get()


async def test_request_counts_are_folded_in_by_the_timer_without_a_scrape(tmp_path, monkeypatch):
    """Another process's scrape reads the shared values: this process folds its counts in on its own."""
    from stimserver.store.paths import DataPaths
    from stimserver.web import metrics as metrics_module

    monkeypatch.setattr(metrics_module, "FOLD_SECONDS", 0.05)
    m = metrics_module.Metrics(DataPaths(tmp_path))
    for seconds in (0.0001, 0.002, 3.0):
        m.observe("/r", "GET", 200, seconds, 10)
    assert _value(m, "/r", 200) == 0  # pending: summed, not yet in prometheus-client
    await asyncio.sleep(0.3)
    assert _value(m, "/r", 200) == 3
    latency = m.latency.labels("/r", "GET")
    assert abs(latency._sum.get() - 3.0021) < 1e-9 and m.bytes.labels("/r")._value.get() == 30
    buckets = [b.get() for b in latency._buckets]
    assert sum(buckets) == 3 and buckets[0] == 1 and buckets[metrics_module.LATENCY_BUCKETS.index(5.0)] == 1


async def test_cleanup_folds_the_last_counts_in(tmp_path):
    from aiohttp import web

    from stimserver.store.paths import DataPaths
    from stimserver.web import metrics as metrics_module

    m = metrics_module.Metrics(DataPaths(tmp_path))
    m.observe("/r", "GET", 404, 0.001, 0)
    app = web.Application()
    app[METRICS] = m
    await metrics_module.fold_on_cleanup(app)
    assert _value(m, "/r", 404) == 1


def test_without_an_event_loop_counts_go_in_at_once(tmp_path):
    from stimserver.store.paths import DataPaths
    from stimserver.web import metrics as metrics_module

    m = metrics_module.Metrics(DataPaths(tmp_path))
    m.observe("/r", "GET", 200, 0.001, 5)
    assert _value(m, "/r", 200) == 1


async def test_a_busy_second_folds_at_a_bounded_count(tmp_path, monkeypatch):
    from stimserver.store.paths import DataPaths
    from stimserver.web import metrics as metrics_module

    monkeypatch.setattr(metrics_module, "FOLD_SECONDS", 3600.0)
    monkeypatch.setattr(metrics_module, "FOLD_AT", 3)
    m = metrics_module.Metrics(DataPaths(tmp_path))
    for _ in range(2):
        m.observe("/r", "GET", 200, 0.001, 1)
    assert _value(m, "/r", 200) == 0 and len(m._pending) == 2
    m.observe("/r", "GET", 200, 0.001, 1)
    assert _value(m, "/r", 200) == 3 and not m._pending
    m.fold()  # and the timer armed for the first of them is gone with it
    assert m._timer is None


async def test_bakes_are_counted_by_status(aiohttp_client, tmp_path):
    """stimserver_jobs{kind="bake",status=…} counts bake jobs, which live beside their bakes, not targets."""
    from stimserver.config import Settings
    from stimserver.store import jobrecords
    from stimserver.store.paths import DataPaths
    from stimserver.web.app import create_app
    from tests.conftest import MASTER_KEY

    settings = Settings.build(data_dir=tmp_path / "data", master_key=MASTER_KEY, access_log=False, run_jobs=False)
    paths = DataPaths(settings.data_dir)
    for bake, status in (("b1", "complete"), ("b2", "complete"), ("b3", "failed")):
        job_dir = paths.job_dir("alice", "r1", bake, "bake")
        job_dir.mkdir(parents=True)
        jobrecords.write_record(job_dir, {"job_id": 1, "status": status})
    client = await aiohttp_client(create_app(settings))
    samples = await scrape(client)
    assert samples[("stimserver_jobs", (("kind", "bake"), ("status", "complete")))] == 2
    assert samples[("stimserver_jobs", (("kind", "bake"), ("status", "failed")))] == 1
    assert samples[("stimserver_jobs", (("kind", "bake"), ("status", "running")))] == 0
