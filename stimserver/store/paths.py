"""Names from URLs and bodies → paths inside the data directory.

Layout (one folder per user / repo / target / job kind)::

    DATA/users/<user>/repos/<repo>/repo.json
                                  /prompts/<prompt>.json
                                  /targets/<target>/target.json
                                  /targets/<target>/<kind>/job.json      (kind: stim, rollout)
                                  /targets/<target>/<kind>/output.jsonl
                                  /targets/<target>/<kind>/output.idx
                                  /bakes/<bake>/bake.json                 (store.bakefiles)
                                  /bakes/<bake>/bake/job.json             (the bake's job)

Every name is checked against one strict pattern *before* it touches a path, so
'..', '/', '\\', NUL, control characters and over-long names never reach the
filesystem. Handlers never build paths themselves: they ask ``DataPaths``.
"""
from __future__ import annotations

import re
from pathlib import Path

from .changes import board_for
from .errors import InvalidName

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_NAME = 128
_MEMO_SIZE = 8192  # job paths remembered by DataPaths
RESERVED = frozenset({"batch"})  # collides with the literal …/batch routes (API.md §1)
JOB_KINDS = ("stim", "rollout", "bake")
# Kinds whose job belongs to a target; a bake job belongs to its bake (JobRef.target holds the bake name).
TARGET_KINDS = ("stim", "rollout")
BAKE_KIND = "bake"
TEMPLATE_DIR = "templates"  # a repo's generator templates: <repo>/templates/<file>


def name_problem(value: object) -> str | None:
    """Why ``value`` is not a valid name, or None if it is."""
    if not isinstance(value, str):
        return "must be a string"
    if value == "":
        return "must not be empty"
    if len(value) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    if NAME_RE.fullmatch(value):
        if value.lower() in RESERVED:
            return f"'{value}' is a reserved name"
        if value.endswith("."):
            return "must not end with '.'"
        return None
    if value in (".", ".."):
        return f"'{value}' is not allowed"
    for ch in value:
        if not (ch.isascii() and (ch.isalnum() or ch in "._-")):
            return f"contains invalid character: {ch!r}"
    return "must start with a letter or digit"


def check_name(value: object, field: str, where: str = "path") -> str:
    """Return ``value`` if it is a valid name, else raise ``InvalidName`` naming ``field``."""
    problem = name_problem(value)
    if problem is not None or not isinstance(value, str):
        problem = problem or "must be a string"
        raise InvalidName(
            f"{field} {problem} (allowed: letters, digits, '.', '_', '-'; at most {MAX_NAME}; "
            "starting with a letter or digit)", field=field, where=where, problem=f"{field} {problem}")
    return value


def template_file_name(template_path: str) -> str:
    """``templates/x.txt`` → ``x.txt`` (the file inside the repo's templates folder)."""
    prefix = TEMPLATE_DIR + "/"
    return template_path[len(prefix):] if template_path.startswith(prefix) else template_path


class DataPaths:
    """Builds every path stimserver uses, only from checked names."""

    def __init__(self, root: Path) -> None:
        self.root = root
        board_for(root)  # so the store's changes under root reach the change board (changes.notice)
        self._jobs: dict[tuple[str, str, str, str], tuple[Path, Path]] = {}

    @property
    def users(self) -> Path:
        return self.root / "users"

    @property
    def keys_file(self) -> Path:
        return self.root / "keys.json"

    @property
    def job_seq(self) -> Path:
        return self.root / ".jobseq"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    def user(self, user: str) -> Path:
        return self.users / check_name(user, "user_id", "header")

    def repos(self, user: str) -> Path:
        return self.user(user) / "repos"

    def repo(self, user: str, repo: str) -> Path:
        return self.repos(user) / check_name(repo, "repo_name")

    def prompts(self, user: str, repo: str) -> Path:
        return self.repo(user, repo) / "prompts"

    def prompt(self, user: str, repo: str, prompt: str) -> Path:
        return self.prompts(user, repo) / f"{check_name(prompt, 'prompt_name')}.json"

    def targets(self, user: str, repo: str) -> Path:
        return self.repo(user, repo) / "targets"

    def target(self, user: str, repo: str, target: str) -> Path:
        return self.targets(user, repo) / check_name(target, "target_name")

    def bakes(self, user: str, repo: str) -> Path:
        return self.repo(user, repo) / "bakes"

    def bake(self, user: str, repo: str, bake: str) -> Path:
        """A bake's folder: ``bake.json`` (its record) and ``bake/`` (its job)."""
        return self.bakes(user, repo) / check_name(bake, "bake_name")

    def bake_file(self, user: str, repo: str, bake: str) -> Path:
        return self.bake(user, repo, bake) / "bake.json"

    def job_dir(self, user: str, repo: str, target: str, kind: str) -> Path:
        return self._job(user, repo, target, kind)[0]

    def job_file(self, user: str, repo: str, target: str, kind: str) -> Path:
        return self._job(user, repo, target, kind)[1]

    def _job(self, user: str, repo: str, target: str, kind: str) -> tuple[Path, Path]:
        """(job folder, job.json); the paging hot path asks for the same few jobs again and again,
        so the paths of up to ``_MEMO_SIZE`` jobs (built from checked names only) are remembered."""
        key = (user, repo, target, kind)
        paths = self._jobs.get(key)
        if paths is None:
            if kind not in JOB_KINDS:
                raise ValueError(f"unknown job kind {kind!r}")
            owner = self.bake(user, repo, target) if kind == BAKE_KIND else self.target(user, repo, target)
            folder = owner / kind
            paths = (folder, folder / "job.json")
            if len(self._jobs) >= _MEMO_SIZE:
                self._jobs.clear()
            self._jobs[key] = paths
        return paths
