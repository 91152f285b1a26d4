"""The docs are part of the product: their tables, commands and links must stay true.

README.md, docs/*.md and scripts/README.md are read as a user reads them:
- the reference tables (settings, command line, error codes, metrics) match the code, both ways;
- every shell command that names something of ours is parsed: a ``stimserver`` command by its
  click parser, a script by its existence (and, for a Python script, by its ``--help`` listing the
  options used), a ``curl`` by its path being a route of the served OpenAPI document; every
  Python block compiles (the README's own tour is run for real by tests/test_newcomer.py);
- every relative link reaches a file, and every ``#anchor`` a heading of it.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click
import pytest

from stimserver.cli import main
from stimserver.config import SETTINGS, Settings
from stimserver.web.openapi import build_openapi

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "scripts" / "README.md", *sorted(DOCS.glob("*.md"))]


def _doc(name: str) -> str:
    return (DOCS / name).read_text()


def _table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|") and not line.startswith("|---")]


def _shown(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- reference tables -----------------------------------------------------------------------------

def test_every_setting_is_documented():
    text = _doc("settings.md")
    rows = {m[0]: m[1:] for m in re.findall(r"^\| (\w+) \| `(\w+)` \| (.+?) \|", text, re.M)}
    for s in SETTINGS:
        assert s.name in rows, f"{s.name} missing from docs/settings.md"
        env, default = rows[s.name]
        assert env == s.env, s.name
        if s.name != "master_key_file":  # its default is computed: DATA/master.key
            assert default == f"`{_shown(s.default)}`" or default == _shown(s.default), (s.name, default)
        if s.flag:
            assert f"flag `{s.flag}`" in text, f"{s.name}: docs/settings.md does not name its flag {s.flag}"
    assert set(rows) == {s.name for s in SETTINGS}, "docs/settings.md documents a setting that does not exist"


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
    text = _doc("cli.md")
    rows = re.findall(r"^\| `(stimserver [^`]*)`", text, re.M)
    for path, command in _commands(main).items():
        row = [r for r in rows if r == path or r.startswith(path + " ")]
        assert len(row) == 1, f"{path}: {len(row)} rows in docs/cli.md's command table"
        listed = set(re.findall(r"--[a-z-]+", row[0]))
        assert _options(command) <= listed, f"{path}: {_options(command) - listed} not in docs/cli.md"
        assert listed <= _options(command), f"{path}: docs/cli.md lists {listed - _options(command)}, not an option"
    assert "`stimserver --version`" in text and "--version" in _options(main)


def _codes_in_code() -> dict[str, int]:
    """Every (code, status) the server can answer with: the error classes, the HTTP mapping, the parser's."""
    from stimserver.api import errors

    codes = {cls.code: cls.status for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.ApiError) and cls is not errors.ApiError}
    codes["INTERNAL_ERROR"] = 500
    codes |= {code: status for status, code in errors._HTTP_CODES.items()}
    protocol = (ROOT / "stimserver" / "web" / "protocol.py").read_text()
    codes |= {code: int(status) for status, code in re.findall(r'return (\d{3}), "([A-Z_]+)"', protocol)}
    return codes


def test_error_table_matches_the_codes_the_server_sends():
    rows = {row[1].strip("`"): int(row[0]) for row in _table_rows(_doc("errors.md"))[1:]}
    assert rows == _codes_in_code()


async def test_metrics_table_matches_the_exposition(tmp_path):
    from stimserver.store.paths import DataPaths
    from stimserver.web.metrics import Metrics, count_lines_generated, count_llm_cost, count_llm_request

    count_lines_generated(1, "stim")
    count_llm_request("openai", "m", "ok", 1, 1)
    count_llm_cost("openai", "m", 0.5)
    metrics = Metrics(DataPaths(tmp_path))
    metrics.observe("/v1/health", "GET", 200, 0.001, 10)
    text = (await metrics.exposition()).decode()
    families = {name: kind for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
                if not name.endswith("_created")}  # prometheus-client's timestamp beside each counter (the doc says)
    labels: dict[str, set[str]] = {}
    for name, body in re.findall(r"^(\w+)\{([^}]*)\}", text, re.M):
        family = next((f for f in families if name == f or (name.startswith(f + "_") and families[f] == "histogram")),
                      None)
        if family:
            labels.setdefault(family, set()).update(k for k in re.findall(r'(\w+)="', body) if k != "le")
    documented = {row[0].strip("`"): {x.strip(" `") for x in row[1].split(",")}
                  for row in _table_rows(_doc("metrics.md"))[1:] if row[0].startswith("`stimserver_")}
    assert set(documented) == set(families), "docs/metrics.md and /metrics name different metrics"
    for family, found in labels.items():
        assert documented[family] == found, family


def test_exactly_two_setup_commands():
    setup = README.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in setup.splitlines() if line.startswith("    ")]
    assert commands == ["scripts/serve", "scripts/test"]
    for script in commands:
        assert (ROOT / script).stat().st_mode & 0o111


def test_the_readme_stays_short():
    assert len(README.splitlines()) <= 200, "the README is a front page: move the detail to docs/"


# -- commands -------------------------------------------------------------------------------------

def _blocks(text: str) -> tuple[list[str], list[str]]:
    """(shell lines, python blocks) of a page: indented lines outside fences, continuations joined."""
    shell, python = [], []
    for i, part in enumerate(re.split(r"^```", text, flags=re.M)):
        if i % 2:
            lang, _, body = part.partition("\n")
            (python if lang.strip() == "python" else shell if lang.strip() in ("sh", "bash", "shell") else []).append(
                body)
            continue
        joined = ""
        for line in part.splitlines():
            if not line.startswith("    "):
                joined = ""
                continue
            joined += line.strip()
            if joined.endswith("\\"):
                joined = joined[:-1] + " "
                continue
            shell.append(joined)
            joined = ""
    lines = []
    for block in shell:
        lines += [line for line in block.splitlines() if line.strip()] if "\n" in block else [block]
    return lines, python


COMMAND_STARTS = ("stimserver", "scripts/", "python", "curl", "pip", "sudo", ".", "export", "gluster", "cd", "TOKEN=")


def _segments(line: str) -> list[list[str]]:
    """The simple commands of one shell line: split on |, &&, ;, &, with $(…) taken as its own."""
    line = line.split("  #", 1)[0]
    inner = re.findall(r"\$\(([^()]*)\)", line)
    line = re.sub(r"\$\([^()]*\)", "SUBST", line)
    lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    segments, current = [], []
    for token in lexer:
        if set(token) <= set("|&;"):
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    for sub in inner:
        segments += _segments(sub)
    out = []
    for words in segments:
        while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value before a command
            words = words[1:]
        if words:
            out.append(words)
    return out


def _doc_commands() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        lines, _ = _blocks(page.read_text())
        for line in lines:
            if line.startswith(COMMAND_STARTS):
                found.append((page.relative_to(ROOT).as_posix(), line))
    return found


def _route_patterns() -> list[re.Pattern[str]]:
    spec = build_openapi(Settings())
    pats = [re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(p)) + "$") for p in spec["paths"]]
    return pats + [re.compile(r"^/ui/.*$"), re.compile(r"^/metrics$")]


def _check_python_script(script: Path, words: list[str]) -> None:
    done = subprocess.run([sys.executable, str(script), *[w for w in words if not w.startswith("-")][:1], "--help"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, f"{script.name} --help: {done.stderr[-500:]}"
    for option in (w.split("=", 1)[0] for w in words if w.startswith("--")):
        assert option in done.stdout, f"{script.name}: the docs use {option}, its --help does not list it"


def _check(words: list[str]) -> None:
    head = words[0]
    if head == "stimserver":
        command, args, names = main, words[1:], ["stimserver"]
        while isinstance(command, click.Group) and args and not args[0].startswith("-"):
            assert args[0] in command.commands, f"no command {' '.join(names + args[:1])}"
            names.append(args[0])
            command, args = command.commands[args[0]], args[1:]
        command.make_context(" ".join(names), list(args), resilient_parsing=False)
    elif head.startswith("scripts/"):
        assert (ROOT / head).is_file() and (ROOT / head).stat().st_mode & 0o111, f"{head} is not an executable script"
    elif head in ("python", "python3") and len(words) > 1 and words[1].startswith("scripts/"):
        assert (ROOT / words[1]).is_file(), f"{words[1]} does not exist"
        _check_python_script(ROOT / words[1], words[2:])
    elif head == "curl":
        urls = [w for w in words if w.startswith("http")]
        assert urls, "a curl without a URL"
        for url in urls:
            path = urlsplit(url).path
            assert any(p.match(path) for p in _route_patterns()), f"{path} is not a route"
    elif head == "sudo":
        _check(words[1:])
    elif head in ("cp", "cat"):
        for word in words[1:]:
            if re.match(r"^(deploy|scripts|data|docs)/", word):
                assert (ROOT / word).exists(), f"{word} does not exist"
    # pip, ., export, cd, gluster, nginx, systemctl, tail, rm: nothing of ours to parse


@pytest.mark.parametrize("page,line", _doc_commands(), ids=lambda v: v[:60] if isinstance(v, str) else v)
def test_every_documented_command_parses(page, line):
    for words in _segments(line):
        _check(words)


def test_the_command_finder_sees_the_commands():
    """The parametrized test above is not vacuous: the known commands are among those it checks."""
    lines = {line for _, line in _doc_commands()}
    assert "scripts/serve" in lines and any(line.startswith("curl ") for line in lines)
    assert any("stimserver keys create" in line for line in lines)
    with pytest.raises(click.UsageError):
        _check(["stimserver", "keys", "create", "--no-such-option"])
    with pytest.raises(AssertionError):
        _check(["curl", "http://localhost:8080/v1/no/such/route"])


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_compile(page):
    for block in _blocks(page.read_text())[1]:
        compile(block, str(page), "exec")


# -- links ----------------------------------------------------------------------------------------

def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}


def _links() -> list[tuple[Path, str]]:
    found = []
    for page in PAGES:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
        text = re.sub(r"`[^`\n]*`", "", text)
        found += [(page, target) for target in re.findall(r"\]\(([^)\s]+)\)", text)]
    return found


def test_every_internal_link_resolves():
    broken = []
    for page, target in _links():
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{page.name}: {target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text()):
            broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []
    assert len(_links()) > 20, "the link finder found almost nothing: the check would be vacuous"


def test_every_docs_page_is_reachable_from_the_index():
    index = _doc("index.md")
    for page in DOCS.glob("*.md"):
        if page.name != "index.md":
            assert f"({page.name})" in index, f"docs/index.md does not link {page.name}"
