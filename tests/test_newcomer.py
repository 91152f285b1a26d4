"""A newcomer's first ten minutes: the README's set-up and "Try it" examples, run in a clone.

They must work as written and leave the clone's ``git status --porcelain`` empty. For speed
this runs the current interpreter (``SCRIPTS_PYTHON``, ``SCRIPTS_INSTALL=0``) with a stand-in
``.venv/bin/activate``; ``.ci/newcomer`` runs the first set-up line verbatim on Debian's python3.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
GIT = ["git", "-c", "user.name=newcomer", "-c", "user.email=newcomer@example.invalid",
       "-c", "advice.detachedHead=false"]


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def shell_lines(text: str) -> list[str]:
    """The indented (shell) lines of a README section, dedented; fenced blocks are not shell."""
    unfenced = text.split("```")[::2]
    return [line[4:] for part in unfenced for line in part.splitlines() if line.startswith("    ")]


def python_block(text: str) -> str:
    return text.split("```python\n", 1)[1].split("```", 1)[0]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def need_git_checkout() -> None:
    if subprocess.run(["git", "rev-parse", "--git-dir"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")


def clone_checkout(dest: Path) -> Path:
    """Clone this checkout, with its uncommitted changes committed in the clone, so that the
    clone starts clean and tests what is on disk here."""
    need_git_checkout()
    git(dest.parent, "clone", "-q", str(ROOT), str(dest))
    diff = subprocess.run(["git", "diff", "--binary", "HEAD"], cwd=ROOT, check=True, capture_output=True).stdout
    if diff:
        subprocess.run([*GIT, "apply", "--binary", "-"], cwd=dest, input=diff, check=True)
    for name in git(ROOT, "ls-files", "-z", "--others", "--exclude-standard").split("\0"):
        if name:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    git(dest, "add", "-A")
    if git(dest, "status", "--porcelain"):
        git(dest, "commit", "-q", "-m", "uncommitted changes of the checkout under test")
    return dest


def fake_venv(clone: Path) -> dict[str, str]:
    """A .venv/bin whose stimserver and python are this interpreter on the clone's code, and the
    environment the README's commands then run in."""
    bin_dir = clone / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    for name, args in (("python", ""), ("stimserver", " -m stimserver")):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec "{sys.executable}"{args} "$@"\n')
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STIMSERVER_", "BREAD_", "SCRIPTS_"))}
    env.update(PYTHONPATH=str(clone), SCRIPTS_PYTHON=sys.executable, SCRIPTS_INSTALL="0")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/v1/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the server did not answer within 60 s:\n{log.read_text()}")


def test_readme_examples_leave_the_checkout_clean(tmp_path: Path) -> None:
    clone = clone_checkout(tmp_path / "stimserver")
    env = fake_venv(clone)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = shell_lines(section("Set up"))[0]
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(["bash", "-c", serve], cwd=clone, env={**env, "STIMSERVER_PORT": str(port)},
                                  stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(url, server, log)
        try_it = section("Try it")
        lines = shell_lines(try_it)
        assert "pip install aibread" in lines  # the client is already installed here
        script = "\n".join(line for line in lines if line != "pip install aibread")
        script += f"\npython - <<'PY'\n{python_block(try_it)}PY\n"
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script.replace("http://localhost:8080", url)],
                              cwd=clone, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
    out = done.stdout
    assert '"question":"What is the capital of Australia?"' in out  # the master key's curl
    assert '"status":"complete"' in out  # the user key's curl
    assert "complete 40 False What is the capital of Australia?" in out  # the client reads the demo
    assert "complete 2\nWhat is the capital of Kenya?" in out  # the pipeline ran
    served = clone / "var" / "data"
    assert (served / "master.key").is_file() and (served / "keys.json").is_file()
    assert (served / "users" / "demo" / "repos" / "newcomer" / "targets" / "capitals").is_dir()
    assert not (clone / "data" / "users" / "demo" / "repos" / "newcomer").exists()
    assert git(clone, "status", "--porcelain", "--untracked-files=all") == ""


def test_gitignore_ignores_nothing_that_is_tracked() -> None:
    need_git_checkout()
    assert git(ROOT, "ls-files", "--cached", "--ignored", "--exclude-standard") == ""


@pytest.mark.parametrize("path, ignored", [
    (".venv/bin/python", True),
    ("var/data/users/demo/repos/newcomer/repo.json", True),
    ("lt-data/keys.json", True),
    # a server started on the shipped data/ itself: what it creates is ignored, the demo is not
    ("data/master.key", True),
    ("data/users/demo/repos/newcomer/repo.json", True),
    ("data/users/alice/repos/r/repo.json", True),
    ("data/users/demo/repos/demo/targets/t/stim.lock", True),
    ("data/users/demo/repos/demo/repo.json", False),
    ("data/users/demo/repos/demo/targets/new/target.json", False),
    ("data/personas.json", False),
])
def test_what_users_create_is_ignored(path: str, ignored: bool) -> None:
    need_git_checkout()
    check = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT)
    assert check.returncode == (0 if ignored else 1)


@pytest.mark.parametrize("venv_error, expected", [
    ("The virtual environment was not created successfully because ensurepip is not available.",
     "sudo apt-get install python3-venv"),
    ("Error: [Errno 28] No space left on device", "python3 -m venv failed: Error: [Errno 28] No space left on device"),
], ids=["no-venv-module", "other-failure"])
def test_install_says_in_one_line_why_no_venv(tmp_path: Path, venv_error: str, expected: str) -> None:
    """A python3 that cannot make a venv gets one line saying what to do, and no half-made .venv."""
    (tmp_path / "scripts").mkdir()
    shutil.copy2(ROOT / "scripts" / "install", tmp_path / "scripts" / "install")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = -m ] && [ "$2" = venv ]; then mkdir -p "$4/bin"; echo "{venv_error}" >&2; exit 1; fi\n'
        f'if [ "$2" = "import ensurepip" ]; then {"exit 1" if "ensurepip" in venv_error else "exit 0"}; fi\n'
        f'exec "{sys.executable}" "$@"\n')
    (fake / "python3").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRIPTS_")}
    env["PATH"] = f"{fake}:{env['PATH']}"
    done = subprocess.run(["bash", str(tmp_path / "scripts" / "install")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[-1].startswith("scripts/install: ") and expected in lines[-1], done.stderr
    assert not any("Traceback" in line for line in lines)
    assert not (tmp_path / ".venv").exists()
