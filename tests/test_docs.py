"""The README is part of the product: its settings and commands must stay true."""
from __future__ import annotations

import re
from pathlib import Path

from stimserver.config import SETTINGS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented():
    for s in SETTINGS:
        assert re.search(rf"^\| {s.name} \| `{s.env}` \|", README, re.M), f"{s.name} missing from README"


def test_exactly_two_setup_commands():
    setup = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in setup.splitlines() if line.startswith("    ")]
    assert commands == ["scripts/serve", "scripts/test"]
    for script in commands:
        assert (Path(__file__).resolve().parent.parent / script).stat().st_mode & 0o111
