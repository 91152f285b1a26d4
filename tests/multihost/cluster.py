"""Several stimserver hosts over one GlusterFS volume, behind nginx, built on one machine.

What ``up`` builds (root only; ``down`` removes all of it, also when half built):

- one ``glusterd`` (its pid file and log in ``STATE``) serving volume ``stimmh``: replica 3,
  three brick folders on this machine's disk (``force``: gluster refuses replica bricks on
  one host otherwise), ``network.ping-timeout`` lowered and the client-side caches that
  could serve another host's old bytes or attributes switched off (``VOLUME_OPTIONS``);
- a bridge ``stimmh-br`` (198.18.0.1/24, the benchmarking range 198.18.0.0/15) and three
  "hosts": each a network namespace on a veth pair to the bridge (198.18.0.11–13) with its
  own persistent mount and UTS namespace (files in ``STATE/ns``), its own FUSE client of
  the volume mounted at ``MOUNT`` (the same path on every host, ``MOUNT_OPTIONS``), and
  in it a ``stimserver serve`` (web tier, ``run_jobs`` off, port 8080) and a
  ``stimserver worker`` (job tier);
- nginx in the root namespace on 127.0.0.1:``NGINX_PORT`` running deploy/nginx.conf with
  the web hosts as its upstream servers.

"All processes of a host" are the processes in its mount namespace (the FUSE client
included), found through ``/proc/PID/ns/mnt``; that is how a host is killed. Every wait
here is bounded in time and in count (``wait_until``).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[2]
STATE = Path(os.environ.get("STIMSERVER_MULTIHOST_DIR", "/var/tmp/stimserver-multihost"))
VOLUME = "stimmh"
BRIDGE, BRIDGE_IP = "stimmh-br", "198.18.0.1"
HOSTS = 3
MOUNT = Path("/srv/stimserver-multihost")  # where every host mounts the volume
DATA = MOUNT / "data"
WEB_PORT = 8080
NGINX_PORT = int(os.environ.get("STIMSERVER_MULTIHOST_NGINX_PORT", "18080"))
MASTER_KEY = "multihost-master-key-0123456789abcdef"
PING_TIMEOUT = 10  # seconds; see docs/multihost.md
# No kernel attribute/entry caching: another host's rename or append is seen by the next stat;
# direct I/O: no kernel page cache, which keeps bytes another host rewrote in place (the job
# counter handed out the same id on two hosts without it).
MOUNT_OPTIONS = os.environ.get("STIMSERVER_MULTIHOST_MOUNT_OPTIONS",  # another set, for measuring
                               "attribute-timeout=0,entry-timeout=0,negative-timeout=0,direct-io-mode=enable")
VOLUME_OPTIONS = {
    "network.ping-timeout": str(PING_TIMEOUT),  # a client gives up on a silent brick after this
    # A brick drops a silent client (and its locks) after this: TCP keepalive when idle, the TCP
    # user timeout when data goes unacknowledged. The defaults (42 s) held a cut-off host's job lock
    # for ~44 s.
    "server.tcp-user-timeout": str(PING_TIMEOUT),
    "server.keepalive-time": "5",
    "server.keepalive-interval": "2",
    "server.keepalive-count": "3",
    "performance.stat-prefetch": "off",  # md-cache: stat results kept for 1 s
    "performance.quick-read": "off",  # small files' contents kept for 1 s
    "performance.open-behind": "off",  # an open answered before the file is opened on the bricks
    "performance.io-cache": "off",
    "performance.read-ahead": "off",
    "performance.readdir-ahead": "off",
    "performance.nl-cache": "off",  # a negative lookup (a name not yet there) remembered
    "cluster.self-heal-daemon": "on",
}
T = TypeVar("T")
_children: list[subprocess.Popen[bytes]] = []  # started here: reaped by reap() (no zombies, no warnings)


class NotPossible(RuntimeError):
    """This machine cannot build the cluster (no root, FUSE, namespaces or GlusterFS)."""


def wait_until(check: Callable[[], T | None], what: str, timeout: float = 60, interval: float = 0.1) -> T:
    """``check()`` once it is truthy; bounded by ``timeout`` seconds and as many tries as fit in it."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        try:
            got = check()
        except (OSError, subprocess.SubprocessError):
            got = None
        if got:
            return got
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def run(*cmd: str, check: bool = True, timeout: float = 60, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    if not quiet and r.returncode != 0:
        print(f"  ({' '.join(cmd[:4])}…: {r.stderr.strip()[:200]})", file=sys.stderr)
    return r


def gluster(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run("gluster", "--mode=script", *args, check=check, timeout=timeout, quiet=not check)


def why_not_possible() -> str | None:
    """The reason this machine cannot build the cluster, found by trying; None if it can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, FUSE mounts, glusterd)"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse: this machine forbids FUSE"
    for tool in ("ip", "unshare", "nsenter", "glusterd", "gluster", "mount.glusterfs"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (apt-get install glusterfs-server glusterfs-client iproute2)"
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
    except OSError as e:
        return f"/dev/fuse cannot be opened ({e.strerror}): this machine forbids FUSE"
    probe = "stimmh-probe"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"network namespaces are forbidden here: ip netns add: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30)
    r = subprocess.run(["unshare", "--mount", "--uts", "true"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return f"mount/UTS namespaces are forbidden here: unshare: {r.stderr.strip()}"
    return None


@dataclass(frozen=True)
class Host:
    """One test host: its namespaces, address and processes."""

    n: int

    @property
    def name(self) -> str:
        return f"stimmh{self.n}"

    @property
    def ip(self) -> str:
        return f"198.18.0.{10 + self.n}"

    @property
    def netns(self) -> Path:
        return Path("/run/netns") / self.name

    @property
    def mntns(self) -> Path:
        return STATE / "ns" / f"mnt{self.n}"

    @property
    def utsns(self) -> Path:
        return STATE / "ns" / f"uts{self.n}"

    def enter(self) -> list[str]:
        """The command prefix that runs a program on this host."""
        return ["nsenter", f"--net={self.netns}", f"--mount={self.mntns}", f"--uts={self.utsns}", "--"]

    def sh(self, *cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(*self.enter(), *cmd, timeout=timeout, check=check, quiet=not check)

    def pids(self) -> list[int]:
        """Every process in this host's mount namespace (its FUSE client too)."""
        try:
            ns = os.stat(self.mntns).st_ino
        except OSError:
            return []
        mine = os.getpid()
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != mine:
                try:
                    if os.stat(f"/proc/{entry}/ns/mnt").st_ino == ns:
                        found.append(int(entry))
                except OSError:
                    continue
        return found

    def mounted(self) -> bool:
        r = self.sh("findmnt", "-n", "-o", "FSTYPE", str(MOUNT), check=False, timeout=20)
        return r.returncode == 0 and "fuse.glusterfs" in r.stdout

    def log(self, role: str) -> Path:
        return STATE / "logs" / f"{self.name}-{role}.log"


HOST_LIST = [Host(n) for n in range(1, HOSTS + 1)]


def host(n: int) -> Host:
    return HOST_LIST[n - 1]


def _python() -> str:
    return sys.executable


def _stimserver_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STIMSERVER_", "OPENAI_", "ANTHROPIC_"))}
    env.update({"PYTHONPATH": str(ROOT), "STIMSERVER_MASTER_KEY": MASTER_KEY,
                "STIMSERVER_TRUSTED_PROXIES": BRIDGE_IP, "PATH": f"{Path(_python()).parent}:{env.get('PATH', '')}"})
    env.update(extra or {})
    return env


# -- build ---------------------------------------------------------------------------
def build_storage() -> None:
    """glusterd, the bricks and the started replica-3 volume, on the bridge's address."""
    if run("ip", "link", "show", BRIDGE, check=False, quiet=True).returncode != 0:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    for d in ("bricks", "logs", "ns", "nginx"):
        (STATE / d).mkdir(parents=True, exist_ok=True)
    if _glusterd_pid() is None:
        try:  # one we stopped a moment ago may still be exiting (its forked helpers too)
            wait_until(lambda: not _foreign_glusterd(), "no other glusterd", 15, 0.2)
        except TimeoutError:
            raise NotPossible("another glusterd runs on this machine; the harness starts its own") from None
        run("glusterd", "-p", str(STATE / "glusterd.pid"), f"--log-file={STATE / 'logs' / 'glusterd.log'}")
    wait_until(lambda: gluster("volume", "list", check=False).returncode == 0, "glusterd to answer", 60, 0.2)
    if VOLUME not in gluster("volume", "list").stdout.split():
        bricks = []
        for b in range(1, 4):
            path = STATE / "bricks" / f"b{b}"
            path.mkdir(parents=True, exist_ok=True)
            bricks.append(f"{BRIDGE_IP}:{path}")
        gluster("volume", "create", VOLUME, "replica", "3", *bricks, "force")
    for option, value in VOLUME_OPTIONS.items():
        gluster("volume", "set", VOLUME, option, value)
    if "Started" not in gluster("volume", "info", VOLUME).stdout:
        gluster("volume", "start", VOLUME)
    wait_until(lambda: len([b for b in bricks_status() if b["online"]]) == 3, "three bricks online", 60, 0.3)


def build_host(h: Host) -> None:
    """The host's namespaces, its veth pair and address, and its FUSE mount of the volume."""
    if not h.netns.exists():
        run("ip", "netns", "add", h.name)
    if run("ip", "link", "show", f"{h.name}-v", check=False, quiet=True).returncode != 0:
        run("ip", "link", "add", f"{h.name}-v", "type", "veth", "peer", "name", "eth0", "netns", h.name)
        run("ip", "link", "set", f"{h.name}-v", "master", BRIDGE, "up")
        run("ip", "-n", h.name, "addr", "add", f"{h.ip}/24", "dev", "eth0")
    run("ip", "-n", h.name, "link", "set", "eth0", "up")
    run("ip", "-n", h.name, "link", "set", "lo", "up")
    ns_dir = STATE / "ns"
    if not _is_mountpoint(ns_dir):  # persistent namespaces must be bound under a private mount
        run("mount", "--bind", str(ns_dir), str(ns_dir))
    run("mount", "--make-private", str(ns_dir))
    MOUNT.mkdir(parents=True, exist_ok=True)
    if not _is_mountpoint(h.mntns):
        h.mntns.touch()
        h.utsns.touch()
        run("unshare", f"--mount={h.mntns}", f"--uts={h.utsns}", "--propagation", "private",
            "hostname", f"host{h.n}")
    mount_client(h)


def mount_client(h: Host) -> None:
    if not h.mounted():
        h.sh("mount", "-t", "glusterfs", "-o", MOUNT_OPTIONS, f"{BRIDGE_IP}:/{VOLUME}", str(MOUNT), timeout=60)
    wait_until(h.mounted, f"the volume mounted on {h.name}", 30, 0.2)


def start_processes(h: Host, extra_env: dict[str, str] | None = None, *, web: bool = True,
                    worker: bool = True) -> None:
    """``stimserver serve`` (web tier) and ``stimserver worker`` (job tier) on the host."""
    env = _stimserver_env(extra_env)
    h.sh("mkdir", "-p", str(DATA))
    env_file = STATE / f"{h.name}.env"
    env_file.write_text(json.dumps(extra_env or {}))
    py = _python()
    roles: list[tuple[str, list[str], dict[str, str]]] = []
    if web:
        roles.append(("serve", [py, "-m", "stimserver", "serve", "--host", h.ip, "--port", str(WEB_PORT),
                                "--data", str(DATA)], {**env, "STIMSERVER_RUN_JOBS": "false"}))
    if worker:
        roles.append(("worker", [py, "-m", "stimserver", "worker", "--data", str(DATA)], env))
    for role, cmd, role_env in roles:
        with open(h.log(role), "ab") as out:
            _children.append(subprocess.Popen([*h.enter(), *cmd], stdout=out, stderr=subprocess.STDOUT,
                                              env=role_env, start_new_session=True, cwd="/"))
    if web:
        wait_until(lambda: _health(h.ip, WEB_PORT), f"stimserver serve on {h.name}", 60, 0.2)
    if worker:
        wait_until(lambda: b"running jobs from" in h.log("worker").read_bytes(), f"the worker on {h.name}", 60, 0.2)


def _health(ip: str, port: int) -> bool:
    conn = http.client.HTTPConnection(ip, port, timeout=5)
    try:
        conn.request("GET", "/v1/health")
        return conn.getresponse().status == 200
    finally:
        conn.close()


def up(extra_env: dict[str, str] | None = None, web_hosts: Sequence[int] = (1, 2, 3)) -> None:
    """Build everything (after removing what a previous run left)."""
    problem = why_not_possible()
    if problem:
        raise NotPossible(problem)
    down(quiet=True)
    build_storage()
    for h in HOST_LIST:
        build_host(h)
    for h in HOST_LIST:
        start_processes(h, extra_env)
    start_nginx(web_hosts)


# -- nginx ---------------------------------------------------------------------------
def nginx_conf(web_hosts: Sequence[int]) -> str:
    """deploy/nginx.conf with the web hosts as its upstream servers and a loopback listen port."""
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    lines = conf.splitlines(keepends=True)
    servers = [i for i, line in enumerate(lines) if line.lstrip().startswith("server 127.0.0.1:8080")]
    listens = [i for i, line in enumerate(lines) if line.strip() == "listen 80;"]
    if len(servers) != 1 or len(listens) != 1:
        raise RuntimeError("deploy/nginx.conf no longer has one upstream server line and one listen line")
    template = lines[servers[0]]
    lines[servers[0]] = "".join(template.replace("127.0.0.1:8080", f"{host(n).ip}:{WEB_PORT}") for n in web_hosts)
    lines[listens[0]] = f"    listen 127.0.0.1:{NGINX_PORT};\n"
    return "".join(lines)


def start_nginx(web_hosts: Sequence[int] = (1, 2, 3)) -> None:
    from tests.deploy.conftest import MAIN_CONF, nginx_binary

    stop_nginx()
    d = STATE / "nginx"
    (d / "tmp").mkdir(parents=True, exist_ok=True)
    (d / "stimserver.conf").write_text(nginx_conf(web_hosts))
    main = MAIN_CONF.format(dir=d, user="user root;").replace("worker_processes 1;", "worker_processes 2;")
    (d / "nginx.conf").write_text(main)
    with open(d / "nginx.out", "ab") as out:
        _children.append(subprocess.Popen([nginx_binary(), "-p", str(d), "-c", str(d / "nginx.conf"), "-e",
                                           str(d / "error.log")], stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    wait_until(lambda: _health("127.0.0.1", NGINX_PORT), "nginx", 30, 0.1)


def stop_nginx() -> None:
    pid = _pid_in(STATE / "nginx" / "nginx.pid")
    if pid is not None:
        _signal(pid, signal.SIGQUIT)
        try:
            wait_until(lambda: reap() or not _alive(pid), "nginx to stop", 20, 0.1)
        except TimeoutError:
            _signal(pid, signal.SIGKILL)
    (STATE / "nginx" / "nginx.pid").unlink(missing_ok=True)


# -- failure -------------------------------------------------------------------------
def kill_host(h: Host) -> list[int]:
    """SIGKILL every process of the host, its FUSE client included, then unmount its client."""
    killed = h.pids()
    for pid in killed:
        _signal(pid, signal.SIGKILL)
    wait_until(lambda: reap() or not any(_alive(p) for p in killed), f"{h.name}'s processes to die", 30, 0.05)
    if _is_mountpoint(h.mntns):
        h.sh("umount", "-l", str(MOUNT), check=False, timeout=30)
    return killed


def stop_host(h: Host, timeout: float = 30) -> None:
    """SIGTERM the host's stimserver processes (graceful), then whatever is left, then unmount."""
    pids = h.pids()
    fuse = set(_fuse_pids(pids))
    for pid in pids:
        if pid not in fuse:
            _signal(pid, signal.SIGTERM)
    try:
        wait_until(lambda: not any(_alive(p) for p in pids if p not in fuse), f"{h.name} to stop", timeout, 0.1)
    except TimeoutError:
        pass
    kill_host(h)


def revive_host(h: Host, extra_env: dict[str, str] | None = None) -> None:
    mount_client(h)
    env_file = STATE / f"{h.name}.env"
    env = json.loads(env_file.read_text()) if env_file.exists() and extra_env is None else extra_env
    start_processes(h, env)


def _fuse_pids(pids: list[int]) -> list[int]:
    found = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "glusterfs":
                found.append(pid)
        except OSError:
            continue
    return found


def bricks_status() -> list[dict[str, object]]:
    """Each brick: path, pid and whether it is online (``gluster volume status --xml``)."""
    r = gluster("volume", "status", VOLUME, "--xml", check=False, timeout=60)
    if r.returncode != 0 or not r.stdout.strip():
        return []
    found = []
    for node in ET.fromstring(r.stdout).iter("node"):
        path = node.findtext("path") or ""
        if path.startswith(str(STATE)):
            found.append({"path": path, "pid": int(node.findtext("pid") or -1),
                          "online": node.findtext("status") == "1"})
    return found


def kill_brick(number: int) -> int:
    """SIGKILL brick ``number`` (1–3); its pid."""
    path = str(STATE / "bricks" / f"b{number}")
    brick = next(b for b in bricks_status() if b["path"] == path)
    pid = int(str(brick["pid"]))
    _signal(pid, signal.SIGKILL)
    wait_until(lambda: not _alive(pid), "the brick to die", 20, 0.05)
    return pid


def restart_bricks(tries: int = 5) -> None:
    """``volume start force`` until all three bricks are online (a start right after a brick
    died can answer success while glusterd still counts the dead one as running)."""
    for attempt in range(tries):
        gluster("volume", "start", VOLUME, "force")
        try:
            wait_until(lambda: len([b for b in bricks_status() if b["online"]]) == 3, "three bricks online", 10, 0.3)
            return
        except TimeoutError:
            if attempt == tries - 1:
                raise


def heal(timeout: float = 120) -> float:
    """Ask for an index heal (retried until the self-heal daemon has reconnected to every brick)
    and wait until nothing is left to heal; the seconds it took."""
    started = time.monotonic()
    wait_until(lambda: gluster("volume", "heal", VOLUME, check=False).returncode == 0, "the heal to launch",
               timeout / 2, 1.0)
    wait_until(lambda: heal_pending() == 0, "self-heal to finish", timeout / 2, 0.5)
    return time.monotonic() - started


def heal_pending() -> int:
    """Entries still to be healed, over all bricks (``gluster volume heal … info``)."""
    out = gluster("volume", "heal", VOLUME, "info", timeout=60).stdout
    counts = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Number of entries")]
    if len(counts) != 3 or not all(c.isdigit() for c in counts):
        return -1  # a brick not reachable yet
    return sum(int(c) for c in counts)


# -- teardown ------------------------------------------------------------------------
def reap() -> None:
    """Collect the exit status of the children that ended (a killed host's, a stopped nginx)."""
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)


def down(quiet: bool = False) -> None:
    """Remove everything ``up`` makes, whatever is there; safe to run again and again."""
    say = (lambda *_: None) if quiet else (lambda *a: print(*a, file=sys.stderr))
    stop_nginx()
    for h in HOST_LIST:
        if h.mntns.exists() and _is_mountpoint(h.mntns):
            say(f"stopping {h.name}")
            stop_host(h, timeout=15)
            run("umount", str(h.mntns), check=False, quiet=True)
        if h.utsns.exists() and _is_mountpoint(h.utsns):
            run("umount", str(h.utsns), check=False, quiet=True)
        run("ip", "link", "del", f"{h.name}-v", check=False, quiet=True)
        if h.netns.exists():
            run("ip", "netns", "del", h.name, check=False, quiet=True)
    ns_dir = STATE / "ns"
    if _is_mountpoint(ns_dir):
        run("umount", str(ns_dir), check=False, quiet=True)
    have_volume = Path("/var/lib/glusterd/vols", VOLUME).exists()
    if have_volume and _glusterd_pid() is None and not _foreign_glusterd() and shutil.which("glusterd"):
        (STATE / "logs").mkdir(parents=True, exist_ok=True)
        run("glusterd", "-p", str(STATE / "glusterd.pid"), f"--log-file={STATE / 'logs' / 'glusterd.log'}",
            check=False)
        try:
            wait_until(lambda: gluster("volume", "list", check=False).returncode == 0, "glusterd", 30, 0.2)
        except TimeoutError:
            pass
    if have_volume and _glusterd_pid() is not None:
        say(f"deleting volume {VOLUME}")
        brick_pids = [int(str(b["pid"])) for b in bricks_status() if int(str(b["pid"])) > 0]
        gluster("volume", "stop", VOLUME, "force", check=False)
        gluster("volume", "delete", VOLUME, check=False)
        for pid in brick_pids:
            _signal(pid, signal.SIGKILL)
    for pid in _volume_daemon_pids():
        _signal(pid, signal.SIGKILL)
    pid = _glusterd_pid()
    if pid is not None:
        say("stopping glusterd")
        _signal(pid, signal.SIGTERM)
        try:
            wait_until(lambda: not _alive(pid), "glusterd to stop", 20, 0.1)
        except TimeoutError:
            _signal(pid, signal.SIGKILL)
    run("ip", "link", "del", BRIDGE, check=False, quiet=True)
    for leftover in (Path("/var/run/gluster/vols") / VOLUME, Path("/var/run/gluster/shd") / VOLUME):
        shutil.rmtree(leftover, ignore_errors=True)
    if STATE.exists() and not any(_is_mountpoint(p) for p in (ns_dir, *(ns_dir.glob("*") if ns_dir.is_dir() else []))):
        shutil.rmtree(STATE, ignore_errors=True)
    if MOUNT.exists() and not _is_mountpoint(MOUNT):
        shutil.rmtree(MOUNT, ignore_errors=True)
    for child in list(_children):
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            continue  # still running: not ours to chase by name; status shows it
    reap()


def status() -> dict[str, object]:
    out: dict[str, object] = {"glusterd": _glusterd_pid(), "bricks": bricks_status() if _glusterd_pid() else []}
    for h in HOST_LIST:
        if not _is_mountpoint(h.mntns):
            out[h.name] = "absent"
            continue
        out[h.name] = {"ip": h.ip, "mounted": h.mounted(), "processes": len(h.pids()),
                       "web": _try(lambda h=h: _health(h.ip, WEB_PORT))}
    out["nginx"] = {"port": NGINX_PORT, "up": _try(lambda: _health("127.0.0.1", NGINX_PORT))}
    return out


# -- small helpers ---------------------------------------------------------------------
def _try(fn: Callable[[], bool]) -> bool:
    try:
        return fn()
    except OSError:
        return False


def _is_mountpoint(path: Path) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == str(path) for line in f)
    except OSError:
        return False


def _pid_in(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def _glusterd_pid() -> int | None:
    pid = _pid_in(STATE / "glusterd.pid")
    if pid is not None and Path(f"/proc/{pid}/comm").read_text().strip() == "glusterd":
        return pid
    return None


def _foreign_glusterd() -> bool:
    """A glusterd this harness did not start (looked up by name, never signalled)."""
    ours = _glusterd_pid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != ours:
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "glusterd" and _alive(int(entry)):
                    return True
            except OSError:
                continue
    return False


def _volume_daemon_pids() -> list[int]:
    """Brick and self-heal processes of our volume, from the pid files glusterd wrote for them."""
    found = []
    for folder in (Path("/var/run/gluster/vols") / VOLUME, Path("/var/run/gluster/shd") / VOLUME):
        for pidfile in folder.glob("*.pid") if folder.is_dir() else []:
            pid = _pid_in(pidfile)
            if pid is not None:
                found.append(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/multihost", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build the volume, three hosts and nginx (removing any earlier run first)")
    sub.add_parser("down", help="remove all of it (idempotent)")
    sub.add_parser("status", help="what is running")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up()
            print(f"up: nginx on http://127.0.0.1:{NGINX_PORT} → {', '.join(h.ip for h in HOST_LIST)}; "
                  f"data on {DATA} inside each host; master key {MASTER_KEY}; "
                  f"a shell on host 1: {' '.join(host(1).enter())} bash")
        elif args.command == "down":
            down()
            print("down")
        else:
            print(json.dumps(status(), indent=2, default=str))
    except NotPossible as e:
        print(f"scripts/multihost: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
