"""The package's layers, read from its source: no import cycle, and every arrow points down.

Every import counts, also one inside a function or under ``TYPE_CHECKING``: a cycle that
only type-checking sees still ties two modules together for the reader. The layers, from
the top (docs/architecture.md draws them):

    cli -> worker -> web -> handlers -> api -> jobs -> schemas -> llm -> train -> config -> store

``train/`` runs in processes of its own (the model side: torch, transformers); nothing of the server
imports it, which ``test_serve_never_loads_the_training_stack`` checks at run time.

``stimserver/__init__.py`` holds only ``__version__`` and may be read from anywhere.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "stimserver"

# From the top down; a module may import its own layer and any layer below it.
LAYERS = ["cli", "worker", "web", "handlers", "api", "jobs", "schemas", "llm", "train", "config", "store"]
ROOT = "stimserver"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each stimserver module and the stimserver modules it imports (absolute or relative, anywhere in it)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target == ROOT or target.startswith(ROOT + "."):
                    for alias in node.names:  # `from . import x` names a module when x is one
                        found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name == ROOT or a.name.startswith(ROOT + ".")}
        graph[name] = found - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c in graph), None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return None if len(parts) == 1 or parts[1] == "__main__" else parts[1]


def rank(layer: str) -> int:
    return LAYERS.index(layer)


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle():
    """The check above can fail: a made-up graph with a three-module loop is caught."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_every_module_sits_in_a_known_layer():
    unknown = {m for m in import_graph() if layer_of(m) is not None and layer_of(m) not in LAYERS}
    assert unknown == set(), "a new top-level module or folder: place it in LAYERS and docs/architecture.md"


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    arrows = []
    for module, imported in graph.items():
        here = layer_of(module)
        for target in imported:
            there = layer_of(target)
            if here is None or there is None or here == there:
                continue
            if rank(there) <= rank(here):
                arrows.append(f"{module} -> {target}")
    return sorted(arrows)


def test_every_arrow_points_down():
    assert upward_arrows(import_graph()) == []


@pytest.mark.parametrize("module,target", [("stimserver.store.paths", "stimserver.jobs.runner"),
                                           ("stimserver.handlers.jobs", "stimserver.web.app"),
                                           ("stimserver.web.app", "stimserver.worker")])
def test_an_upward_arrow_is_caught(module, target):
    assert upward_arrows({module: {target}, target: set()}) == [f"{module} -> {target}"]


def test_store_imports_nothing_above_it():
    graph = import_graph()
    above = {t for m, ts in graph.items() if layer_of(m) == "store" for t in ts if layer_of(t) != "store"}
    assert above == set()


PROBE = """
import json, sys
import stimserver.cli, stimserver.web.app, stimserver.web.server, stimserver.worker
print(json.dumps(sorted(sys.modules)))
"""


def test_serve_never_loads_the_training_stack():
    """``stimserver serve`` and ``worker`` stay light: starting them loads no torch or transformers."""
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True,
                          cwd=PACKAGE.parent)
    heavy = {"torch", "transformers", "peft", "trl", "accelerate"}
    assert [m for m in json.loads(done.stdout) if m.split(".")[0] in heavy] == []
