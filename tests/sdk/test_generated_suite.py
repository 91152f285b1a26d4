"""The official client's own generated test cases, run against a real stimserver (issue 26).

``aibread``'s sdist ships Stainless-generated cases for every operation
(tests/api_resources/: bakes, recipes, repo, prompts, targets, targets/stim, targets/rollout,
health), each once per client mode: sync loose and strict, async loose, strict and over
aiohttp. Upstream they run against a Prism mock and are all skipped ("Prism tests are
disabled"). This test runs them, unchanged, against stimserver:

* the sdist of the installed ``aibread`` version is downloaded by ``scripts/install --test``
  (into the venv's share/aibread-sdist/, or var/aibread-sdist/ of the checkout for a
  ``SCRIPTS_PYTHON`` install); nothing of it is kept in this repository;
* a server on a temp data directory, its master key given to the generated fixtures,
  and the cases' literal names seeded for the master user and for ``X-User-Id``
  (tests/sdk/seeding.py) — restored before each case if an earlier one deleted them;
* the generated files run in their own pytest, in the extracted sdist (so ``tests.utils``
  imports), with tests/sdk/suite_plugin.py lifting the Prism skip marks; the outcome of
  each case is read from its JUnit XML report.

Every case must pass but the documented refusals below, each failing with its stated
error; a refusal that starts to pass fails this test too, so the list stays true.
docs/compat.md explains them.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

from stimserver.config import Settings
from tests.aibread_server import ServerThread

ROOT = Path(__file__).resolve().parents[2]
# Where scripts/install --test puts the sdist: the venv's share/ (the checkout's .venv), else the checkout's var/.
SDIST_DIRS = (Path(sys.prefix) / "share" / "aibread-sdist", ROOT / "var" / "aibread-sdist")
KEY = "sdk-suite-master-key-0123456789"
MASTER_USER = "admin"
# The generated files, bakes and recipes first (issue 26); paths inside the sdist.
FILES = ("test_bakes.py", "test_recipes.py", "test_repo.py", "test_prompts.py", "test_targets.py",
         "targets/test_stim.py", "targets/test_rollout.py", "test_health.py")
CASES_DIR = "tests/api_resources"
RUN_TIMEOUT = 300


@dataclass(frozen=True)
class Refusal:
    """A generated case expected to fail, in every client mode (sync loose/strict, async loose/strict/aiohttp)."""

    file: str
    case: str
    errors: tuple[str, ...]  # what its failure report must all contain: the client's exception, the status, why
    reason: str
    client_defect: bool = False  # the client fails by itself, whatever a server answers


UNPROCESSABLE = "UnprocessableEntityError: Error code: 422"
BAKE_VALUES = ("its overrides are placeholders the bake rules refuse: datasets[0].weight 0, total_trajectories, "
               "epochs, micro_batch_size, gradient_accumulation_steps, r, lora_alpha, max_length, num_proc and "
               "train_log_iter_interval 0, bias 'bias', dtype 'dtype', data.temperature 0, train_eval_split [0], "
               "cache_fs_type 'cache_fs_type', learning_rate 0, betas [{}, {}], and the deprecated scheduler.lr")
BAKE_ERRORS = (UNPROCESSABLE, "overrides.epochs: must be at least 1, got 0", "overrides.scheduler.lr: is deprecated")
TARGET_VALUES = ("generators 0 (oneshot_qs) and 3 (persona) carry template_content 'template_content', which has "
                 "neither ${numq} nor ${prompt_u}: a question template must have both")
TARGET_ERRORS = (UNPROCESSABLE, "overrides.generators.0.template_content: template must contain ${numq} and "
                                "${prompt_u}")
RAW_RUN = ("client defect: run(poll=True), the default, reads `.status` of what _post returned, which under "
           "with_raw_response / with_streaming_response is an APIResponse, not the model (API.md §10.1)")
RAW_RUN_ERRORS = ("AttributeError", "APIResponse' object has no attribute 'status'")

EXPECTED_REFUSALS: tuple[Refusal, ...] = (
    Refusal("test_bakes.py", "test_method_create_with_all_params", BAKE_ERRORS, BAKE_VALUES),
    Refusal("test_bakes.py", "test_method_set_with_all_params", BAKE_ERRORS, BAKE_VALUES),
    Refusal("test_bakes.py", "test_raw_response_run", RAW_RUN_ERRORS, RAW_RUN, client_defect=True),
    Refusal("test_bakes.py", "test_streaming_response_run", RAW_RUN_ERRORS, RAW_RUN, client_defect=True),
    Refusal("test_targets.py", "test_method_create_with_all_params", TARGET_ERRORS, TARGET_VALUES),
    Refusal("test_targets.py", "test_method_set_with_all_params", TARGET_ERRORS, TARGET_VALUES),
    Refusal("targets/test_stim.py", "test_raw_response_run", RAW_RUN_ERRORS, RAW_RUN, client_defect=True),
    Refusal("targets/test_stim.py", "test_streaming_response_run", RAW_RUN_ERRORS, RAW_RUN, client_defect=True),
    Refusal("targets/test_rollout.py", "test_raw_response_run", RAW_RUN_ERRORS, RAW_RUN, client_defect=True),
    Refusal("targets/test_rollout.py", "test_streaming_response_run", RAW_RUN_ERRORS, RAW_RUN, client_defect=True),
)
COLUMNS = ("passed", "refused", "client defect", "unexpected")


def find_sdist() -> Path:
    name = f"aibread-{version('aibread')}.tar.gz"
    for folder in SDIST_DIRS:
        if (folder / name).is_file():
            return folder / name
    pytest.fail(f"the official client's sdist ({name}) is not in {' or '.join(map(str, SDIST_DIRS))}: "
                "run scripts/install --test, which downloads it there (pip download --no-binary :all:)")


def extract(sdist: Path, into: Path) -> Path:
    with tarfile.open(sdist) as tar:
        tar.extractall(into, filter="data")
    (top,) = [p for p in into.iterdir() if p.is_dir()]
    return top


def file_of(classname: str) -> str:
    """``tests.api_resources.targets.test_stim.TestStim`` → ``targets/test_stim.py``."""
    parts = classname.split(".")
    module = parts[2:-1] if parts[-1].startswith("Test") else parts[2:]
    return "/".join(module) + ".py"


def outcomes(report: Path) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(file, class, case[mode]) → (outcome, failure text) of every case in a JUnit XML report."""
    found: dict[tuple[str, str, str], tuple[str, str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        classname = case.get("classname", "")
        key = (file_of(classname), classname.rsplit(".", 1)[-1], case.get("name", ""))
        outcome, text = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome, text = tag, f"{node.get('message', '')}\n{node.text or ''}"
                break
        found[key] = (outcome, text)
    return found


def run_suite(sdk: Path, tmp_path: Path, base_url: str, data_dir: Path) -> Path:
    """The generated files in their own pytest (cwd: the sdist), with suite_plugin; returns the JUnit report."""
    plugin_root = tmp_path / "plugin"  # the plugin as a package named apart from the sdist's own `tests`
    plugin_root.mkdir()
    (plugin_root / "stimserver_sdk_suite").symlink_to(Path(__file__).parent)
    report = tmp_path / "generated.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update({"PYTHONPATH": str(plugin_root), "TEST_API_BASE_URL": base_url, "STIMSERVER_SDK_KEY": KEY,
                "STIMSERVER_SDK_DATA": str(data_dir), "STIMSERVER_SDK_MASTER_USER": MASTER_USER})
    # addopts cleared: the sdist's own asks for pytest-xdist (-n auto); its other settings hold.
    cmd = [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider",
           "-p", "stimserver_sdk_suite.suite_plugin", f"--junitxml={report}", "-q", "--tb=line",
           *[f"{CASES_DIR}/{f}" for f in FILES]]
    done = subprocess.run(cmd, cwd=sdk, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    (tmp_path / "generated.out").write_text(done.stdout + done.stderr)
    if not report.is_file() or done.returncode not in (0, 1):
        pytest.fail(f"the generated suite did not run (exit {done.returncode}):\n{done.stdout[-4000:]}"
                    f"\n{done.stderr[-4000:]}")
    return report


def first_line(text: str) -> str:
    return text.strip().splitlines()[0][:400] if text.strip() else ""


def test_generated_suite(tmp_path: Path) -> None:
    sdist = find_sdist()
    if importlib.util.find_spec("httpx_aiohttp") is None:
        pytest.fail("the generated cases' aiohttp mode needs aibread's aiohttp extra (httpx-aiohttp): "
                    "run scripts/install --test (the test extra lists aibread[aiohttp])")
    sdk = extract(sdist, tmp_path / "sdist")
    data_dir = tmp_path / "data"
    settings = Settings.build(data_dir=data_dir, master_key=KEY, master_user=MASTER_USER, access_log=False)
    server = ServerThread(settings).start()
    try:
        found = outcomes(run_suite(sdk, tmp_path, server.base_url, data_dir))
    finally:
        server.stop()
    assert len(found) >= 900, f"only {len(found)} generated cases ran"

    listed = {(r.file, r.case): r for r in EXPECTED_REFUSALS}
    unused = set(listed)
    table: dict[str, Counter[str]] = {f: Counter() for f in FILES}
    problems: list[str] = []
    for (file, cls, name), (outcome, text) in sorted(found.items()):
        case = name.split("[", 1)[0]
        refusal = listed.get((file, case))
        unused.discard((file, case))
        where = f"{file}::{cls}::{name}"
        column = "passed"
        if refusal is None:
            if outcome != "passed":
                column = "unexpected"
                problems.append(f"{where}: {outcome}: {first_line(text)}")
        elif outcome == "passed":
            column = "unexpected"
            problems.append(f"{where}: passes, but is listed as expected to fail ({refusal.reason}): "
                            "take it off EXPECTED_REFUSALS and docs/compat.md")
        elif all(e in text for e in refusal.errors):
            column = "client defect" if refusal.client_defect else "refused"
        else:
            column = "unexpected"
            problems.append(f"{where}: fails otherwise than listed ({' / '.join(refusal.errors)}): {first_line(text)}")
        table.setdefault(file, Counter())[column] += 1
    problems += [f"{f}::{c}: listed in EXPECTED_REFUSALS, but no such case ran" for f, c in sorted(unused)]

    lines = [f"{'file':<24}" + "".join(f"{c:>15}" for c in COLUMNS)]
    for file, counts in [*table.items(), ("total", sum(table.values(), Counter()))]:
        lines.append(f"{file:<24}" + "".join(f"{counts[c]:>15}" for c in COLUMNS))
    summary = "\n".join(lines)
    print(f"\nthe official client's generated cases against stimserver ({len(found)} cases):\n{summary}")
    (tmp_path / "problems.txt").write_text("\n".join(problems))
    assert not problems, "\n".join(problems[:60]) + f"\n({len(problems)} problems)\n{summary}"
