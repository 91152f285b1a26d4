"""paging: offset/limit parsing, bounds and the 422s that name the parameter."""
from __future__ import annotations

import pytest
from multidict import MultiDict

from stimserver.api.errors import ValidationError
from stimserver.api.paging import int_param, page_params


def q(**params: str) -> MultiDict[str]:
    return MultiDict(params)


def test_absent_parameters_take_their_defaults():
    assert page_params(q(), 100, 1000) == (0, 100)
    assert int_param(q(), "limit", None, 1) is None


@pytest.mark.parametrize(("params", "expected"), [
    ({"offset": "5", "limit": "10"}, (5, 10)),
    ({"offset": " 7 ", "limit": "1000"}, (7, 1000)),
    ({"limit": "1"}, (0, 1)),
], ids=["plain", "blanks-around", "smallest-limit"])
def test_good_values(params, expected):
    assert page_params(q(**params), 100, 1000) == expected


@pytest.mark.parametrize(("params", "name", "type_"), [
    ({"limit": ""}, "limit", "type_error.integer"),
    ({"offset": ""}, "offset", "type_error.integer"),
    ({"offset": " "}, "offset", "type_error.integer"),
    ({"limit": "ten"}, "limit", "type_error.integer"),
    ({"limit": "1.5"}, "limit", "type_error.integer"),
    ({"limit": "٣"}, "limit", "type_error.integer"),  # a digit, but not ASCII
    ({"offset": "9" * 21}, "offset", "value_error.number.not_le"),  # an integer, past 64 bits
    ({"offset": "9223372036854775808"}, "offset", "value_error.number.not_le"),
    ({"offset": "-" + "9" * 5000}, "offset", "value_error.number.not_ge"),
    ({"limit": "0"}, "limit", "value_error.number.not_ge"),
    ({"offset": "-1"}, "offset", "value_error.number.not_ge"),
    ({"limit": "1001"}, "limit", "value_error.number.not_le"),
], ids=["empty-limit", "empty-offset", "blank-offset", "word", "float", "arabic-digit", "too-long", "2**63",
        "very-negative", "limit-0",
        "negative-offset", "over-max"])
def test_bad_values_are_422_naming_the_parameter(params, name, type_):
    with pytest.raises(ValidationError) as caught:
        page_params(q(**params), 100, 1000)
    err = caught.value
    assert err.status == 422 and f"query parameter {name}" in err.message
    assert err.detail == [{"loc": ["query", name], "msg": err.detail[0]["msg"], "type": type_}]


def test_a_long_bad_value_is_clipped_in_the_message():
    with pytest.raises(ValidationError) as caught:
        int_param(q(limit="x" * 500), "limit", 10, 1)
    assert len(caught.value.message) < 120


@pytest.mark.parametrize("path", [
    "/v1/repo/demo/targets/t1/stim/output?limit=",
    "/v1/repo/demo/targets/t1/stim/output?offset=",
    "/v1/repo?include_metadata=true&limit=",
    "/v1/repo?include_metadata=true&offset=",
], ids=["output-limit", "output-offset", "repos-limit", "repos-offset"])
async def test_empty_values_over_http_are_422(client, make_job, master_headers, path):
    make_job(lines=3, user="admin", repo="demo")
    r = await client.get(path, headers=master_headers)
    body = await r.json()
    name = path.rsplit("&", 1)[-1].rsplit("?", 1)[-1].rstrip("=")
    assert r.status == 422 and body["code"] == "VALIDATION_ERROR"
    assert body["detail"][0]["loc"] == ["query", name] and name in body["message"]
