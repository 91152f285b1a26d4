"""Bake records, what the server reads of a bake's job folder, its download secret and archives. Blocking.

One bake ``b`` of repo ``r`` (the job folder's files are ``store.bakefiles``')::

    bakes/<b>/bake.json                       the record: {bake_name, template, overrides, config, created_at}
    bakes/<b>/bake/…                          the job folder (job.json, metrics.jsonl, checkpoints/<step>/, …)
    bakes/<b>/bake/archives/<step>.tar.gz     a checkpoint packed for download, made on first request
    DATA/bake-download.secret                 the key download links are signed with (0600, made once)

A record is created exclusively (two racing creators: one wins, the other sees its record)
and never rewritten: bakes are immutable. Deleting takes the bake's folder out of sight by
one rename (``trash``), as for targets, and ``purge_trash`` removes it later.

An archive holds the checkpoint's top-level files but the trainer's resume state
(``RESUME_STATE``), under one folder ``<repo>-<bake>-<step>/``: the PEFT adapter, the
tokenizer and the model card. It is written to a temp file and renamed into place, under a
lock so concurrent first requests build it once; its bytes depend only on the checkpoint
(fixed times, owners and order), so a rebuild gives the same file.
"""
from __future__ import annotations

import gzip
import os
import re
import secrets
import shutil
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import bakefiles
from .atomic import create_json_exclusive, fsync_dir, is_no_space, no_space, read_or_create_secret
from .errors import NotFound
from .locks import FileLock
from .output import lock_path
from .paths import BAKE_KIND, name_problem
from .records import Records

__all__ = ["BakeStore", "BakeFiles", "ARCHIVES", "SECRET_NAME", "RESUME_STATE", "archive_members"]

Record = dict[str, Any]

ARCHIVES = "archives"
SECRET_NAME = "bake-download.secret"
RECORD = "bake.json"
# What a checkpoint holds only to resume training: never packed for download.
RESUME_STATE = re.compile(r"optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*|trainer_state\.json"
                          r"|training_args\.bin|latest|zero_to_fp32\.py|" + re.escape(bakefiles.CHECKPOINT_INFO))


@dataclass
class BakeFiles:
    """What the status of a bake's job is built from (missing files: empty or None)."""

    rows: bakefiles.RowSummary = field(default_factory=bakefiles.RowSummary)  # what the metrics rows add up to
    plan: dict[str, Any] | None = None  # trainer-plan.json
    evaluation: dict[str, Any] | None = None  # eval.json
    failure: dict[str, Any] | None = None  # failure.json
    checkpoints: list[int] = field(default_factory=list)  # published steps, ascending


def archive_members(checkpoint: Path) -> list[Path]:
    """The files of a checkpoint that its archive holds: top-level regular files but the resume state, by name."""
    found = []
    for entry in sorted(os.scandir(checkpoint), key=lambda e: e.name):
        if entry.name.startswith(".") or RESUME_STATE.fullmatch(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        found.append(Path(entry.path))
    return found


class BakeStore:
    """Bakes of one data directory, on top of its ``Records`` (paths and the record cache)."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.paths = records.paths

    # -- records -----------------------------------------------------------------------------
    def record_file(self, user: str, repo: str, bake: str) -> Path:
        return self.paths.bake(user, repo, bake) / RECORD

    def bake(self, user: str, repo: str, bake: str) -> Record | None:
        return self.records.cache.read(self.record_file(user, repo, bake))

    def names(self, user: str, repo: str) -> list[str]:
        """The repo's bakes with a record, sorted (byte order); trash and leftovers are not listed."""
        try:
            entries = list(os.scandir(self.paths.bakes(user, repo)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(e.name for e in entries
                      if name_problem(e.name) is None and os.path.isfile(os.path.join(e.path, RECORD)))

    def create(self, user: str, repo: str, record: Record) -> tuple[Record, bool]:
        """(record, True) if this call created it, else (the existing record, False)."""
        path = self.record_file(user, repo, record["bake_name"])
        if create_json_exclusive(path, record):
            self.records.cache.forget(path)
            return record, True
        existing = self.records.cache.read(path)
        if existing is None:  # deleted between the attempt and the read: try once more
            return self.create(user, repo, record)
        return existing, False

    # -- the job folder ----------------------------------------------------------------------
    def job_dir(self, user: str, repo: str, bake: str) -> Path:
        return self.paths.job_dir(user, repo, bake, BAKE_KIND)

    def job(self, user: str, repo: str, bake: str) -> Record | None:
        """The bake's job record (cached), None if it never ran."""
        return self.records.job(user, repo, bake, BAKE_KIND)

    def rows_json(self, user: str, repo: str, bake: str) -> bytes:
        """The metrics rows as a JSON array, spliced from the stored lines."""
        return bakefiles.rows_json(self.job_dir(user, repo, bake))

    def checkpoints(self, user: str, repo: str, bake: str) -> list[int]:
        return bakefiles.checkpoint_steps(self.job_dir(user, repo, bake))

    def files(self, user: str, repo: str, bake: str, *, rows: bool = True) -> BakeFiles:
        """The job folder's files a status is built from; ``rows=False`` skips the metrics."""
        job_dir = self.job_dir(user, repo, bake)
        plan = bakefiles.read_json(job_dir, bakefiles.PLAN)
        evaluation = bakefiles.read_json(job_dir, bakefiles.EVAL)
        return BakeFiles(rows=bakefiles.summarize_rows(job_dir) if rows else bakefiles.RowSummary(),
                         plan=plan if isinstance(plan, dict) else None,
                         evaluation=evaluation if isinstance(evaluation, dict) else None,
                         failure=bakefiles.read_failure(job_dir),
                         checkpoints=bakefiles.checkpoint_steps(job_dir))

    # -- deletion ------------------------------------------------------------------------------
    def lock_job(self, user: str, repo: str, bake: str) -> FileLock | None:
        """The bake job's writer lock, or None while a writer (a trainer's parent) holds it."""
        return FileLock.acquire(lock_path(self.job_dir(user, repo, bake)), blocking=False)

    def trash(self, user: str, repo: str, bake: str) -> Path:
        """Take a bake's folder (record, job, archives) out of sight by one rename; the caller holds its job lock."""
        folder = self.paths.bake(user, repo, bake)
        trash = folder.with_name(f".{bake}.trash-{secrets.token_hex(4)}")
        os.rename(folder, trash)
        fsync_dir(folder.parent)
        self.records.cache.forget(folder / RECORD)
        job_dir = self.job_dir(user, repo, bake)
        self.records.cache.forget(job_dir / "job.json")
        return trash

    def purge_trash(self, user: str, repo: str) -> None:
        """Remove the trashed bake folders of a repo (run it off the event loop)."""
        try:
            entries = list(os.scandir(self.paths.bakes(user, repo)))
        except FileNotFoundError:
            return
        for e in entries:
            if e.name.startswith(".") and ".trash-" in e.name:
                shutil.rmtree(e.path, ignore_errors=True)

    # -- downloads -----------------------------------------------------------------------------
    def download_secret(self) -> bytes:
        """The key download links are signed with: one per data directory, shared by every process."""
        return read_or_create_secret(self.paths.root / SECRET_NAME)

    def archive(self, user: str, repo: str, bake: str, step: int) -> Path:
        """The .tar.gz of a published checkpoint, made on first request; ``NotFound`` if there is no such checkpoint."""
        job_dir = self.job_dir(user, repo, bake)
        checkpoint = bakefiles.checkpoint_dir(job_dir, step)
        info = checkpoint / bakefiles.CHECKPOINT_INFO
        try:
            published = info.stat().st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"bake '{bake}' has no checkpoint {step}") from None
        folder = job_dir / ARCHIVES
        path = folder / f"{int(step)}.tar.gz"
        if _fresh(path, published):
            return path
        try:
            folder.mkdir(exist_ok=True)
            lock = FileLock.acquire(folder / f".{int(step)}.lock", blocking=True)
            assert lock is not None  # a blocking acquire waits rather than give up
            with lock:
                if not _fresh(path, published):  # another request built it while this one waited
                    _build(path, checkpoint, f"{repo}-{bake}-{int(step)}", published // 1_000_000_000)
        except FileNotFoundError:  # the bake or its checkpoint went away meanwhile
            raise NotFound(f"bake '{bake}' has no checkpoint {step}") from None
        except OSError as e:
            if is_no_space(e):
                raise no_space(f"the download archive of checkpoint {step}") from e
            raise
        return path


def _fresh(path: Path, published_ns: int) -> bool:
    """An archive made after its checkpoint was published (a re-published checkpoint makes it stale)."""
    try:
        return path.stat().st_mtime_ns >= published_ns
    except FileNotFoundError:
        return False


def _build(path: Path, checkpoint: Path, top: str, mtime: int) -> None:
    """Pack ``checkpoint``'s members into ``path`` under the folder ``top``: temp file, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")
    try:
        with open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=mtime) as gz, \
                    tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                folder = tarfile.TarInfo(top)
                folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, mtime
                tar.addfile(folder)
                for member in archive_members(checkpoint):
                    entry = tarfile.TarInfo(f"{top}/{member.name}")
                    entry.size, entry.mode, entry.mtime = member.stat().st_size, 0o644, mtime
                    with open(member, "rb") as f:
                        tar.addfile(entry, f)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
