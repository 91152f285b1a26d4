"""The OpenAPI components, generated from the models (served by ``stimserver/web/openapi.py``).

Pydantic writes JSON Schema 2020-12; ``to_openapi30`` turns it into OpenAPI 3.0.3: a
union with null becomes ``nullable``, ``const`` an ``enum``, titles go. Refs point
under ``#/components/schemas/``, named after the model classes.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from . import common, jobs, prompts, repos, targets

__all__ = ["BODIES", "ANSWERS", "REF_TEMPLATE", "component_schemas", "to_openapi30"]

# Component name → (model, mode). Bodies are documented as they are parsed, answers as they are sent.
BODIES: dict[str, type[BaseModel]] = {
    "RepoCreate": repos.RepoCreate, "PromptCreate": prompts.PromptCreate, "PromptSet": prompts.PromptSet,
    "PromptBatch": prompts.PromptBatch, "TargetCreate": targets.TargetCreate, "TargetSet": targets.TargetSet,
    "TargetBatch": targets.TargetBatch,
}
ANSWERS: dict[str, type[BaseModel]] = {
    "Error": common.Error, "Health": common.Health, "BatchResult": common.BatchResult,
    "DeleteResponse": common.DeleteResponse, "RepoResponse": repos.RepoResponse, "RepoList": repos.RepoList,
    "PaginatedRepoList": repos.PaginatedRepoList,
    "PromptResponse": prompts.PromptResponse, "PromptList": prompts.PromptList,
    "TargetResponse": targets.TargetResponse, "TargetList": targets.TargetList,
    "JobResponse": jobs.JobResponse, "JobPage": jobs.JobPage, "RolloutResponse": jobs.RolloutResponse,
    "RolloutGetOutputResponse": jobs.RolloutGetOutputResponse,
}
REF_TEMPLATE = "#/components/schemas/{model}"


def to_openapi30(schema: Any) -> Any:
    """JSON Schema (pydantic's, 2020-12) → OpenAPI 3.0.3: ``nullable`` for null unions, no ``const``/titles."""
    if isinstance(schema, list):
        return [to_openapi30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_openapi30(v) for k, v in schema.items() if k != "title"}
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for key in ("anyOf", "oneOf"):
        options = out.get(key)
        if isinstance(options, list) and {"type": "null"} in options:
            rest = [o for o in options if o != {"type": "null"}]
            del out[key]
            if len(rest) == 1:
                single = rest[0]
                # a $ref takes no siblings in 3.0: wrap it to say it may be null
                out = {**({"allOf": [single]} if "$ref" in single else single), **out}
            else:
                out[key] = rest
            out["nullable"] = True
    return out


def component_schemas(*, max_page_size: int) -> dict[str, Any]:
    """Every model below and what it refers to, as OpenAPI 3.0.3 component schemas."""
    pairs: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m, "validation") for m in BODIES.values()]
    pairs += [(m, "serialization") for m in ANSWERS.values()]
    refs, defs = models_json_schema(pairs, ref_template=REF_TEMPLATE)
    names = {name: refs[(model, "validation")]["$ref"] for name, model in BODIES.items()}
    names |= {name: refs[(model, "serialization")]["$ref"] for name, model in ANSWERS.items()}
    # Operations refer to components by these names: they must be the ones pydantic used
    # (it appends -Input/-Output to a model whose two modes differ).
    wrong = {n: r for n, r in names.items() if r != REF_TEMPLATE.format(model=n)}
    if wrong:
        raise RuntimeError(f"component names differ from the model names: {wrong}")
    schemas: dict[str, Any] = to_openapi30(defs["$defs"])
    for page in ("JobPage", "RolloutGetOutputResponse"):
        schemas[page]["properties"]["limit"]["maximum"] = max_page_size
    return schemas
