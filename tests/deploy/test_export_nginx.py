"""A 1 GiB export through deploy/nginx.conf and a real `stimserver serve --workers 2`: whole, identical,
never spooled to a temporary file, and the servers' memory does not grow with it.

The output is generated sparse (each 1 MiB line is its JSON start and end around a hole),
so the test reads and sends a full GiB while writing only a few MB to disk. Export
serves the committed bytes as they are, so the lines need not be parsed to be served.
"""
from __future__ import annotations

import hashlib
import http.client
import os
from pathlib import Path

from stimserver.store import lineindex, output

GIB = 1 << 30
LINE = 1 << 20


def _sparse_output(job_dir: Path) -> str:
    """1024 lines of 1 MiB; returns the data's sha256."""
    data, idx = job_dir / (output.DATA_NAME + ".new"), job_dir / (output.INDEX_NAME + ".new")
    ends = []
    with open(data, "wb") as f:
        for i in range(GIB // LINE):
            head = b'{"stimulus_id":%d,"question":"' % i
            f.seek(i * LINE)
            f.write(head)
            f.seek((i + 1) * LINE - 3)
            f.write(b'"}\n')
            ends.append((i + 1) * LINE)
    fd = os.open(idx, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    lineindex.append_entries(fd, ends)
    os.close(fd)
    digest = hashlib.sha256()
    with open(data, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    os.replace(data, job_dir / output.DATA_NAME)
    os.replace(idx, job_dir / output.INDEX_NAME)
    return digest.hexdigest()


def _rss_kb(pid: int) -> int:
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def test_a_gib_export_streams_through_nginx(deploy):
    server, nginx = deploy["server"], deploy["nginx"]
    job_dir = deploy["data"] / "users" / "alice" / "repos" / "demo" / "targets" / "big" / "stim"
    original = {name: (job_dir / name).read_bytes() for name in (output.DATA_NAME, output.INDEX_NAME)}
    try:
        want = _sparse_output(job_dir)
        rss_before = _rss_kb(server.proc.pid)
        conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=120)
        conn.request("GET", "/v1/repo/demo/targets/big/stim/export",
                     headers={**server.headers("alice"), "Accept-Encoding": "identity"})
        r = conn.getresponse()
        assert r.status == 200
        assert int(r.getheader("Content-Length")) == GIB
        assert r.getheader("X-Stimserver-Lines") == str(GIB // LINE)
        got, size = hashlib.sha256(), 0
        while chunk := r.read(4 << 20):
            got.update(chunk)
            size += len(chunk)
        conn.close()
        assert size == GIB and got.hexdigest() == want
        assert "temporary file" not in nginx.error_log()
        spool = nginx.dir / "tmp" / "proxy"
        assert not spool.exists() or not any(spool.rglob("*"))
        assert _rss_kb(server.proc.pid) - rss_before < 200 * 1024  # far below the GiB it sent
    finally:
        for name, raw in original.items():
            (job_dir / name).write_bytes(raw)
