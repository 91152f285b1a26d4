async def test_page_round_trip(client, make_job, master_headers):
    rows = make_job(lines=25)
    r = await client.get("/v1/repo/repo1/targets/t1/stim/output?offset=20&limit=10",
                         headers={**master_headers, "X-User-Id": "alice"})
    assert r.status == 200
    body = await r.json()
    assert body["output"] == rows[20:]
    assert body["has_more"] is False and body["lines"] == 25
