"""Running the app: checks before binding, one or several processes, graceful shutdown.

``serve(settings)`` checks the data directory and the master key without writing
anything, binds the listening socket itself, and only then creates the data directory
and the key file; so an unusable directory, a bad key or a taken port is refused with
one clear line and leaves no file behind (what it created before a later refusal, it
removes again). Then, with ``settings.workers`` processes:

* ``workers == 1``: the app runs in this process on that socket;
* ``workers > 1``: N forked children each build their own app (``create_app``) and
  accept on the inherited socket; the kernel hands each new connection to one of them.
  The parent only supervises: it restarts a child that died, and on SIGTERM/SIGINT it
  closes its copy of the socket and passes SIGTERM on. Children share nothing but the
  data directory, which is built for that (keys and records are re-read when another
  process changed them, jobs are claimed with flocks), and a metrics directory.

SIGTERM (or Ctrl-C) drains: the socket closes, requests in flight finish (up to
``DRAIN_SECONDS``), then the job runner hands its running jobs back as ``pending`` for
the next start to resume.
"""
from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from .. import __version__
from ..config import Settings
from ..store.atomic import sweep_temp_files
from .masterkey import MasterKeyMissing, ensure_master_key
from .preflight import check_data_dir, first_missing, probe_data_dir, probe_master_key, probe_prices, undo

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["serve", "check_data_dir", "probe_data_dir", "bind", "DRAIN_SECONDS"]

DRAIN_SECONDS = 30.0      # how long SIGTERM waits for requests in flight
KEEPALIVE_SECONDS = 75.0  # idle keep-alive connections close after this (nginx's pool: 60 s)
BACKLOG = 1024
QUICK_DEATH_SECONDS = 5.0  # a child dying this soon after its start counts as a failed start
MAX_QUICK_DEATHS = 5       # in a row: then the supervisor gives up instead of looping


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; OSError if that is impossible (e.g. the port is taken).

    No SO_REUSEPORT: a second server on the same port must fail, not share it silently.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebinding over TIME_WAIT is fine
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _shown(path: Path) -> str:
    """The path as the user would type it: relative below the current folder, else absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _hint(settings: Settings, created: bool, workers: int = 1) -> str:
    url = f"http://{settings.host if settings.host not in ('0.0.0.0', '::') else '127.0.0.1'}:{settings.port}"
    if settings.master_key:
        auth = '"Authorization: Bearer $STIMSERVER_MASTER_KEY"'
        where = "the master key is the one in STIMSERVER_MASTER_KEY"
    else:
        key_file = _shown(settings.resolved_master_key_file)
        auth = f'"Authorization: Bearer $(cat {key_file})"'
        where = f"the master key is in {key_file}" + (" (just created, mode 600)" if created else "")
    processes = f" with {workers} worker processes" if workers > 1 else ""
    return (
        f"stimserver {__version__}: serving {_shown(settings.data_dir)} on {url}{processes}\n"
        f"  {where}; it may act as any user with X-User-Id.\n"
        f"  try:  curl -H {auth} -H 'X-User-Id: demo' \\\n"
        f"          '{url}/v1/repo/demo/targets/geography/stim/output?limit=2'\n"
        f"  a key of your own:  stimserver keys create --user demo --data {_shown(settings.data_dir)}\n"
    )


def _say(message: str) -> None:
    print(f"stimserver: {message}", file=sys.stderr, flush=True)


def serve(settings: Settings, workers: int | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; the exit status (2: refused to start).

    ``workers`` overrides ``settings.workers`` (kept for callers that pass it).
    """
    workers = settings.workers if workers is None else workers
    if workers < 1:
        _say("--workers must be at least 1")
        return 2
    problem = probe_data_dir(settings.data_dir) or probe_master_key(settings) or probe_prices(settings.data_dir)
    if problem:
        _say(problem)
        return 2
    try:
        sock = bind(settings.host, settings.port)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            _say(f"port {settings.port} on {settings.host} is already in use (is another server running?)")
        else:
            _say(f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}")
        return 2
    try:
        return _serve_on(settings, sock, workers)
    finally:
        sock.close()


def _serve_on(settings: Settings, sock: socket.socket, workers: int) -> int:
    """Create what the data directory lacks, then serve; undo the creation if the start fails."""
    made = [p for p in {first_missing(settings.data_dir), first_missing(settings.resolved_master_key_file.parent)}
            if not p.exists()]
    serving = created = False
    try:
        problem = check_data_dir(settings.data_dir)
        if problem:
            _say(problem)
            return 2
        swept = sweep_temp_files(settings.data_dir)  # half-written records of a crash: never renamed in
        if swept:
            _say(f"removed {swept} temp files a crash left in {settings.data_dir}")
        try:
            created = ensure_master_key(settings)
        except (MasterKeyMissing, OSError) as e:
            _say(str(e))
            return 2
        if workers == 1:
            try:
                app = _make_app(settings)
            except (MasterKeyMissing, OSError) as e:
                _say(str(e))
                return 2
            print(_hint(settings, created), file=sys.stderr, flush=True)
            serving = True
            asyncio.run(_serve(app, sock, settings, (signal.SIGTERM, signal.SIGINT)))
            return 0
        try:
            metrics_dir, own_dir = _metrics_dir()
        except OSError as e:
            _say(f"cannot use PROMETHEUS_MULTIPROC_DIR {os.environ.get('PROMETHEUS_MULTIPROC_DIR')}: "
                 f"{e.strerror or e}")
            return 2
        try:
            print(_hint(settings, created, workers), file=sys.stderr, flush=True)
            serving = True
            return _supervise(settings, sock, workers)
        finally:
            if own_dir:
                shutil.rmtree(metrics_dir, ignore_errors=True)
    finally:
        if not serving:
            undo(made, settings, created=created)


def _make_app(settings: Settings) -> web.Application:
    from .app import create_app  # not at import time: _metrics_dir must come first

    return create_app(settings)


def _metrics_dir() -> tuple[str, bool]:
    """The directory the workers' metrics meet in (see metrics.py); True if made here.

    Must be set before prometheus-client is imported, which happens with the app.
    """
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        if not os.access(given, os.W_OK):
            raise PermissionError(errno.EACCES, "not writable")
        return given, False
    made = tempfile.mkdtemp(prefix="stimserver-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    return made, True


async def _serve(app, sock: socket.socket, settings: Settings, stop_signals: tuple[int, ...],
                 parent: int | None = None) -> None:
    """Serve ``app`` on ``sock`` until a stop signal (or the parent's death), then drain."""
    from aiohttp import web

    from .logs import JsonAccessLogger
    from .protocol import SafeAppRunner

    # SafeAppRunner: malformed requests get the JSON error shape, never logged with their bytes (protocol.py)
    runner = SafeAppRunner(app, handle_signals=False, shutdown_timeout=DRAIN_SECONDS,
                           keepalive_timeout=KEEPALIVE_SECONDS, access_log_class=JsonAccessLogger,
                           access_log=web.access_logger if settings.access_log else None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock, backlog=BACKLOG).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in stop_signals:
            loop.add_signal_handler(sig, stop.set)
        if parent is None:
            await stop.wait()
        else:
            while not stop.is_set() and os.getppid() == parent:
                try:
                    await asyncio.wait_for(stop.wait(), 1.0)
                except TimeoutError:
                    pass
    finally:
        await runner.cleanup()  # closes the socket, drains requests in flight, stops the job runner


# -- several processes ----------------------------------------------------------------------

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _supervise(settings: Settings, sock: socket.socket, workers: int) -> int:
    parent = os.getpid()
    children: dict[int, float] = {}
    state = {"stopping": False}

    def stop(signum: int, frame: object) -> None:
        if not state["stopping"]:
            state["stopping"] = True
            sock.close()  # the port stops taking connections once the children close theirs too
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def spawn() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)  # no stop() between fork and bookkeeping
        try:
            pid = os.fork()
            if pid == 0:
                _child(settings, sock, parent)
            children[pid] = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(workers):
        spawn()
    quick_deaths = 0
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        started = children.pop(pid, None)
        if started is None or state["stopping"]:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        quick_deaths = quick_deaths + 1 if time.monotonic() - started < QUICK_DEATH_SECONDS else 0
        if quick_deaths >= MAX_QUICK_DEATHS:
            _say(f"worker processes keep exiting at start (last: {_exit_reason(code)}); giving up")
            status = 1
            stop(signal.SIGTERM, None)
            continue
        _say(f"worker process {pid} exited ({_exit_reason(code)}); starting another")
        if quick_deaths:
            time.sleep(0.5)
        if not state["stopping"]:  # a stop signal may have come during the pause
            spawn()
    return status


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


def _child(settings: Settings, sock: socket.socket, parent: int) -> NoReturn:
    """A worker process: serve until SIGTERM from the parent (or its death), then leave."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which sends SIGTERM
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        app = _make_app(settings)
        asyncio.run(_serve(app, sock, settings, (signal.SIGTERM,), parent=parent))
        code = 0
    except BaseException as e:  # noqa: BLE001 - reported, then the process ends; never back into the parent's code
        _say(f"worker process {os.getpid()} failed: {type(e).__name__}: {e}")
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
