"""Named question datasets for the ``from_dataset`` generator, and the persona list.

A dataset is one file in ``DATA/datasets/``: ``<name>.jsonl`` or ``<name>.csv``. Each
JSONL line is a JSON string or an object whose question is in the first of the fields
``question``, ``prompt``, ``instruction``, ``input``, ``query``, ``problem``, ``text``;
a CSV file has a header row and the same column names (else its first column is used).
``stimserver datasets add NAME FILE`` checks a file and stores it normalised as
``NAME.jsonl`` with one ``{"question": ...}`` per line.

A source checkout also ships datasets in its own ``data/datasets/`` (and personas in
``data/personas.json``); they are found from any data directory, and a file of the same
name in the data directory wins.
"""
from __future__ import annotations

import builtins
import csv
import io
from dataclasses import dataclass
from pathlib import Path

import orjson

from .atomic import write_atomic
from .cache import FileCache
from .paths import name_problem

__all__ = ["Datasets", "DatasetError", "DatasetInfo", "QUESTION_FIELDS", "SHIPPED_DATA", "read_questions",
           "load_personas"]

QUESTION_FIELDS = ("question", "prompt", "instruction", "input", "query", "problem", "text")
FORMATS = (".jsonl", ".csv")
SHIPPED_DATA = Path(__file__).resolve().parents[2] / "data"
MAX_QUESTION_CHARS = 100_000


class DatasetError(ValueError):
    """A dataset that cannot be used; the message says which file and line."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    path: Path
    items: int
    shipped: bool


def _pick_field(keys: list[str], field: str | None, where: str) -> str | None:
    if field is not None:
        if field not in keys:
            raise DatasetError(f"{where}: no field {field!r} (has: {', '.join(keys) or 'none'})")
        return field
    lowered = {k.lower(): k for k in keys}
    for name in QUESTION_FIELDS:
        if name in lowered:
            return lowered[name]
    return None


def _clean(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise DatasetError(f"{where}: the question is not a string")
    text = value.strip()
    if not text:
        raise DatasetError(f"{where}: the question is empty")
    if len(text) > MAX_QUESTION_CHARS:
        raise DatasetError(f"{where}: the question is longer than {MAX_QUESTION_CHARS} characters")
    return text


def _jsonl_questions(data: bytes, name: str, field: str | None) -> list[str]:
    out = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise DatasetError(f"{where}: not valid JSON ({e})") from None
        if isinstance(value, dict):
            key = _pick_field(list(value), field, where)
            if key is None:
                raise DatasetError(f"{where}: no question field (one of {', '.join(QUESTION_FIELDS)}; "
                                   "or name one with --field)")
            value = value[key]
        elif field is not None:
            raise DatasetError(f"{where}: not a JSON object, so it has no field {field!r}")
        out.append(_clean(value, where))
    return out


def _csv_questions(data: bytes, name: str, field: str | None) -> list[str]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{name}: not UTF-8 ({e.reason} at byte {e.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise DatasetError(f"{name}: empty CSV file (a header row is required)")
    key = _pick_field(header, field, f"{name} header")
    column = header.index(key) if key is not None else 0
    out = []
    for number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if column >= len(row):
            raise DatasetError(f"{name} line {number}: no column {header[column]!r}")
        out.append(_clean(row[column], f"{name} line {number}"))
    return out


def read_questions(path: Path, field: str | None = None) -> list[str]:
    """The questions of a JSONL or CSV file, in file order."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror}") from None
    if path.suffix.lower() == ".csv":
        return _csv_questions(data, path.name, field)
    if path.suffix.lower() == ".jsonl":
        return _jsonl_questions(data, path.name, field)
    raise DatasetError(f"{path.name}: unknown format (use .jsonl or .csv)")


class Datasets:
    """The datasets a data directory knows, by name; parsed files are cached by identity."""

    def __init__(self, data_root: Path, shipped: Path | None = SHIPPED_DATA) -> None:
        self.dir = data_root / "datasets"
        shipped_dir = shipped / "datasets" if shipped is not None else None
        same = shipped_dir is not None and shipped_dir.exists() and self.dir.exists() and \
            shipped_dir.resolve() == self.dir.resolve()
        self.shipped_dir = None if same else shipped_dir
        self._cache = FileCache(size=256)

    def _folders(self) -> list[tuple[Path, bool]]:
        folders = [(self.dir, False)]
        if self.shipped_dir is not None:
            folders.append((self.shipped_dir, True))
        return folders

    def find(self, name: str) -> Path | None:
        if name_problem(name) is not None:
            return None
        for folder, _ in self._folders():
            for ext in FORMATS:
                path = folder / f"{name}{ext}"
                if path.is_file():
                    return path
        return None

    def names(self) -> list[str]:
        return [info.name for info in self.list()]

    def list(self) -> list[DatasetInfo]:
        seen: dict[str, DatasetInfo] = {}
        for folder, shipped in self._folders():
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                name = path.stem
                if path.suffix not in FORMATS or name in seen or name_problem(name) is not None:
                    continue
                try:
                    items = len(self.load_path(path))
                except DatasetError:
                    items = -1  # listed, but unusable until fixed
                seen[name] = DatasetInfo(name, path, items, shipped)
        return sorted(seen.values(), key=lambda d: d.name)

    def load(self, name: str) -> builtins.list[str]:
        path = self.find(name)
        if path is None:
            known = ", ".join(self.names()) or "none"
            raise DatasetError(f"unknown dataset {name!r} (known: {known}; add one with "
                               "`stimserver datasets add NAME FILE`)")
        return self.load_path(path)

    def load_path(self, path: Path) -> builtins.list[str]:
        try:
            return self._cache.load(path, read_questions)
        except OSError as e:  # the stat: read_questions turns its own errors into DatasetError
            raise DatasetError(f"cannot read {path}: {e.strerror}") from None

    def add(self, name: str, src: Path, field: str | None = None, replace: bool = False) -> DatasetInfo:
        """Check ``src`` and store it as ``NAME.jsonl``; refuses to overwrite unless ``replace``."""
        problem = name_problem(name)
        if problem is not None:
            raise DatasetError(f"dataset name {problem}")
        questions = read_questions(src, field)
        if not questions:
            raise DatasetError(f"{src.name}: no questions in it")
        dest = self.dir / f"{name}.jsonl"
        other = next((p for p in (self.dir / f"{name}{ext}" for ext in FORMATS) if p.exists()), None)
        if other is not None and not replace:
            raise DatasetError(f"dataset {name!r} exists ({other}); pass --replace to overwrite it")
        data = b"".join(orjson.dumps({"question": q}) + b"\n" for q in questions)
        write_atomic(dest, data)
        if other is not None and other != dest:
            other.unlink(missing_ok=True)
        return DatasetInfo(name, dest, len(questions), False)


def load_personas(data_root: Path, shipped: Path | None = SHIPPED_DATA) -> list[str]:
    """Persona descriptions: ``DATA/personas.json`` if present, else the shipped list.

    The file is a JSON array of strings or of objects with a ``description`` (and
    optionally a ``name``, which is prefixed to it).
    """
    candidates = [data_root / "personas.json"]
    if shipped is not None:
        candidates.append(shipped / "personas.json")
    for path in candidates:
        if not path.is_file():
            continue
        try:
            value = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as e:
            raise DatasetError(f"cannot read personas from {path}: {e}") from None
        if not isinstance(value, list) or not value:
            raise DatasetError(f"{path}: must be a non-empty JSON array")
        personas = []
        for i, item in enumerate(value):
            if isinstance(item, dict) and isinstance(item.get("description"), str):
                text = item["description"].strip()
                if isinstance(item.get("name"), str) and item["name"].strip():
                    text = f"{item['name'].strip()}: {text}"
            elif isinstance(item, str):
                text = item.strip()
            else:
                raise DatasetError(f"{path}: item {i} is neither a string nor an object with a description")
            if not text:
                raise DatasetError(f"{path}: item {i} is empty")
            personas.append(text)
        return personas
    raise DatasetError(f"no persona list: put a JSON array of descriptions in {data_root / 'personas.json'}")
