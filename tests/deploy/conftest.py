"""A real nginx (the Debian package) running deploy/nginx.conf on loopback ports, in a temp dir.

The user-facing file is used as it is, except for the two lines that name addresses:
``listen 80;`` becomes a free loopback port and the upstream ``server 127.0.0.1:8080 …;``
the port of the stimserver under test. A small main config around it (``daemon off``,
pid, logs and temp paths inside the temp dir) stands in for /etc/nginx/nginx.conf,
which includes conf.d/*.conf inside its http {} block the same way.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from tests.serverproc import ServerProcess, free_port, request

DEPLOY_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"

MAIN_CONF = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{
    worker_connections 512;
}}

http {{
    log_format stimserver '$remote_addr "$request" $status $body_bytes_sent rid=$stimserver_request_id';
    access_log {dir}/access.log stimserver;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    include {dir}/stimserver.conf;
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("nginx is not installed: apt-get install nginx (the deploy tests run the real one)")
    return found


def render(conf: str, listen_port: int, upstream_port: int) -> str:
    """deploy/nginx.conf with only its listen and upstream addresses changed."""
    replacements = {"    listen 80;\n": f"    listen 127.0.0.1:{listen_port};\n",
                    "    server 127.0.0.1:8080 ": f"    server 127.0.0.1:{upstream_port} "}
    for old, new in replacements.items():
        assert conf.count(old) == 1, f"deploy/nginx.conf no longer has exactly one {old.strip()!r}"
        conf = conf.replace(old, new)
    return conf


class Nginx:
    def __init__(self, workdir: Path, upstream_port: int) -> None:
        import os

        self.dir = workdir
        self.port = free_port()
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        (workdir / "stimserver.conf").write_text(render(DEPLOY_CONF.read_text(), self.port, upstream_port))
        self.conf = workdir / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""  # workers must read the temp dir (mode 700)
        self.conf.write_text(MAIN_CONF.format(dir=workdir, user=user))
        self.proc: subprocess.Popen | None = None

    def command(self, *extra: str) -> list[str]:
        return [nginx_binary(), "-p", str(self.dir), "-c", str(self.conf), "-e", str(self.dir / "error.log"), *extra]

    def check(self) -> subprocess.CompletedProcess:
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=60)

    def start(self) -> "Nginx":
        out = open(self.dir / "nginx.out", "ab")
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited: {(self.dir / 'error.log').read_text()}")
            try:
                request(self.port, "GET", "/v1/health", timeout=5)
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nginx did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text() if path.exists() else ""


@pytest.fixture(scope="module")
def deploy(tmp_path_factory):
    """stimserver (2 worker processes, trusting 127.0.0.1) behind nginx, on a data dir with one output."""
    from tests.conftest import import_jsonl
    from stimserver.store.paths import DataPaths
    from stimserver.store.records import Records

    root = tmp_path_factory.mktemp("deploy")
    data = root / "data"
    lines = [{"stimulus_id": i, "question": f"Question {i}?", "pad": "x" * (i % 97)} for i in range(250)]
    src = root / "lines.jsonl"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    import_jsonl(Records(DataPaths(data)), "alice", "demo", "geo", src)
    big = root / "big.jsonl"  # 1000 lines of ~10 KB: a ~10 MB page at limit=1000
    big.write_bytes(b"".join(orjson.dumps({"stimulus_id": i, "text": f"{i:06d}" * 1700}) + b"\n" for i in range(1000)))
    import_jsonl(Records(DataPaths(data)), "alice", "demo", "big", big)
    server = ServerProcess(data, free_port(), root, workers=2, env={"STIMSERVER_TRUSTED_PROXIES": "127.0.0.1"})
    server.start()
    nginx = Nginx(root / "nginx", server.port)
    try:
        nginx.start()
        yield {"server": server, "nginx": nginx, "lines": lines, "data": data, "root": root}
    finally:
        nginx.stop()
        if server.proc is not None and server.proc.poll() is None:
            server.terminate()
