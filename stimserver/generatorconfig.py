"""Generators of a target's config (API.md §8): checked and normalised at creation.

A generator is stored as the client sent it, minus fields sent as ``null``, with
``temperature`` as a float and ``template_path`` normalised to ``templates/<file>``.
Every field is checked wherever it appears; fields a type does not use are kept but
ignored by the runner. Required per type:

    hardcoded     questions (non-empty strings); numq optional, at most len(questions)
    from_dataset  dataset, numq
    oneshot_qs    numq
    persona       numq
    custom        numq, and template_content or template_path

A ``template_content`` is a ``string.Template`` of at most 1 MB of UTF-8; for
``oneshot_qs`` and ``custom`` it must use ``${numq}`` and ``${prompt_u}``. Content
without a path gets a name derived from its hash, so sending the same generator twice
gives the same config (and an identical-create answers 200, not 409).
"""
from __future__ import annotations

import hashlib
import string
from typing import Any

from .jsonio import Problems, check_bool, check_int, check_number, check_str, object_fields, type_name
from .llm.questions import MAX_TEMPLATE_BYTES
from .store.paths import TEMPLATE_DIR, name_problem, template_file_name

__all__ = ["GENERATOR_TYPES", "GENERATOR_FIELDS", "TEMPLATE_DIR", "MAX_TEMPLATE_BYTES", "normalize_generator",
           "template_files", "template_file_name"]

GENERATOR_TYPES = ("oneshot_qs", "hardcoded", "persona", "from_dataset", "custom")
GENERATOR_FIELDS = ("type", "model", "numq", "temperature", "max_tokens", "dataset", "questions",
                    "template_path", "template_content", "seed", "rollout_with_conditioned")
TEMPLATE_IDENTIFIERS = {"oneshot_qs": ("numq", "prompt_u"), "custom": ("numq", "prompt_u")}
NEEDS_NUMQ = ("oneshot_qs", "persona", "from_dataset", "custom")
MAX_TEXT = 256  # model and dataset names


def normalize_generator(raw: Any, loc: list[str | int], problems: Problems) -> dict[str, Any] | None:
    """The normalised generator, or None after recording every problem it has."""
    before = len(problems.detail)
    fields = object_fields(raw, loc, problems, required=("type",), optional=GENERATOR_FIELDS[1:])
    if fields is None:
        return None
    out: dict[str, Any] = {}
    gtype = fields.get("type")
    if gtype is not None and check_str(gtype, [*loc, "type"], problems) is not None:
        if gtype not in GENERATOR_TYPES:
            problems.add([*loc, "type"], f"unknown generator type {gtype!r}; one of: {', '.join(GENERATOR_TYPES)}",
                         "value_error.generator_type")
            gtype = None
    else:
        gtype = None

    for key in ("model", "dataset"):
        if key in fields:
            out[key] = check_str(fields[key], [*loc, key], problems, max_len=MAX_TEXT)
    for key in ("numq", "max_tokens"):
        if key in fields:
            out[key] = check_int(fields[key], [*loc, key], problems, lo=1)
    if "seed" in fields:
        out["seed"] = check_int(fields["seed"], [*loc, "seed"], problems)
    if "temperature" in fields:
        out["temperature"] = check_number(fields["temperature"], [*loc, "temperature"], problems, lo=0.0, hi=2.0)
    if "rollout_with_conditioned" in fields:
        out["rollout_with_conditioned"] = check_bool(fields["rollout_with_conditioned"],
                                                     [*loc, "rollout_with_conditioned"], problems)
    if "questions" in fields:
        out["questions"] = _questions(fields["questions"], [*loc, "questions"], problems)
    if "template_path" in fields:
        out["template_path"] = _template_path(fields["template_path"], [*loc, "template_path"], problems)
    if "template_content" in fields:
        out["template_content"] = _template_content(fields["template_content"], [*loc, "template_content"],
                                                    problems, TEMPLATE_IDENTIFIERS.get(gtype or "", ()))
        if out["template_content"] is not None and "template_path" not in fields:
            digest = hashlib.sha256(out["template_content"].encode()).hexdigest()[:16]
            out["template_path"] = f"{TEMPLATE_DIR}/tpl-{digest}.txt"

    if gtype is not None:
        if gtype in NEEDS_NUMQ and "numq" not in fields:
            problems.add([*loc, "numq"], f"field required for a {gtype} generator", "value_error.missing")
        if gtype == "hardcoded":
            if "questions" not in fields:
                problems.add([*loc, "questions"], "field required for a hardcoded generator", "value_error.missing")
            elif out.get("questions") and out.get("numq") and out["numq"] > len(out["questions"]):
                problems.add([*loc, "numq"], f"is {out['numq']} but only {len(out['questions'])} questions are given",
                             "value_error.numq")
        if gtype == "from_dataset" and "dataset" not in fields:
            problems.add([*loc, "dataset"], "field required for a from_dataset generator", "value_error.missing")
        if gtype == "custom" and "template_path" not in fields and "template_content" not in fields:
            problems.add([*loc, "template_path"], "a custom generator needs template_path or template_content",
                         "value_error.missing")

    if len(problems.detail) > before:
        return None
    ordered = {"type": gtype}
    ordered.update((k, out[k]) for k in GENERATOR_FIELDS if k in out)
    return ordered


def _questions(value: Any, loc: list[str | int], problems: Problems) -> list[str] | None:
    if not isinstance(value, list):
        problems.add(loc, f"must be a list of strings, got {type_name(value)}", "type_error.list")
        return None
    if not value:
        problems.add(loc, "must contain at least one question", "value_error.list.min_items")
        return None
    ok = True
    for i, q in enumerate(value):
        ok = check_str(q, [*loc, i], problems) is not None and ok
    return list(value) if ok else None


def _template_path(value: Any, loc: list[str | int], problems: Problems) -> str | None:
    if check_str(value, loc, problems) is None:
        return None
    name = template_file_name(value)
    problem = name_problem(name)
    if problem is not None:
        problems.add(loc, f"must be a file name, optionally prefixed with '{TEMPLATE_DIR}/': file name {problem}",
                     "value_error.template_path")
        return None
    return f"{TEMPLATE_DIR}/{name}"


def _template_content(value: Any, loc: list[str | int], problems: Problems,
                      identifiers: tuple[str, ...]) -> str | None:
    if check_str(value, loc, problems) is None:
        return None
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        problems.add(loc, "is not valid UTF-8 text", "value_error.unicode")
        return None
    if size > MAX_TEMPLATE_BYTES:
        problems.add(loc, f"is {size} bytes; templates may be at most {MAX_TEMPLATE_BYTES} bytes",
                     "value_error.any_str.max_length")
        return None
    template = string.Template(value)
    if not template.is_valid():
        problems.add(loc, "is not a valid string.Template (write a literal '$' as '$$')", "value_error.template")
        return None
    missing = [name for name in identifiers if name not in template.get_identifiers()]
    if missing:
        problems.add(loc, "must use " + " and ".join(f"${{{m}}}" for m in missing), "value_error.template")
        return None
    return value


def template_files(generators: list[dict[str, Any]], loc: list[str | int] | None = None,
                   problems: Problems | None = None) -> dict[str, str | None]:
    """File name → content (None: must exist already) of the templates a config refers to.

    Two generators giving the same path different contents are a problem (recorded
    when ``problems`` is given; otherwise the first content wins).
    """
    files: dict[str, str | None] = {}
    for i, g in enumerate(generators):
        path = g.get("template_path")
        if path is None:
            continue
        name = template_file_name(path)
        content = g.get("template_content")
        if content is None:
            files.setdefault(name, None)
        elif files.get(name) is None:
            files[name] = content
        elif files[name] != content and problems is not None:
            problems.add([*(loc or []), i, "template_content"],
                         f"gives {path} another content than an earlier generator", "value_error.template")
    return files
