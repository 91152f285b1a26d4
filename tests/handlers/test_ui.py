"""The viewer's files and headers (handlers/ui.py); its behaviour in a browser is tests/ui/."""
from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from stimserver.handlers.ui import SECURITY_HEADERS

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "stimserver" / "ui"

PAGES = {
    "root": ("/ui/", "text/html"),
    "deep-link": ("/ui/repo/demo/target/geography/stim?line=5", "text/html"),
    "script": ("/ui/static/app.js", "text/javascript"),
    "module": ("/ui/static/markdown.js", "text/javascript"),
    "styles": ("/ui/static/app.css", "text/css"),
}


@pytest.mark.parametrize("path,content_type", PAGES.values(), ids=PAGES.keys())
async def test_files_carry_the_security_headers_without_auth(client, path, content_type):
    r = await client.get(path)
    assert r.status == 200 and r.content_type == content_type
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert "Set-Cookie" not in r.headers


async def test_the_page_has_no_inline_script_or_style(client):
    html = await (await client.get("/ui/")).text()
    assert "<script" in html and all('src="/ui/static/' in tag for tag in html.split("<script")[1:])
    assert "<style" not in html and "style=" not in html and "onclick" not in html


async def test_an_unchanged_file_is_a_304(client):
    r = await client.get("/ui/static/app.js")
    etag = r.headers["ETag"]
    r = await client.get("/ui/static/app.js", headers={"If-None-Match": etag})
    assert r.status == 304 and r.headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]


@pytest.mark.parametrize("name", ["nope.js", "..%2Fapp.py", ".hidden.js", "app.py", "index"])
async def test_unknown_files_are_404_json(client, name):
    r = await client.get(f"/ui/static/{name}")
    assert r.status == 404 and (await r.json())["code"] == "RESOURCE_NOT_FOUND"


async def test_ui_without_slash_redirects(client):
    r = await client.get("/ui", allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "/ui/"


async def test_writes_to_pages_are_405(client):
    r = await client.post("/ui/repo/x")
    assert r.status == 405


def test_every_file_is_package_data():
    """An installed (not editable) stimserver ships what the page loads."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    patterns = [p.strip() for p in cfg["options.package_data"]["stimserver"].split(",")]
    for f in UI.iterdir():
        assert any(f.match(p) for p in patterns), f.name
    html = (UI / "index.html").read_text()
    for name in ("app.js", "app.css", "dom.js", "api.js", "markdown.js", "vlist.js", "output.js"):
        assert f"/ui/static/{name}" in html and (UI / name).is_file()


def test_no_html_parsing_sinks_in_the_script():
    """Text reaches the page only through createElement/textContent (dom.js, markdown.js)."""
    for f in UI.glob("*.js"):
        src = f.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in src, (f.name, sink)
