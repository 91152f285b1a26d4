"""The README is part of the product: its settings and commands must stay true."""
from __future__ import annotations

import re
from pathlib import Path

import click

from stimserver.cli import main
from stimserver.config import SETTINGS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def _shown(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def test_every_setting_is_documented():
    rows = {m[0]: m[1:] for m in re.findall(r"^\| (\w+) \| `(\w+)` \| (.+?) \|", _section("Settings"), re.M)}
    for s in SETTINGS:
        assert s.name in rows, f"{s.name} missing from README"
        env, default = rows[s.name]
        assert env == s.env, s.name
        if s.name != "master_key_file":  # its default is computed: DATA/master.key
            assert default == f"`{_shown(s.default)}`" or default == _shown(s.default), (s.name, default)
        if s.flag:
            assert f"flag `{s.flag}`" in README, f"{s.name}: README does not name its flag {s.flag}"
    assert set(rows) == {s.name for s in SETTINGS}, "README documents a setting that does not exist"


def _commands(group: click.Group, prefix: str = "stimserver") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found.update(_commands(command, path))
        else:
            found[path] = command
    return found


def _options(command: click.Command) -> set[str]:
    names = set()
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            names |= {o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")}
    return names


def test_command_table_lists_every_command_and_option():
    """Both ways: each option of each click command is in its row, and each row's option exists."""
    rows = re.findall(r"^\| `(stimserver [^`]*)`", _section("Command line"), re.M)
    for path, command in _commands(main).items():
        row = [r for r in rows if r == path or r.startswith(path + " ")]
        assert len(row) == 1, f"{path}: {len(row)} rows in the README's command table"
        listed = set(re.findall(r"--[a-z-]+", row[0]))
        assert _options(command) <= listed, f"{path}: {_options(command) - listed} not in the README"
        assert listed <= _options(command), f"{path}: README lists {listed - _options(command)}, not an option"
    assert "`stimserver --version`" in _section("Command line") and "--version" in _options(main)


def test_exactly_two_setup_commands():
    setup = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in setup.splitlines() if line.startswith("    ")]
    assert commands == ["scripts/serve", "scripts/test"]
    for script in commands:
        assert (Path(__file__).resolve().parent.parent / script).stat().st_mode & 0o111
