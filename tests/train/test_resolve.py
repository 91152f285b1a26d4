"""Base-model resolution: the documented order, GGUF names, the hub cache, and what a miss lists."""
from __future__ import annotations

from pathlib import Path

import pytest

from stimserver.train.resolve import ModelNotFound, resolve_model


def model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_a_path_to_a_model_directory(tmp_path: Path) -> None:
    found = resolve_model(str(model_dir(tmp_path / "m")), models_dirs=[])
    assert found.path == tmp_path / "m" and found.gguf_file is None
    assert found.found_by == "a Hugging Face model directory"


def test_a_gguf_file_named_as_transformers_serve_names_it(tmp_path: Path) -> None:
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "model.Q4.gguf").write_bytes(b"GGUF")
    for reference in (f"{tmp_path / 'g'}:model.Q4.gguf", str(tmp_path / "g" / "model.Q4.gguf")):
        found = resolve_model(reference, models_dirs=[])
        assert (found.path, found.gguf_file) == (tmp_path / "g", "model.Q4.gguf")


def test_a_name_under_a_models_directory(tmp_path: Path) -> None:
    models = tmp_path / "models"
    model_dir(models / "smol")
    (models / "q").mkdir()
    (models / "q" / "f.gguf").write_bytes(b"GGUF")
    assert resolve_model("smol", models_dirs=[tmp_path / "none", models]).path == models / "smol"
    found = resolve_model("q:f.gguf", models_dirs=[models])
    assert (found.path, found.gguf_file) == (models / "q", "f.gguf")


def test_a_name_never_climbs_out_of_a_models_directory(tmp_path: Path) -> None:
    model_dir(tmp_path / "outside")
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelNotFound):
        resolve_model("../outside", models_dirs=[tmp_path / "models"])


def test_a_hub_id_in_the_local_cache_takes_the_snapshot_main_names(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--org--tiny"
    model_dir(repo / "snapshots" / "aaa")
    model_dir(repo / "snapshots" / "bbb")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("aaa\n")
    found = resolve_model("org/tiny", models_dirs=[], hub_cache=tmp_path / "hub")
    assert found.path == repo / "snapshots" / "aaa"


def test_the_hub_cache_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir(tmp_path / "hf" / "hub" / "models--org--tiny" / "snapshots" / "x")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert resolve_model("org/tiny", models_dirs=[]).path.name == "x"


def test_a_miss_lists_every_place_looked(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as caught:
        resolve_model("org/absent", models_dirs=[tmp_path / "models"], hub_cache=tmp_path / "hub")
    message = str(caught.value)
    assert "org/absent" in message
    assert str(tmp_path / "models" / "org/absent") in message
    assert str(tmp_path / "hub") in message and "no download" in message
    assert len(caught.value.looked) == 4


@pytest.mark.parametrize("reference", ["", "a\x00b"])
def test_an_empty_or_invalid_reference(reference: str) -> None:
    with pytest.raises(ModelNotFound):
        resolve_model(reference, models_dirs=[])
