"""The ``stimserver`` command: serve, worker, keys, import, datasets.

click gives us subcommands, ``envvar=`` fallbacks and generated ``--help`` for free
(the same choice Datasette made). Every option that sets a ``Settings`` field is built
from its declaration in ``config.SETTINGS`` (flag, environment variable, default, range,
help), so nothing here repeats a name or a default; ``--help`` shows each variable.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import __version__
from .config import Settings, setting

if TYPE_CHECKING:
    from .api.auth import KeyStore
    from .store.records import Records

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])


def setting_option(name: str) -> Callable[[_F], _F]:
    """The click option of setting ``name``, generated from its declaration."""
    s = setting(name)
    if s.flag is None:
        raise ValueError(f"setting {name!r} has no CLI flag")
    kwargs: dict[str, Any] = {"envvar": s.env, "show_envvar": True, "default": s.default, "show_default": True,
                              "help": s.help}
    if s.kind is int:
        lo, hi = (None if b is None else int(b) for b in (s.minimum, s.maximum))
        kwargs["type"] = click.IntRange(lo, hi)
    elif s.kind is Path:
        kwargs["type"] = click.Path(file_okay=False, path_type=Path)
    elif s.kind is not bool:
        kwargs["type"] = click.Choice(s.choices, case_sensitive=False) if s.choices else str
    return click.option(s.flag, s.name, **kwargs)


DATA_OPTION = setting_option("data_dir")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stimserver")
def main() -> None:
    """stimserver: a self-hosted, Bread-compatible stim server."""


@main.command()
@setting_option("host")
@setting_option("port")
@DATA_OPTION
@setting_option("access_log")
@setting_option("workers")
def serve(host: str, port: int, data_dir: Path, access_log: bool, workers: int) -> None:
    """Serve the API on HOST:PORT from the data directory.

    SIGTERM or Ctrl-C stops it gracefully: requests in flight finish, running jobs are
    handed back and resume on the next start.
    """
    from .web.memory import tune_malloc
    from .web.server import serve as run_server

    settings = _settings(data_dir=data_dir, host=host, port=port, access_log=access_log, workers=workers)
    tune_malloc()  # large page bodies: see memory.py
    sys.exit(run_server(settings))


@main.group()
def keys() -> None:
    """Create, list and revoke per-user API keys."""


@keys.command("create")
@click.option("--user", required=True, help="the user the key acts as")
@click.option("--note", default="", help="a reminder of what the key is for")
@DATA_OPTION
def keys_create(user: str, note: str, data_dir: Path) -> None:
    """Create a key; its token is printed once, alone on the last line."""
    store = _keystore(data_dir)
    record, token = _cli_errors(lambda: store.create(user, note))
    click.echo(f"created key {record['id']} for user {user!r}; the token is shown only once:", err=False)
    click.echo(token)


@keys.command("list")
@DATA_OPTION
def keys_list(data_dir: Path) -> None:
    """List keys (never their tokens)."""
    rows = _keystore(data_dir).list()
    if not rows:
        click.echo("no keys")
        return
    click.echo(f"{'id':<14}{'user':<24}{'created':<22}{'revoked':<22}note")
    for r in rows:
        click.echo(f"{r['id']:<14}{r['user']:<24}{r['created_at']:<22}{r.get('revoked_at') or '-':<22}"
                   f"{r.get('note', '')}")


@keys.command("revoke")
@click.argument("key_id")
@DATA_OPTION
def keys_revoke(key_id: str, data_dir: Path) -> None:
    """Revoke a key by its id; every server process answers its requests 401 within 0.5 s."""
    record = _keystore(data_dir).revoke(key_id)
    if record is None:
        raise click.ClickException(f"no key with id {key_id!r}")
    click.echo(f"revoked key {key_id} of user {record['user']!r}")


@main.command("import")
@click.option("--user", required=True, help="the user owning the repo")
@click.option("--repo", required=True, help="the repo (created if missing)")
@click.option("--target", required=True, help="the target (created if missing); FILE becomes its stim output")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@DATA_OPTION
@click.option("--quiet", is_flag=True, help="no progress bar")
def import_cmd(user: str, repo: str, target: str, file: Path, data_dir: Path, quiet: bool) -> None:
    """Make FILE (JSONL, one object per line) the target's completed stim output."""
    from tqdm import tqdm

    from .schemas.targets import DEFAULT_BASE_MODEL, DEFAULT_TARGET_CONFIG
    from .store.importer import ImportRefused, import_jsonl

    records = _records(data_dir)
    with tqdm(total=file.stat().st_size, unit="B", unit_scale=True, disable=quiet, file=sys.stderr,
              desc=file.name) as bar:
        try:
            lines = _cli_errors(lambda: import_jsonl(records, user, repo, target, file, on_progress=bar.update,
                                                      default_config=DEFAULT_TARGET_CONFIG,
                                                      base_model=DEFAULT_BASE_MODEL))
        except ImportRefused as e:
            raise click.ClickException(f"{e}; nothing was written") from None
    click.echo(f"imported {lines} lines into {user}/{repo}/{target} (stim, complete)")


@main.command("export")
@click.option("--user", required=True, help="the user owning the repo")
@click.option("--repo", required=True, help="the repo")
@click.option("--target", required=True, help="the target")
@click.option("--kind", default="stim", show_default=True, type=click.Choice(["stim", "rollout"]),
              help="the job whose output to export")
@click.option("--format", "fmt", default="raw", show_default=True, type=click.Choice(["raw", "questions", "sft"]),
              help="raw: the stored lines; questions (stim): {stimulus_id, question}; sft (rollout): chat rows")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="file to write (default: standard output)")
@DATA_OPTION
@click.option("--quiet", is_flag=True, help="no progress bar")
def export_cmd(user: str, repo: str, target: str, kind: str, fmt: str, out: Path | None, data_dir: Path,
               quiet: bool) -> None:
    """Write a job's committed output as JSON lines, as GET …/{kind}/export does."""
    from tqdm import tqdm

    from .store import formats, snapshot

    records = _records(data_dir)
    try:
        convert = formats.converter(fmt, kind)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if _cli_errors(lambda: records.target(user, repo, target)) is None:
        raise click.ClickException(f"no target {target!r} in repo {repo!r} of user {user!r}")
    snap = snapshot.take(records.paths.job_dir(user, repo, target, kind))
    if snap is None:
        snap = snapshot.Snapshot(-1, -1, 0, 0)
    sink = open(out, "wb") if out is not None else sys.stdout.buffer  # noqa: SIM115
    try:
        with tqdm(total=snap.size, unit="B", unit_scale=True, disable=quiet, file=sys.stderr,
                  desc=f"{repo}/{target}/{kind}") as bar:
            def read() -> Iterator[bytes]:
                for chunk in snap.chunks(0, snap.size):
                    bar.update(len(chunk))
                    yield chunk

            for part in read() if convert is None else formats.convert_chunks(read(), convert):
                sink.write(part)
    finally:
        if snap.data_fd >= 0:
            snap.close()
        if out is not None:
            sink.close()
    if out is not None:
        click.echo(f"exported {snap.lines} lines of {user}/{repo}/{target} ({kind}, {fmt}) to {out}", err=True)


@main.command("estimate")
@click.argument("user")
@click.argument("repo")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="print the estimate as JSON, as GET …/rollout/estimate answers")
@DATA_OPTION
def estimate_cmd(user: str, repo: str, target: str, as_json: bool, data_dir: Path) -> None:
    """What TARGET's rollout will cost (and, while it runs, has cost), as GET …/rollout/estimate answers."""
    import asyncio

    import orjson

    from .api.errors import ApiError
    from .handlers.estimate import target_estimate

    settings = _settings(data_dir=data_dir)
    records = _records(data_dir)
    try:
        answer = asyncio.run(target_estimate(records, settings, user, repo, target))
    except ApiError as e:
        raise click.ClickException(e.message) from None
    if as_json:
        click.echo(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode())
        return
    for line in _estimate_lines(answer):
        click.echo(line)


def _usd(value: Any) -> str:
    return "-" if value is None else f"${value:,.4f}"


def _estimate_lines(e: dict[str, Any]) -> list[str]:
    """The estimate as a small table, for people."""
    t = e["tokens"]
    source = "the rollout's frozen copy" if e["stimuli_from"] == "rollout" else "the stim output"
    out = [f"rollout of {e['repo']}/{e['target']}: {e['model']} ({e['provider']}), price table {e['price_table']}",
           f"requests        {e['stimuli']:,} stimuli x {e['num_traj_per_stimulus']} = {e['requests']:,} "
           f"(stimuli from {source})",
           f"input tokens    prefix {t['prefix']:,} ({t['prefixes']} distinct; cached from "
           f"{t['min_cacheable_prefix']:,}) + stimulus mean {t['stimulus_mean']:,} = {t['input_total']:,} in all",
           f"output tokens   {t['output_per_request']:,} per request ({t['output_source']}) = {t['output_total']:,}",
           f"counted by      {t['counted_by']}" + (f" ({t['tokenizer']})" if t["tokenizer"] else ""),
           *(f"                {note}" for note in t["notes"]), ""]
    if e["cost"] is None:
        out.append(f"cost            unknown: {e['cost_unknown']}")
    else:
        out.append(f"{'mode':<16}{'usd':>14}{'low':>14}{'high':>14}")
        for mode, cost in e["cost"].items():
            mark = " <- this target" if mode == e["mode"] else ""
            out.append(f"{mode:<16}{_usd(cost['usd']):>14}{_usd(cost['low_usd']):>14}{_usd(cost['high_usd']):>14}"
                       f"{mark}" + (f" ({cost['unknown']})" if cost["unknown"] else ""))
    budget = "none" if e["max_cost_usd"] is None else f"{_usd(e['max_cost_usd'])}" + (
        " - OVER BUDGET at the high estimate" if e["over_budget"] else "")
    out.append(f"budget          {budget}")
    out += [f"note            {note}" for note in e["notes"]]
    run = e["run"]
    if run is not None:
        out.append(f"run             job {run['job_id']} {run['status']}: {run['answered']:,} answered, "
                   f"{run['remaining']:,} remaining, spent {_usd(run['spent_usd'])}, projected "
                   f"{_usd(run['projected_usd'])}")
    return out


@main.command()
@DATA_OPTION
@setting_option("max_jobs")
def worker(data_dir: Path, max_jobs: int) -> None:
    """Run stim jobs from the data directory, without serving HTTP.

    Start as many workers as you like on one data directory (next to `serve`, which can
    leave jobs to them with STIMSERVER_RUN_JOBS=false); each job runs in exactly one.
    """
    from .worker import run_worker

    sys.exit(run_worker(_settings(data_dir=data_dir, max_jobs=max_jobs)))


@main.group()
def datasets() -> None:
    """Question datasets for the from_dataset generator."""


@datasets.command("list")
@DATA_OPTION
def datasets_list(data_dir: Path) -> None:
    """List the datasets a from_dataset generator can name."""
    from .store.datasets import Datasets

    rows = Datasets(_settings(data_dir=data_dir).data_dir).list()
    if not rows:
        click.echo("no datasets; add one with: stimserver datasets add NAME FILE")
        return
    click.echo(f"{'name':<24}{'questions':>10}  source")
    for d in rows:
        count = str(d.items) if d.items >= 0 else "invalid"
        click.echo(f"{d.name:<24}{count:>10}  {d.path}{' (shipped)' if d.shipped else ''}")


@datasets.command("add")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--field", default=None, help="the JSON field or CSV column holding the question")
@click.option("--replace", is_flag=True, help="overwrite a dataset of the same name")
@DATA_OPTION
def datasets_add(name: str, file: Path, field: str | None, replace: bool, data_dir: Path) -> None:
    """Check FILE (JSONL or CSV) and store it as dataset NAME."""
    from .store.datasets import DatasetError, Datasets

    try:
        info = Datasets(_settings(data_dir=data_dir).data_dir).add(name, file, field=field, replace=replace)
    except DatasetError as e:
        raise click.ClickException(f"{e}; nothing was written") from None
    except OSError as e:
        raise click.ClickException(f"{e.strerror}: {e.filename}" if e.filename else str(e)) from None
    click.echo(f"added dataset {info.name!r}: {info.items} questions in {info.path}")


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except ValueError as e:
        raise click.ClickException(str(e)) from None


def _records(data_dir: Path) -> Records:
    from .store.paths import DataPaths
    from .store.records import Records

    return Records(DataPaths(_settings(data_dir=data_dir).data_dir))


def _keystore(data_dir: Path) -> KeyStore:
    from .api.auth import KeyStore

    return KeyStore(_records(data_dir).paths.keys_file)


def _cli_errors(fn: Callable[[], _T]) -> _T:
    """Turn our validation errors into one-line CLI errors."""
    from .api.errors import ApiError
    from .store.errors import StoreError

    try:
        return fn()
    except (ApiError, StoreError) as e:
        raise click.ClickException(e.message) from None
    except OSError as e:
        raise click.ClickException(f"{e.strerror}: {e.filename}" if e.filename else str(e)) from None


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
