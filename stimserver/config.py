"""Settings: every limit and knob in one frozen object.

Filled from defaults, then environment variables, then CLI flags (the CLI passes
overrides to ``Settings.from_env``). The table ``SETTINGS`` is the single source of
names, environment variables, defaults, ranges, CLI flags and help text: the CLI
builds its options from it and docs/settings.md's table is checked against it.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["SETTINGS", "Secret", "Setting", "Settings", "setting"]

OpenAIServer = Literal["openai", "transformers"]
LLMProvider = Literal["auto", "anthropic", "openai"]
AnthropicCache = Literal["5m", "1h", "off"]


class Secret(str):
    """A string that never shows itself in a repr or a log line."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('**********')"


@dataclass(frozen=True)
class Setting:
    """One knob: its field, environment variable, default and help, and how it is checked.

    ``kind`` is the type a raw value is cast to; ``minimum``/``maximum`` bound numbers;
    ``choices`` bound text (compared in lower case); ``flag`` is the CLI option that sets
    it, for the commands that offer one (None: environment only, e.g. secrets).
    """

    name: str
    env: str
    default: Any
    help: str
    kind: type = str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    flag: str | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "STIMSERVER_DATA", "./data", "data directory (jobs, records, keys)", Path,
            flag="--data"),
    Setting("host", "STIMSERVER_HOST", "127.0.0.1", "address to listen on", flag="--host"),
    Setting("port", "STIMSERVER_PORT", 8080, "port to listen on", int, 0, 65535, flag="--port"),
    Setting("workers", "STIMSERVER_WORKERS", 1, "server processes sharing the port (e.g. one per core)",
            int, 1, 256, flag="--workers"),
    Setting("master_key", "STIMSERVER_MASTER_KEY", None,
            "master API key; if unset, read from master_key_file (created on first start)", Secret),
    Setting("master_key_file", "STIMSERVER_MASTER_KEY_FILE", None,
            "file holding the master key (default: DATA/master.key)", Path),
    Setting("master_user", "STIMSERVER_MASTER_USER", "admin",
            "the user the master key acts as when it names no other user"),
    Setting("default_page_size", "STIMSERVER_DEFAULT_PAGE_SIZE", 100, "limit when a request gives none", int, 1),
    Setting("max_page_size", "STIMSERVER_MAX_PAGE_SIZE", 1000, "largest limit a request may ask for", int, 1),
    Setting("max_body_bytes", "STIMSERVER_MAX_BODY_BYTES", 10 * 1024 * 1024,
            "largest request body accepted (413 beyond)", int, 1),
    Setting("access_log", "STIMSERVER_ACCESS_LOG", True, "write one JSON access-log line per request", bool,
            flag="--access-log/--no-access-log"),
    Setting("trusted_proxies", "STIMSERVER_TRUSTED_PROXIES", None,
            "comma-separated proxy IPs/CIDRs whose X-Forwarded-For/-Proto are believed (default: none)"),
    Setting("run_jobs", "STIMSERVER_RUN_JOBS", True,
            "run stim jobs inside `serve`; off for a web tier whose jobs run in `stimserver worker`s", bool),
    Setting("max_jobs", "STIMSERVER_MAX_JOBS", 8, "jobs one runner (serve or worker) runs at once", int, 1, 10_000,
            flag="--max-jobs"),
    Setting("job_orphan_seconds", "STIMSERVER_JOB_ORPHAN_SECONDS", 30,
            "a job with no live runner on the data directory is failed this long after a status read "
            "first finds it orphaned", int, 0),
    Setting("llm_provider", "STIMSERVER_LLM_PROVIDER", "auto",
            "auto (claude* models to Anthropic, others to OpenAI-compatible), anthropic or openai",
            choices=("auto", "anthropic", "openai")),
    Setting("anthropic_api_key", "ANTHROPIC_API_KEY", None, "API key for Anthropic models", Secret),
    Setting("anthropic_base_url", "ANTHROPIC_BASE_URL", None,
            "Anthropic API base URL (default: https://api.anthropic.com)"),
    Setting("openai_api_key", "OPENAI_API_KEY", None, "API key for OpenAI-compatible models", Secret),
    Setting("openai_base_url", "OPENAI_BASE_URL", None,
            "OpenAI-compatible base URL, e.g. a local vLLM or Ollama (default: https://api.openai.com/v1)"),
    Setting("openai_server", "STIMSERVER_OPENAI_SERVER", "openai",
            "what answers at the OpenAI-compatible URL: openai (the OpenAI API, vLLM, Ollama, llama.cpp: they "
            "sample at a temperature above 0) or transformers (transformers serve: greedy unless a request asks "
            "it to sample, which stimserver then does)", choices=("openai", "transformers")),
    Setting("anthropic_cache", "STIMSERVER_ANTHROPIC_CACHE", "5m",
            "prompt caching of Anthropic requests: the shared prefix (tools, system prompt, earlier turns) is "
            "cached for 5m or 1h after its last use; off sends no cache_control", choices=("5m", "1h", "off")),
    Setting("llm_timeout", "STIMSERVER_LLM_TIMEOUT", 120.0, "seconds one LLM request may take", float),
    Setting("llm_max_retries", "STIMSERVER_LLM_MAX_RETRIES", 4,
            "retries of a failed LLM request (connection, timeout, 408/409/429/5xx), with backoff and retry-after",
            int),
    Setting("llm_max_concurrent", "STIMSERVER_LLM_MAX_CONCURRENT", 64,
            "LLM requests in flight at once per provider (base URL + key), across all jobs of a process", int, 1,
            10_000),
    Setting("llm_requests_per_minute", "STIMSERVER_LLM_REQUESTS_PER_MINUTE", 0,
            "requests per minute per provider and process (0: no limit)", int, 0),
    Setting("llm_tokens_per_minute", "STIMSERVER_LLM_TOKENS_PER_MINUTE", 0,
            "input + output tokens per minute per provider and process (0: no limit)", int, 0),
    Setting("batch_poll_seconds", "STIMSERVER_BATCH_POLL_SECONDS", 30.0,
            "seconds between two polls of a provider batch (targets with batch: true)", float, 0.01, 3600),
    Setting("batch_size", "STIMSERVER_BATCH_SIZE", 1000,
            "requests per provider batch; a job's results are committed a batch at a time", int, 1, 50_000),
    Setting("search_scan_bytes", "STIMSERVER_SEARCH_SCAN_BYTES", 64 * 1024 * 1024,
            "output bytes one search request scans at most (the client continues from next_offset)", int, 4096),
    Setting("ui_session_seconds", "STIMSERVER_UI_SESSION_SECONDS", 12 * 3600,
            "how long a viewer sign-in (its session cookie) lasts", int, 60, 31 * 24 * 3600),
    Setting("models_dir", "STIMSERVER_MODELS_DIR", None,
            "where bakes look for base models by name, several separated by ':' (default: DATA/models)"),
    Setting("max_bakes", "STIMSERVER_MAX_BAKES", 1,
            "bakes one runner (serve or worker) trains at once, each in its own trainer process", int, 0, 64),
    Setting("bake_processes", "STIMSERVER_BAKE_PROCESSES", 1,
            "trainer processes per bake (more than 1: torchrun, one per GPU, or gloo on CPUs)", int, 1, 1024),
    Setting("bake_torchrun", "STIMSERVER_BAKE_TORCHRUN", "--standalone",
            "torchrun's options for a bake of several processes (several machines: --nnodes, --node-rank and "
            "--rdzv-endpoint; docs/training.md)"),
    Setting("bake_threads", "STIMSERVER_BAKE_THREADS", 0,
            "CPU threads per trainer process (0: torch's default, one per core)", int, 0, 1024),
    Setting("trainer_python", "STIMSERVER_TRAINER_PYTHON", None,
            "the Python that runs trainer processes; it needs the train extra (default: the server's own)"),
    Setting("bake_eval_samples", "STIMSERVER_BAKE_EVAL_SAMPLES", 16,
            "held-out questions a bake answers before and after, for its before/after comparison", int, 0, 1000),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str) -> Setting:
    """The declaration of setting ``name``; KeyError for an unknown one."""
    return _BY_NAME[name]


def _cast(s: Setting, raw: object) -> Any:
    """``raw`` (text from the environment, or a CLI value) as ``s.kind``; ValueError naming the variable."""
    if raw is None:
        return None
    if s.kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{s.env} must be true or false, not {raw!r}")
    if s.kind is int:
        if isinstance(raw, int):
            return raw
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ValueError(f"{s.env} must be a whole number, not {raw!r}") from None
    if s.kind is float:
        try:
            return float(str(raw).strip())
        except ValueError:
            raise ValueError(f"{s.env} must be a number of seconds, not {raw!r}") from None
    if s.choices is not None:
        text = str(raw).strip().lower()
        if text not in s.choices:
            raise ValueError(f"{s.env} must be {', '.join(s.choices[:-1])} or {s.choices[-1]}, not {text!r}")
        return text
    if s.kind is Path:
        return Path(raw) if isinstance(raw, (str, os.PathLike)) else raw
    return s.kind(raw)


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
    """The running configuration; defaults equal ``SETTINGS`` (a test checks it)."""

    data_dir: Path = Path("./data")
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
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
    llm_provider: LLMProvider = "auto"
    anthropic_api_key: Secret | None = field(default=None, repr=False)
    anthropic_base_url: str | None = None
    openai_api_key: Secret | None = field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_server: OpenAIServer = "openai"
    anthropic_cache: AnthropicCache = "5m"
    llm_timeout: float = 120.0
    llm_max_retries: int = 4
    llm_max_concurrent: int = 64
    llm_requests_per_minute: int = 0
    llm_tokens_per_minute: int = 0
    batch_poll_seconds: float = 30.0
    batch_size: int = 1000
    search_scan_bytes: int = 64 * 1024 * 1024
    ui_session_seconds: int = 12 * 3600
    models_dir: str | None = None
    max_bakes: int = 1
    bake_processes: int = 1
    bake_torchrun: str = "--standalone"
    bake_threads: int = 0
    trainer_python: str | None = None
    bake_eval_samples: int = 16

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``environ``, then the non-None ``overrides`` (CLI flags).

        An environment variable that is empty (or only blanks) counts as unset.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for s in SETTINGS:
            raw = overrides.get(s.name)
            if raw is None:
                raw = environ.get(s.env, "").strip() or None
            values[s.name] = _cast(s, raw) if raw is not None else s.default
        return cls.build(**values)

    @classmethod
    def build(cls, **values: Any) -> Settings:
        """Normalise types (paths, secrets) and check ranges; ValueError names what is wrong."""
        for name in values:
            if name not in _BY_NAME:
                raise TypeError(f"unknown setting {name!r}")
        merged: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(cls)}
        merged.update({name: _cast(_BY_NAME[name], value) for name, value in values.items()})
        merged["data_dir"] = Path(merged["data_dir"]).resolve()
        for s in SETTINGS:
            value = merged[s.name]
            if s.kind is not bool and s.kind in (int, float) and value is not None:
                _check_range(s, value)
        if not merged["default_page_size"] <= merged["max_page_size"]:
            raise ValueError("default_page_size must be between 1 and max_page_size")
        if merged["trusted_proxies"] is not None:
            merged["trusted_proxies"] = _proxy_list(merged["trusted_proxies"])
        timeout = merged["llm_timeout"]
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"STIMSERVER_LLM_TIMEOUT must be a positive number of seconds, not {timeout!r}")
        if merged["llm_max_retries"] < 0:
            raise ValueError(f"STIMSERVER_LLM_MAX_RETRIES must be 0 or more, not {merged['llm_max_retries']}")
        return cls(**merged)

    @property
    def resolved_master_key_file(self) -> Path:
        return self.master_key_file or self.data_dir / "master.key"

    @property
    def models_dirs(self) -> list[Path]:
        """Where bakes look for base models by name (``models_dir``, else DATA/models)."""
        if not self.models_dir:
            return [self.data_dir / "models"]
        return [Path(part).expanduser().resolve() for part in self.models_dir.split(":") if part.strip()]


def _check_range(s: Setting, value: float) -> None:
    if s.minimum is not None and value < s.minimum:
        bound = "0 or more" if s.minimum == 0 else f"at least {s.minimum:g}"
        raise ValueError(f"{s.name} must be {bound}")
    if s.maximum is not None and value > s.maximum:
        raise ValueError(f"{s.name} must be at most {s.maximum:g}")
