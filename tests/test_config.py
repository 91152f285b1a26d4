"""Settings: defaults, then env, then CLI; secrets stay hidden."""
from __future__ import annotations

import pytest

from stimserver.config import SETTINGS, Settings


def test_defaults():
    s = Settings.from_env({})
    assert (s.port, s.default_page_size, s.max_page_size, s.master_user) == (8080, 100, 1000, "admin")
    assert s.data_dir.is_absolute()


def test_env_then_overrides(tmp_path):
    env = {"STIMSERVER_PORT": "9000", "STIMSERVER_DATA": str(tmp_path), "STIMSERVER_ACCESS_LOG": "off"}
    s = Settings.from_env(env)
    assert s.port == 9000 and s.data_dir == tmp_path and s.access_log is False
    assert Settings.from_env(env, port=9100).port == 9100


@pytest.mark.parametrize("env", [{"STIMSERVER_PORT": "eighty"}, {"STIMSERVER_ACCESS_LOG": "maybe"},
                                 {"STIMSERVER_DEFAULT_PAGE_SIZE": "5000"}], ids=["port", "bool", "range"])
def test_bad_values_are_clear_errors(env):
    with pytest.raises(ValueError):
        Settings.from_env(env)


def test_master_key_hidden_from_repr():
    s = Settings.from_env({"STIMSERVER_MASTER_KEY": "super-secret-master-key"})
    assert "super-secret" not in repr(s) and "super-secret" not in repr(s.master_key)
    assert s.master_key == "super-secret-master-key"


def test_settings_table_matches_dataclass():
    assert {s.name for s in SETTINGS} == set(Settings.__dataclass_fields__)
