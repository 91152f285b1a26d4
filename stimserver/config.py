"""Settings: every limit and knob in one frozen object.

Filled from defaults, then environment variables, then CLI flags (the CLI passes
overrides to ``Settings.from_env``). The table ``SETTINGS`` is the single source of
names, defaults and help text; the README's settings table is checked against it.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class Secret(str):
    """A string that never shows itself in a repr or a log line."""

    def __repr__(self) -> str:
        return "Secret('**********')"


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "STIMSERVER_DATA", "./data", "data directory (jobs, records, keys)"),
    Setting("host", "STIMSERVER_HOST", "127.0.0.1", "address to listen on"),
    Setting("port", "STIMSERVER_PORT", 8080, "port to listen on"),
    Setting("master_key", "STIMSERVER_MASTER_KEY", None,
            "master API key; if unset, read from master_key_file (created on first start)"),
    Setting("master_key_file", "STIMSERVER_MASTER_KEY_FILE", None,
            "file holding the master key (default: DATA/master.key)"),
    Setting("master_user", "STIMSERVER_MASTER_USER", "admin",
            "the user the master key acts as when it names no other user"),
    Setting("default_page_size", "STIMSERVER_DEFAULT_PAGE_SIZE", 100, "limit when a request gives none"),
    Setting("max_page_size", "STIMSERVER_MAX_PAGE_SIZE", 1000, "largest limit a request may ask for"),
    Setting("max_body_bytes", "STIMSERVER_MAX_BODY_BYTES", 10 * 1024 * 1024,
            "largest request body accepted (413 beyond)"),
    Setting("access_log", "STIMSERVER_ACCESS_LOG", True, "write one JSON access-log line per request"),
    Setting("trusted_proxies", "STIMSERVER_TRUSTED_PROXIES", None,
            "comma-separated proxy IPs/CIDRs whose X-Forwarded-For/-Proto are believed (default: none)"),
    Setting("run_jobs", "STIMSERVER_RUN_JOBS", True,
            "run stim jobs inside `serve`; off for a web tier whose jobs run in `stimserver worker`s"),
    Setting("max_jobs", "STIMSERVER_MAX_JOBS", 8, "jobs one runner (serve or worker) runs at once"),
    Setting("job_orphan_seconds", "STIMSERVER_JOB_ORPHAN_SECONDS", 30,
            "a job with no live runner on the data directory is failed this long after a status read "
            "first finds it orphaned"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def _cast(setting: Setting, raw: Any) -> Any:
    default = setting.default
    if raw is None:
        return None
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{setting.env} must be true or false, got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{setting.env} must be an integer, got {raw!r}") from None
    return str(raw)


def _proxy_list(raw: str) -> str | None:
    """``raw`` with each item checked as an IP address or network; None when it names none."""
    items = [item.strip() for item in str(raw).split(",") if item.strip()]
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"STIMSERVER_TRUSTED_PROXIES: {item!r} is not an IP address or network") from None
    return ",".join(items) or None


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = 8080
    master_key: Secret | None = field(default=None, repr=False)
    master_key_file: Path | None = None
    master_user: str = "admin"
    default_page_size: int = 100
    max_page_size: int = 1000
    max_body_bytes: int = 10 * 1024 * 1024
    access_log: bool = True
    trusted_proxies: str | None = None
    run_jobs: bool = True
    max_jobs: int = 8
    job_orphan_seconds: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults, then ``environ``, then the non-None ``overrides`` (CLI flags)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for s in SETTINGS:
            raw = overrides.get(s.name)
            if raw is None:
                raw = environ.get(s.env)
            values[s.name] = _cast(s, raw if raw is not None else s.default)
        return cls.build(**values)

    @classmethod
    def build(cls, **values: Any) -> "Settings":
        """Normalise types (paths, secrets) and check ranges."""
        for name in values:
            if name not in _BY_NAME:
                raise TypeError(f"unknown setting {name!r}")
        merged = {**{f.name: getattr(cls, f.name, None) for f in dataclasses.fields(cls)}, **values}
        merged["data_dir"] = Path(merged["data_dir"]).resolve()
        if merged["master_key_file"] is not None:
            merged["master_key_file"] = Path(merged["master_key_file"])
        if merged["master_key"] is not None:
            merged["master_key"] = Secret(merged["master_key"])
        if not 1 <= merged["max_page_size"]:
            raise ValueError("max_page_size must be at least 1")
        if not 1 <= merged["default_page_size"] <= merged["max_page_size"]:
            raise ValueError("default_page_size must be between 1 and max_page_size")
        if merged["trusted_proxies"] is not None:
            merged["trusted_proxies"] = _proxy_list(merged["trusted_proxies"])
        if merged["max_jobs"] < 1:
            raise ValueError("max_jobs must be at least 1")
        if merged["job_orphan_seconds"] < 0:
            raise ValueError("job_orphan_seconds must be 0 or more")
        return cls(**merged)

    @property
    def resolved_master_key_file(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"
