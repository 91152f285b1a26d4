"""The OpenAPI operations of bakes, recipes, the repo tree and the signed checkpoint downloads (issue 26).

Kept beside ``openapi.py`` (which merges ``bake_paths`` and ``bake_schemas``) and built with its
helpers, so these operations follow the same conventions: bearer key, user override, the Error
shape, 422 with detail. The one exception is the download route: its link is its permission,
so it is public (no bearer, no user override) and answers 403 for a bad or expired link.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from ..api.paging import MAX_QUERY_INT
from ..handlers.downloads import DOWNLOAD_ROUTE, GZIP
from ..schemas import bakes, recipes
from ..schemas.openapi import REF_TEMPLATE, to_openapi30
from .openapi_parts import INT, NAME, STR, B, R, error, int_query, ok, operation, path_param

__all__ = ["bake_paths", "bake_schemas", "BAKE_MODELS", "CHECKPOINT_EVALUATION"]

EVALUATION_STATUS = {"type": "string", "enum": ["not_started", "pending", "running", "complete", "failed"]}
# what the trainer writes as eval.json, and an evaluator as evals/<step>.json: held-out KL, behaviour, answers
EVAL_RESULT = {"type": "object", "description": "eval.json's shape: checkpoint, heldout {examples, stimuli, kl_before, "
               "kl_after, kl_drop}, behaviour, samples [{question, teacher, base, baked, kl_before, kl_after}]"}
CHECKPOINT_EVALUATION = {
    "type": "object",
    "required": ["bake_name", "checkpoint", "status", "error", "note", "requested_at", "finished_at", "evaluation"],
    "properties": {
        "bake_name": NAME, "checkpoint": {**INT, "minimum": 0}, "status": EVALUATION_STATUS,
        "error": {**STR, "nullable": True, "description": "why it failed (the end of the evaluator's log)"},
        "note": {**STR, "nullable": True, "description": "why a pending evaluation waits (no job runner)"},
        "requested_at": {**STR, "nullable": True}, "finished_at": {**STR, "nullable": True},
        "evaluation": {**EVAL_RESULT, "nullable": True},
    }}

BAKE_MODELS: dict[str, tuple[type[BaseModel], JsonSchemaMode]] = {
    "BakeCreate": (bakes.BakeCreate, "validation"), "BakeSet": (bakes.BakeSet, "validation"),
    "BakeBatch": (bakes.BakeBatch, "validation"), "BakeResponse": (bakes.BakeResponse, "serialization"),
    "BakeList": (bakes.BakeList, "serialization"),
    "BakeDownloadResponse": (bakes.BakeDownloadResponse, "serialization"),
    "RepoTreeResponse": (bakes.RepoTreeResponse, "serialization"),
    "RecipeDependencyGraph": (recipes.RecipeDependencyGraph, "serialization"),
    "RecreationPlan": (recipes.RecreationPlan, "serialization"),
}


def _openapi30_rest(schema: Any) -> Any:
    """What ``to_openapi30`` leaves of JSON Schema that 3.0 reads otherwise: a numeric ``exclusiveMinimum: x``
    becomes ``minimum: x, exclusiveMinimum: true``; a nullable ``enum`` lists null (3.0 allows only what it lists)."""
    if isinstance(schema, list):
        return [_openapi30_rest(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _openapi30_rest(v) for k, v in schema.items()}
    for key, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = out.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[bound], out[key] = value, True
    if out.get("nullable") and isinstance(out.get("enum"), list) and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    return out


def bake_schemas() -> dict[str, Any]:
    """The bodies and answers of the operations below, generated from ``schemas.bakes`` and ``schemas.recipes``."""
    refs, defs = models_json_schema(list(BAKE_MODELS.values()), ref_template=REF_TEMPLATE)
    wrong = {n: r["$ref"] for n, (m, mode) in BAKE_MODELS.items()
             if (r := refs[(m, mode)])["$ref"] != REF_TEMPLATE.format(model=n)}
    if wrong:
        raise RuntimeError(f"component names differ from the model names: {wrong}")
    schemas: dict[str, Any] = _openapi30_rest(to_openapi30(defs["$defs"]))
    return schemas


def bake_paths() -> dict[str, dict[str, Any]]:
    created = {201: ok("BakeResponse", "Created"), 200: ok("BakeResponse", "Exists already, identical")}
    create_description = (
        "The config is the template's ('default', or the merged config of a bake of this repo) with the "
        "overrides merged in: objects key by key, lists and other values replaced whole. 409 for another config "
        "under an existing name (bakes are immutable); 404 for a template bake that does not exist; 422 names "
        "each bad or unknown field, a datasets[].target that does not exist, and a parent bake of this repo "
        "(model.parent_model_name 'user/repo/bake/step') that does not exist.")
    return {
        R + "/tree": {"get": operation("repo_get_tree", "The repo's bakes and their parent edges", "repos",
                                       {200: ok("RepoTreeResponse")}, errors=(404,))},
        R + "/bakes": {
            "get": operation("bakes_list", "List bakes", "bakes", {200: ok("BakeList")}, errors=(404,)),
            "post": operation("bakes_create", "Create a bake", "bakes", created, body="BakeCreate",
                              errors=(404, 409), description=create_description),
        },
        R + "/bakes/batch": {
            "post": operation("bakes_create_batch", "Create bakes, in order", "bakes", {200: ok("BatchResult")},
                              body="BakeBatch", errors=(404,)),
            "put": operation("bakes_batch_set", "Create bakes, in order (deprecated)", "bakes",
                             {200: ok("BatchResult")}, body="BakeBatch", errors=(404,), deprecated=True),
        },
        B: {
            "get": operation("bakes_get", "A bake's config and state", "bakes", {200: ok("BakeResponse")},
                             errors=(404,)),
            "put": operation("bakes_set", "Create a bake (deprecated)", "bakes", {200: ok("BakeResponse")},
                             body="BakeSet", errors=(404, 409), deprecated=True, description=create_description),
            "post": operation("bakes_run", "Run the bake (idempotent; no body)", "bakes", {200: ok("BakeResponse")},
                              errors=(404, 409, 507),
                              description="Queues the bake's training job and answers its state at once. While a "
                                          "job exists, answers its state and starts no other; a failed one resumes "
                                          "from its newest checkpoint. 400: the bake cannot run as configured (no "
                                          "datasets, a dataset target without a complete rollout, a model that "
                                          "cannot be found, an option this server cannot honour)."),
            "delete": operation("bakes_delete", "Delete a bake, stopping its trainer", "bakes",
                                {200: ok("DeleteResponse")}, errors=(404, 409),
                                description="409 while another bake names one of its checkpoints as its "
                                            "model.parent_model_name, or while its trainer will not stop."),
        },
        B + "/metrics": {"get": operation(
            "bakes_get_metrics", "The bake's logged training rows", "bakes",
            {200: ok({"type": "array", "items": {"type": "object"}},
                     "train rows {type, iter, epoch, loss, lr, step_time, iter_time, tokens, seqlen} and eval rows "
                     "{type, iter, epoch, eval_loss, heldout_kl}, in order; [] before the first")},
            errors=(404,))},
        B + "/evaluation": {"get": operation(
            "bakes_get_evaluation", "The bake's held-out evaluation and before/after answers", "bakes",
            {200: ok({"type": "object", "required": ["bake_name", "before", "after", "evaluations"],
                      "properties": {
                          "bake_name": NAME, "before": {"type": "object", "nullable": True},
                          "after": {"type": "object", "nullable": True},
                          "evaluations": {"type": "object", "additionalProperties": EVALUATION_STATUS,
                                          "description": "{step: status} of the checkpoints evaluated or asked for"},
                          "checkpoint": {**INT, "minimum": 0}, "status": EVALUATION_STATUS,
                          "error": {**STR, "nullable": True}, "note": {**STR, "nullable": True},
                          "requested_at": {**STR, "nullable": True}, "finished_at": {**STR, "nullable": True}}},
                     "eval-before.json and eval.json as the trainer wrote them (null until written); with "
                     "checkpoint, after is that checkpoint's evaluation (null until done), beside its status")},
            query=[int_query("checkpoint", minimum=0, description="a published checkpoint step: its evaluation "
                                                                   "on request as after")],
            errors=(404,))},
        B + "/checkpoints/{checkpoint}/evaluation": {
            "parameters": [path_param("repo_name"), path_param("bake_name"),
                           {"name": "checkpoint", "in": "path", "required": True, "example": 4,
                            "schema": {**INT, "minimum": 0, "maximum": MAX_QUERY_INT},
                            "description": "a published checkpoint step of the bake"}],
            "post": operation(
                "bakes_evaluate_checkpoint", "Evaluate one checkpoint (idempotent; no body)", "bakes",
                {202: ok(CHECKPOINT_EVALUATION, "Queued, or already queued or running: nothing new starts"),
                 200: ok(CHECKPOINT_EVALUATION, "Done already: the stored evaluation")},
                errors=(404, 507),
                description="Asks for the held-out evaluation of a published checkpoint, as the bake computes at "
                            "its end (eval.json): held-out KL, the behaviour check and the teacher, base and baked "
                            "answers. A job runner computes it in a process of its own, one at a time, and stores "
                            "it once; the bake's final checkpoint is answered by its own evaluation. Asking for one "
                            "that is pending, running or done starts nothing; asking for a failed one retries it. "
                            "A bake still training may be asked about the checkpoints it has published. 404: no "
                            "such bake or checkpoint."),
            "get": operation(
                "bakes_get_checkpoint_evaluation", "Where one checkpoint's evaluation stands", "bakes",
                {200: ok(CHECKPOINT_EVALUATION)}, errors=(404,),
                description="not_started, pending, running, complete (with the evaluation, the shape of eval.json) "
                            "or failed (with the end of the evaluator's log)."),
        },
        B + "/download": {"get": operation(
            "bakes_download", "A signed link to download a checkpoint", "bakes", {200: ok("BakeDownloadResponse")},
            query=[int_query("checkpoint", minimum=0, description="a published checkpoint step (default: the newest)"),
                   int_query("expires_in", minimum=1, maximum=bakes.MAX_EXPIRES_IN, default=bakes.DEFAULT_EXPIRES_IN,
                             description="seconds the link stays valid")],
            errors=(404,),
            description="The link fetches a .tar.gz of the checkpoint (the LoRA adapter, the tokenizer, a model "
                        "card) from this server with no key. 404: no such checkpoint, or none yet.")},
        R + "/recipe/{bake_name}/dependency-graph": {"get": operation(
            "recipes_get_dependency_graph", "What a bake depends on", "recipes", {200: ok("RecipeDependencyGraph")},
            errors=(404,))},
        R + "/recipe/{bake_name}/recreation-plan": {"get": operation(
            "recipes_get_recreation_plan", "The steps that make a bake again", "recipes",
            {200: ok("RecreationPlan")}, errors=(404,))},
        DOWNLOAD_ROUTE: {"parameters": [
            {"name": "user", "in": "path", "required": True, "schema": NAME, "example": "admin"},
            {"name": "repo_name", "in": "path", "required": True, "schema": NAME, "example": "demo"},
            {"name": "bake_name", "in": "path", "required": True, "schema": NAME, "example": "bake1"},
            {"name": "checkpoint", "in": "path", "required": True, "schema": {**INT, "minimum": 0,
                                                                             "maximum": MAX_QUERY_INT}, "example": 4},
        ], "get": {
            "operationId": "bakes_download_archive", "summary": "Download a checkpoint by its signed link",
            "tags": ["bakes"], "security": [],
            "description": "The url of GET …/bakes/{bake_name}/download; no key. 403: a changed, foreign or "
                           "expired link; 404: the bake or checkpoint is gone.",
            "parameters": [
                {"name": "job", "in": "query", "required": True, "schema": {**INT, "minimum": 0,
                                                                           "maximum": MAX_QUERY_INT}},
                {"name": "expires", "in": "query", "required": True, "schema": {**INT, "minimum": 0,
                                                                               "maximum": MAX_QUERY_INT},
                 "description": "Unix time the link expires"},
                {"name": "signature", "in": "query", "required": True, "schema": {**STR, "minLength": 1}},
            ],
            "responses": {
                "200": {"description": "the checkpoint's .tar.gz", "content": {GZIP: {"schema": {
                    **STR, "format": "binary"}}}},
                "403": error(403, "a changed, foreign or expired link"),
                "404": error(404, "the bake or its checkpoint no longer exists"),
                "500": error(500),
            }}},
    }

