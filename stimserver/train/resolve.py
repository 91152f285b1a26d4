"""Where a bake's base model is on this machine: a reference → a Hugging Face model directory.

Torch-free (the server checks a bake's model at run, before any trainer starts). A
reference is tried, in order, as:

1. a path to a Hugging Face model directory (one holding ``config.json``);
2. ``<dir>:<file>.gguf`` — a GGUF file in a directory, as ``transformers serve`` names them
   (a path to a ``.gguf`` file works too); the trainer dequantises it on load;
3. a name under a models directory (``STIMSERVER_MODELS_DIR``, default ``DATA/models``):
   ``<models dir>/<name>`` as in 1, or ``<name>:<file>.gguf`` there as in 2;
4. a hub id (``org/name``) already in the local Hugging Face cache (``HF_HUB_CACHE``, else
   ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``): the snapshot ``refs/main`` names, else
   the newest. Nothing is ever downloaded.

A reference found nowhere raises ``ModelNotFound`` listing every place looked at.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ResolvedModel", "ModelNotFound", "resolve_model", "hub_cache_dir", "BAKE_REFERENCE"]

# "<user>/<repo>/<bake>/<step>": a checkpoint of a bake, which jobs/bake.py resolves
BAKE_REFERENCE = re.compile(r"([^/]+)/([^/]+)/([^/]+)/([0-9]{1,12})")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class ResolvedModel:
    reference: str
    path: Path                # a Hugging Face model directory (or the GGUF file's directory)
    gguf_file: str | None     # the GGUF file inside ``path``, or None
    found_by: str             # how, in words (shown in the bake's spec and logs)

    def as_spec(self) -> dict[str, str | None]:
        return {"reference": self.reference, "path": str(self.path), "gguf_file": self.gguf_file,
                "found_by": self.found_by}


class ModelNotFound(LookupError):
    """No model of that reference on this machine; ``looked`` says where it was looked for."""

    def __init__(self, reference: str, looked: list[str]) -> None:
        self.reference = reference
        self.looked = looked
        super().__init__(f"model {reference!r} was not found on this machine; looked for: " + "; ".join(looked))


def hub_cache_dir() -> Path:
    """The local Hugging Face hub cache, as huggingface_hub finds it (without importing it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "huggingface"
    return base / "hub"


def _model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def _gguf(reference: str, base: Path | None) -> tuple[Path, str] | None:
    """(directory, file) when ``reference`` names a GGUF file (``dir:file.gguf`` or a ``.gguf`` path)."""
    if not reference.endswith(".gguf"):
        return None
    if ":" in reference:
        folder, _, name = reference.rpartition(":")
        directory = Path(folder).expanduser()
    else:
        file = Path(reference).expanduser()
        directory, name = file.parent, file.name
    if "/" in name or not name:
        return None
    if base is not None:
        if directory.is_absolute():
            return None
        directory = base / directory
    return (directory, name) if (directory / name).is_file() else None


def _hub_snapshot(cache: Path, hub_id: str) -> Path | None:
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    try:
        ref = (repo / "refs" / "main").read_text().strip()
    except OSError:
        ref = ""
    if ref and _model_dir(snapshots / ref):
        return snapshots / ref
    try:
        candidates = [p for p in snapshots.iterdir() if _model_dir(p)]
    except OSError:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def resolve_model(reference: str, *, models_dirs: Sequence[Path], hub_cache: Path | None = None) -> ResolvedModel:
    """The model ``reference`` names on this machine (see the module docstring for the order)."""
    looked: list[str] = []
    if not reference or "\x00" in reference:
        raise ModelNotFound(reference, ["(an empty or invalid reference)"])
    as_path = Path(reference).expanduser()
    looked.append(f"a model directory at {as_path}")
    if _model_dir(as_path):
        return ResolvedModel(reference, as_path.resolve(), None, "a Hugging Face model directory")
    looked.append(f"a GGUF file {reference}")
    found = _gguf(reference, None)
    if found is not None:
        return ResolvedModel(reference, found[0].resolve(), found[1], "a GGUF file")
    if not as_path.is_absolute() and ".." not in as_path.parts:
        for models in models_dirs:
            candidate = models / reference
            looked.append(f"{candidate}")
            if _model_dir(candidate):
                return ResolvedModel(reference, candidate.resolve(), None, f"the models directory {models}")
            found = _gguf(reference, models)
            if found is not None:
                return ResolvedModel(reference, found[0].resolve(), found[1],
                                     f"a GGUF file in the models directory {models}")
    if _HUB_ID.fullmatch(reference):
        cache = hub_cache if hub_cache is not None else hub_cache_dir()
        looked.append(f"the Hugging Face cache {cache} (no download is ever made)")
        snapshot = _hub_snapshot(cache, reference)
        if snapshot is not None:
            return ResolvedModel(reference, snapshot.resolve(), None, f"the Hugging Face cache {cache}")
    raise ModelNotFound(reference, looked)
