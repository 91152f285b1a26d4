"""The OpenAPI operations of issue 11 — export, search, samples and stats of a job's output.

Kept beside ``openapi.py`` (which calls ``output_paths`` per job kind and merges
``output_schemas``) and built with its helpers, so these operations follow the same
conventions: bearer key, user override, the Error shape, 422 with detail.
"""
from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from ..handlers.search import MAX_FIELD, MAX_MATCHES, MAX_SAMPLE
from ..schemas.openapi import REF_TEMPLATE, to_openapi30
from ..schemas.outputs import OUTPUT_ANSWERS
from ..store.formats import FORMATS
from ..store.scan import MAX_PATTERN
from .openapi_parts import STR, T, error, int_query, ok, operation

__all__ = ["output_paths", "output_schemas"]

NDJSON = "application/x-ndjson"
FIELD_PATH = r"^[^.]+(\.[^.]+)*$"


def output_schemas() -> dict[str, Any]:
    """The answers of the output operations, generated from ``schemas.outputs`` like the others."""
    _, defs = models_json_schema([(m, "serialization") for m in OUTPUT_ANSWERS.values()],
                                 ref_template=REF_TEMPLATE)
    schemas: dict[str, Any] = to_openapi30(defs["$defs"])
    return schemas


def _text_query(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {**STR, **schema}, "description": description}


def output_paths(kind: str) -> dict[str, dict[str, Any]]:
    """Export, search, sample and stats of one job kind's output."""
    formats = [name for name, (kinds, _) in FORMATS.items() if kind in kinds]
    export_ok = {"description": "every committed line (gzip with Accept-Encoding: gzip)",
                 "content": {NDJSON: {"schema": STR}}}
    return {
        f"{T}/{kind}/export": {"get": operation(
            f"{kind}_export", f"The whole {kind} output as JSON lines", kind,
            {200: export_ok, 206: {"description": "the bytes a Range asked for", "content": {NDJSON: {"schema": STR}}},
             416: error(416, "the Range starts past the end of the output")},
            query=[{"name": "format", "in": "query", "required": False,
                    "schema": {**STR, "enum": formats, "default": "raw"},
                    "description": "raw: the stored lines; questions: {stimulus_id, question}; sft: chat rows"}],
            errors=(404,),
            description="The lines committed when the request starts (X-Stimserver-Lines; the job's state in "
                        "X-Stimserver-Job-Status). raw honours one Range (bytes of the stored lines) and is sent "
                        "with Content-Length; gzip, when asked and without Range, is streamed chunked.")},
        f"{T}/{kind}/output/search": {"get": operation(
            f"{kind}_output_search", f"Search the {kind} output", kind, {200: ok("SearchAnswer")},
            query=[_text_query("q", "case-insensitive substring; with regex too, a line must match both", minLength=1,
                               maxLength=MAX_PATTERN),
                   _text_query("regex", "RE2 pattern (linear time; no backreferences); without q and regex every line "
                                        "matches", minLength=1,
                               maxLength=MAX_PATTERN),
                   _text_query("field", "dotted path of the value to match, e.g. question or response.content",
                               pattern=FIELD_PATH, maxLength=MAX_FIELD),
                   int_query("offset", minimum=0, default=0, description="line to start scanning from"),
                   int_query("limit", minimum=1, maximum=MAX_MATCHES, default=100, description="matches at most")],
            errors=(404,),
            description="Scans at most search_scan_bytes per request; continue from next_offset until it is null. "
                        "422 names a pattern that does not compile. Neither q nor regex: every line (with field: every "
                        "line that has it); both: the lines that match both.")},
        f"{T}/{kind}/output/sample": {"get": operation(
            f"{kind}_output_sample", f"A seeded random sample of the {kind} output", kind, {200: ok("SampleAnswer")},
            query=[int_query("n", minimum=1, maximum=MAX_SAMPLE, default=10, description="lines to draw"),
                   int_query("seed", minimum=0, maximum=2**63 - 1, default=0,
                              description="the same lines for the same seed and line count")],
            errors=(404,))},
        f"{T}/{kind}/output/stats": {"get": operation(
            f"{kind}_output_stats", f"Statistics of the {kind} output", kind, {200: ok("StatsAnswer")},
            errors=(404,),
            description="Computed by one scan and cached beside the output; a grown output is extended.")},
    }

