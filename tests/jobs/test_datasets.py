"""Datasets for from_dataset (stimserver.datasets) and the `stimserver datasets` commands."""
from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner

from stimserver.cli import main
from stimserver.store.datasets import DatasetError, Datasets, load_personas, read_questions


def test_the_shipped_datasets_are_found_from_any_data_directory(tmp_path):
    found = {d.name: (d.items, d.shipped) for d in Datasets(tmp_path).list()}
    assert found == {"arithmetic": (200, True), "everyday": (120, True)}
    questions = Datasets(tmp_path).load("arithmetic")
    assert len(set(questions)) == 200 and all(q.endswith("?") for q in questions)
    everyday = Datasets(tmp_path).load("everyday")
    assert len(set(everyday)) == 120 and everyday[0] == "Describe a cat in one sentence."


FILES = {
    "jsonl-strings": ("d.jsonl", b'"one?"\n\n"two?"\n', None, ["one?", "two?"]),
    "jsonl-objects": ("d.jsonl", b'{"id":1,"Question":" one? "}\n{"question":"two?"}\n', None, ["one?", "two?"]),
    "jsonl-alias": ("d.jsonl", b'{"problem":"p1"}\n', None, ["p1"]),
    "jsonl-field": ("d.jsonl", b'{"q":"a","question":"b"}\n', "q", ["a"]),
    "csv-header": ("d.csv", "id,question\n1,\"one, two?\"\n2,\"é?\"\n".encode(), None, ["one, two?", "é?"]),
    "csv-first-column": ("d.csv", b"text_x,other\nhello?,x\n\n", None, ["hello?"]),
    "csv-field": ("d.csv", b"a,b\n1,2\n", "b", ["2"]),
}


@pytest.mark.parametrize("name, data, field, expected", FILES.values(), ids=FILES.keys())
def test_read_questions(tmp_path, name, data, field, expected):
    (tmp_path / name).write_bytes(data)
    assert read_questions(tmp_path / name, field) == expected


BAD = {
    "bad-json": ("d.jsonl", b'"ok?"\n{oops\n', None, "d.jsonl line 2: not valid JSON"),
    "no-field": ("d.jsonl", b'{"answer": 1}\n', None, "line 1: no question field"),
    "not-a-string": ("d.jsonl", b'{"question": 5}\n', None, "line 1: the question is not a string"),
    "empty": ("d.jsonl", b'"  "\n', None, "line 1: the question is empty"),
    "unknown-field": ("d.csv", b"a,b\n1,2\n", "c", "no field 'c'"),
    "format": ("d.txt", b"hi\n", None, "unknown format"),
}


@pytest.mark.parametrize("name, data, field, message", BAD.values(), ids=BAD.keys())
def test_bad_files_name_file_and_line(tmp_path, name, data, field, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DatasetError, match=message):
        read_questions(tmp_path / name, field)


def test_add_normalises_and_refuses_to_overwrite(tmp_path):
    src = tmp_path / "src.csv"
    src.write_text("question\nA?\nB?\n")
    datasets = Datasets(tmp_path / "data")
    info = datasets.add("mine", src)
    assert info.items == 2 and info.path == tmp_path / "data" / "datasets" / "mine.jsonl"
    assert [orjson.loads(line) for line in info.path.read_bytes().splitlines()] == [{"question": "A?"},
                                                                                   {"question": "B?"}]
    with pytest.raises(DatasetError, match="exists"):
        datasets.add("mine", src)
    src.write_text("question\nC?\n")
    assert datasets.add("mine", src, replace=True).items == 1 and datasets.load("mine") == ["C?"]
    with pytest.raises(DatasetError, match="dataset name contains invalid character"):
        datasets.add("../x", src)


def test_a_dataset_in_the_data_directory_wins_over_a_shipped_one(tmp_path):
    folder = tmp_path / "datasets"
    folder.mkdir()
    (folder / "arithmetic.jsonl").write_text('"only one?"\n')
    (folder / "broken.jsonl").write_text("{\n")
    datasets = Datasets(tmp_path)
    assert datasets.load("arithmetic") == ["only one?"]
    assert {d.name: (d.items, d.shipped) for d in datasets.list()} == {
        "arithmetic": (1, False), "broken": (-1, False), "everyday": (120, True)}
    with pytest.raises(DatasetError, match="unknown dataset 'nope' .known: arithmetic, broken, everyday"):
        datasets.load("nope")


def test_a_changed_file_is_read_again(tmp_path):
    folder = tmp_path / "datasets"
    folder.mkdir()
    (folder / "d.jsonl").write_text('"a?"\n')
    datasets = Datasets(tmp_path, shipped=None)
    assert datasets.load("d") == ["a?"]
    (folder / "d.jsonl").write_text('"a?"\n"b?"\n')
    assert datasets.load("d") == ["a?", "b?"]


def test_personas(tmp_path):
    shipped = load_personas(tmp_path)
    assert len(shipped) >= 20 and shipped[0].startswith("Retired teacher: ")
    (tmp_path / "personas.json").write_text('["a pirate", {"description": "a cook"}]')
    assert load_personas(tmp_path) == ["a pirate", "a cook"]
    (tmp_path / "personas.json").write_text("[]")
    with pytest.raises(DatasetError, match="non-empty JSON array"):
        load_personas(tmp_path)
    with pytest.raises(DatasetError, match="no persona list"):
        load_personas(tmp_path / "elsewhere", shipped=None)


def test_cli_add_and_list(tmp_path):
    src = tmp_path / "trivia.jsonl"
    src.write_text('{"prompt": "Capital of France?"}\n{"prompt": "Largest ocean?"}\n')
    data = str(tmp_path / "data")
    runner = CliRunner()
    result = runner.invoke(main, ["datasets", "add", "trivia", str(src), "--data", data])
    assert result.exit_code == 0, result.output
    assert "added dataset 'trivia': 2 questions" in result.output
    result = runner.invoke(main, ["datasets", "list", "--data", data])
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split()[1] for line in result.output.splitlines()[1:]}
    assert rows == {"arithmetic": "200", "everyday": "120", "trivia": "2"}
    result = runner.invoke(main, ["datasets", "add", "trivia", str(src), "--data", data])
    assert result.exit_code == 1 and "pass --replace" in result.output and "nothing was written" in result.output


def test_cli_add_reports_bad_lines(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('"fine?"\n[1]\n')
    result = CliRunner().invoke(main, ["datasets", "add", "bad", str(src), "--field", "q",
                                       "--data", str(tmp_path / "data")])
    assert result.exit_code == 1 and "bad.jsonl line 1: not a JSON object" in result.output
    assert not (tmp_path / "data" / "datasets" / "bad.jsonl").exists()


def test_cli_worker_refuses_an_unusable_data_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["worker", "--data", str(blocker / "sub")])
    assert result.exit_code == 2
