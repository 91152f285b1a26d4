"""Settings: defaults, then env, then CLI; secrets stay hidden."""
from __future__ import annotations

from pathlib import Path

import pytest

from stimserver.config import SETTINGS, Secret, Settings


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


def test_dataclass_defaults_are_the_declared_ones():
    """SETTINGS is the one declaration: the dataclass may not drift from it."""
    built = Settings.from_env({})
    for s in SETTINGS:
        expected = s.default if s.name != "data_dir" else Path(s.default).resolve()
        assert getattr(built, s.name) == expected, s.name
        default = Settings.__dataclass_fields__[s.name].default
        assert (Path(default) if s.name == "data_dir" else default) == (
            Path(s.default) if s.name == "data_dir" else s.default), s.name


def test_empty_environment_values_count_as_unset():
    assert Settings.from_env({"STIMSERVER_PORT": "", "STIMSERVER_MASTER_KEY": "  "}) == Settings.from_env({})


@pytest.mark.parametrize(("overrides", "message"), [
    ({"port": 70000}, "port must be at most 65535"),
    ({"max_jobs": 0}, "max_jobs must be at least 1"),
    ({"job_orphan_seconds": -1}, "job_orphan_seconds must be 0 or more"),
    ({"workers": 0}, "workers must be at least 1"),
], ids=["port", "max-jobs", "orphan", "workers"])
def test_ranges_come_from_the_declaration(overrides, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env({}, **overrides)


def test_provider_keys_are_secrets():
    s = Settings.from_env({"ANTHROPIC_API_KEY": "sk-ant-hidden", "OPENAI_API_KEY": "sk-oa-hidden",
                           "STIMSERVER_LLM_PROVIDER": "Anthropic"})
    assert isinstance(s.anthropic_api_key, Secret) and isinstance(s.openai_api_key, Secret)
    assert "hidden" not in repr(s) and s.llm_provider == "anthropic"
