"""Running the app: checks before binding, the startup hint, graceful shutdown."""
from __future__ import annotations

import errno
import os
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from . import __version__
from .app import create_app
from .config import Settings
from .logs import JsonAccessLogger
from .masterkey import MasterKeyMissing, ensure_master_key

__all__ = ["serve", "check_data_dir"]


def check_data_dir(path: Path) -> str | None:
    """Why ``path`` cannot hold stimserver's data, or None if it can."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"cannot create data directory {path}: {e.strerror}"
    if not path.is_dir():
        return f"data directory {path} is not a directory"
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-", delete=True) as f:
            f.write(b"x")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return f"data directory {path} is not writable: {e.strerror}"
    return None


def _shown(path: Path) -> str:
    """The path as the user would type it: relative below the current folder, else absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _hint(settings: Settings, created: bool) -> str:
    url = f"http://{settings.host if settings.host not in ('0.0.0.0', '::') else '127.0.0.1'}:{settings.port}"
    if settings.master_key:
        auth = '"Authorization: Bearer $STIMSERVER_MASTER_KEY"'
        where = "the master key is the one in STIMSERVER_MASTER_KEY"
    else:
        key_file = _shown(settings.resolved_master_key_file)
        auth = f'"Authorization: Bearer $(cat {key_file})"'
        where = f"the master key is in {key_file}" + (" (just created, mode 600)" if created else "")
    return (
        f"stimserver {__version__}: serving {_shown(settings.data_dir)} on {url}\n"
        f"  {where}; it may act as any user with X-User-Id.\n"
        f"  try:  curl -H {auth} -H 'X-User-Id: demo' \\\n"
        f"          '{url}/v1/repo/demo/targets/geography/stim/output?limit=2'\n"
        f"  a key of your own:  stimserver keys create --user demo --data {_shown(settings.data_dir)}\n"
    )


def serve(settings: Settings) -> int:
    problem = check_data_dir(settings.data_dir)
    if problem:
        print(f"stimserver: {problem}", file=sys.stderr)
        return 2
    try:
        created = ensure_master_key(settings)
        app = create_app(settings)
    except (MasterKeyMissing, OSError) as e:
        print(f"stimserver: {e}", file=sys.stderr)
        return 2
    print(_hint(settings, created), file=sys.stderr, flush=True)
    try:
        web.run_app(
            app, host=settings.host, port=settings.port, print=None, shutdown_timeout=30,
            access_log_class=JsonAccessLogger,
            access_log=web.access_logger if settings.access_log else None,
        )
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            print(f"stimserver: port {settings.port} on {settings.host} is already in use", file=sys.stderr)
        else:
            print(f"stimserver: cannot listen on {settings.host}:{settings.port}: {e.strerror}", file=sys.stderr)
        return 2
    return 0
