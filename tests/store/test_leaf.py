"""store/ is the bottom layer: importing any of it loads no web, HTTP-error, job or LLM code."""
from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import stimserver.store

FORBIDDEN = ("aiohttp", "stimserver.web", "stimserver.handlers", "stimserver.api", "stimserver.jobs",
             "stimserver.llm", "stimserver.schemas", "stimserver.worker", "stimserver.cli", "torch")

PROBE = """
import importlib, json, pkgutil, sys
import stimserver.store as store
names = sorted("stimserver.store." + m.name for m in pkgutil.iter_modules(store.__path__))
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "loaded": sorted(sys.modules)}))
"""


def test_every_store_module_imports_without_the_upper_layers():
    root = Path(stimserver.store.__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120,
                          check=True)
    result = json.loads(done.stdout)
    expected = {"stimserver.store." + m.name for m in pkgutil.iter_modules(stimserver.store.__path__)}
    assert set(result["imported"]) == expected and "stimserver.store.records" in expected
    leaks = [m for m in result["loaded"] if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert leaks == []
