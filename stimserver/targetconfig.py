"""Target configuration: the fields of API.md §7, their defaults, and how overrides apply.

A target's effective config is its template's config (``"default"``: the table below)
with each override field that was sent (not null) replaced whole: ``generators`` and
``extra_kwargs`` are replaced, not merged. The deprecated inputs ``u``/``v`` become
``teacher_prompt``/``student_prompt``; a stored config has exactly the keys below.
"""
from __future__ import annotations

import copy
from typing import Any

from .generatorconfig import normalize_generator, template_files
from .jsonio import Problems, check_int, check_number, check_str, object_fields, type_name
from .store.paths import name_problem

__all__ = ["DEFAULT_TARGET_CONFIG", "DEFAULT_BASE_MODEL", "DEFAULT_TEMPLATE", "CONFIG_FIELDS", "ALIASES",
           "normalize_overrides", "effective_config", "public_config", "prompt_refs"]

DEFAULT_TARGET_CONFIG: dict = {
    "teacher_prompt": None,
    "student_prompt": None,
    "generators": [],
    "model_name": None,
    "num_traj_per_stimulus": 1,
    "max_concurrency": 10,
    "temperature": 1.0,
    "max_tokens": None,
    "extra_kwargs": {},
}

DEFAULT_BASE_MODEL = "Qwen/Qwen3-32B"
DEFAULT_TEMPLATE = "default"  # the built-in template; no target may take this name

CONFIG_FIELDS = tuple(DEFAULT_TARGET_CONFIG)
ALIASES = {"u": "teacher_prompt", "v": "student_prompt"}
MAX_TEXT = 256


def normalize_overrides(raw: Any, loc: list[str | int], problems: Problems) -> dict[str, Any]:
    """Checked overrides with null fields dropped and ``u``/``v`` renamed; problems recorded."""
    if raw is None:
        return {}
    fields = object_fields(raw, loc, problems, optional=CONFIG_FIELDS + tuple(ALIASES))
    if fields is None:
        return {}
    for alias, name in ALIASES.items():
        if alias in fields:
            value = fields.pop(alias)
            if name in fields and fields[name] != value:
                problems.add([*loc, alias], f"is the deprecated name of {name}, which is also given with "
                             "another value; send only one", "value_error.alias")
            else:
                fields[name] = value
    out: dict[str, Any] = {}
    for name in CONFIG_FIELDS:
        if name not in fields:
            continue
        value, where = fields[name], [*loc, name]
        if name in ("teacher_prompt", "student_prompt"):
            out[name] = _prompt_name(value, where, problems, allow_empty=name == "student_prompt")
        elif name == "generators":
            out[name] = _generators(value, where, problems)
        elif name == "model_name":
            out[name] = check_str(value, where, problems, max_len=MAX_TEXT)
        elif name in ("num_traj_per_stimulus", "max_concurrency", "max_tokens"):
            out[name] = check_int(value, where, problems, lo=1)
        elif name == "temperature":
            out[name] = check_number(value, where, problems, lo=0.0, hi=2.0)
        elif name == "extra_kwargs":
            if isinstance(value, dict):
                out[name] = value
            else:
                problems.add(where, f"must be an object, got {type_name(value)}", "type_error.dict")
    return {k: v for k, v in out.items() if v is not None}


def _prompt_name(value: Any, loc: list[str | int], problems: Problems, *, allow_empty: bool) -> str | None:
    if not isinstance(value, str):
        problems.add(loc, f"must be a prompt name (string), got {type_name(value)}", "type_error.str")
        return None
    if value == "" and allow_empty:
        return value
    problem = name_problem(value)
    if problem is not None:
        problems.add(loc, f"is not a valid prompt name: it {problem}", "value_error.name")
        return None
    return value


def _generators(value: Any, loc: list[str | int], problems: Problems) -> list[dict] | None:
    if not isinstance(value, list):
        problems.add(loc, f"must be a list of generators, got {type_name(value)}", "type_error.list")
        return None
    before = len(problems.detail)
    out = [normalize_generator(g, [*loc, i], problems) for i, g in enumerate(value)]
    if len(problems.detail) > before:
        return None
    template_files(out, loc, problems)  # type: ignore[arg-type]
    return None if len(problems.detail) > before else out  # type: ignore[return-value]


def public_config(config: dict | None) -> dict[str, Any]:
    """Exactly the §7 response fields, defaults filling any a stored record lacks."""
    config = config or {}
    return {k: copy.deepcopy(config.get(k, default)) for k, default in DEFAULT_TARGET_CONFIG.items()}


def effective_config(template_config: dict | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The template's config with each given override field replaced whole."""
    config = public_config(template_config)
    config.update(copy.deepcopy(overrides))
    return config


def prompt_refs(config: dict) -> dict[str, str]:
    """Field → prompt name for the prompts a config names (an empty student prompt names none)."""
    return {f: config[f] for f in ("teacher_prompt", "student_prompt") if config.get(f)}
