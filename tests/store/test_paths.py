"""Names are checked before any path is built; nothing escapes the data directory."""
from __future__ import annotations

import pytest

from stimserver.store.errors import InvalidName
from stimserver.store.paths import DataPaths, check_name, name_problem

GOOD = ["a", "repo1", "My-Repo_2.0", "x" * 128, "0day"]
BAD = {
    "empty": "", "dotdot": "..", "dot": ".", "slash": "a/b", "backslash": "a\\b", "nul": "a\x00b",
    "newline": "a\nb", "tab": "a\tb", "space": "a b", "too-long": "x" * 129, "leading-dot": ".hidden",
    "leading-dash": "-rf", "unicode": "café", "trailing-dot": "name.", "reserved": "batch",
    "not-a-string": 5, "percent": "a%2Fb",
}


@pytest.mark.parametrize("name", GOOD)
def test_good_names(name):
    assert name_problem(name) is None
    assert check_name(name, "repo_name") == name


@pytest.mark.parametrize("name", BAD.values(), ids=BAD.keys())
def test_bad_names_are_refused_naming_the_field(name):
    with pytest.raises(InvalidName) as e:
        check_name(name, "repo_name")
    assert e.value.message.startswith("repo_name ")
    assert (e.value.where, e.value.field) == ("path", "repo_name")


def test_paths_stay_inside_root(tmp_path):
    paths = DataPaths(tmp_path)
    p = paths.job_dir("alice", "r", "t", "stim")
    assert p == tmp_path / "users" / "alice" / "repos" / "r" / "targets" / "t" / "stim"
    with pytest.raises(InvalidName):
        paths.job_dir("alice", "..", "t", "stim")
    with pytest.raises(ValueError):
        paths.job_dir("alice", "r", "t", "../x")


def test_invalid_character_is_named():
    assert name_problem("a/b") == "contains invalid character: '/'"
