"""schemathesis hooks for the suite's run (loaded with SCHEMATHESIS_HOOKS=tests.web.schemathesis_hooks).

One check, ``documented_positive_data_acceptance``, stands in for schemathesis's own
``positive_data_acceptance`` (the run excludes that one): the same check, except for the refusals
that the OpenAPI document states in words because JSON Schema cannot state them. Each is named
here by its operation, status and error type or message, so any other refusal of schema-valid
data still fails the run. They are listed for users in docs/openapi.md.
"""
from __future__ import annotations

import re

import orjson
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

# (operationId pattern, status, error detail type or message pattern)
DOCUMENTED_REFUSALS = (
    # a pattern RE2 cannot compile (bad syntax, backreferences, too large): no JSON Schema says "RE2"
    (r"(stim|rollout)_output_search", 422, "value_error.pattern"),
    # a run has no body: its 400 is about the target as stored, which cannot run as configured (a prompt or
    # dataset it names is gone, no generators, no complete stim job, no model_name; API.md §10)
    (r"(stim|rollout)_run", 400, r".*"),
    # an estimate reads the target as stored too: its rollout's requests are known once the stim job is
    # complete, and priced once it has a model_name
    (r"rollout_estimate", 400, r"^(Stim job must complete|model_name must be configured)"),
    # rules across fields: a template's placeholders for its generator type, two generators naming one
    # template file with different contents, a hardcoded numq above its number of questions
    (r"targets_(create|set|create_batch|batch_set)", 422, "value_error.template"),
    (r"targets_(create|set|create_batch|batch_set)", 422, "value_error.numq"),
    # a bake run has no body either: its 400 is about the bake as stored (no datasets, a dataset target without a
    # complete rollout, a model that cannot be found, an option this server cannot honour)
    (r"bakes_run", 400, r".*"),
    # rules on stored state and across fields: each datasets[].target and a parent bake of this repo
    # (model.parent_model_name 'user/repo/bake/step') exist; train_eval_split adds up to 1; a target named once
    (r"bakes_(create|set)", 422, "value_error.target_not_found"),
    (r"bakes_(create|set)", 422, "value_error.bake_not_found"),
    (r"bakes_(create|set)", 422, "value_error.split"),
    (r"bakes_(create|set)", 422, "value_error.duplicate"),
)


def documented_refusal(operation_id: str, status: int, body: bytes) -> bool:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(answer, dict):
        return False
    types = {d.get("type") for d in answer.get("detail") or [] if isinstance(d, dict)}
    message = str(answer.get("message", ""))
    for op_pattern, want_status, what in DOCUMENTED_REFUSALS:
        if status != want_status or not re.fullmatch(op_pattern, operation_id):
            continue
        if what in types or (status == 400 and re.search(what, message, re.I)):
            return True
    return False


@schemathesis.check
def documented_positive_data_acceptance(ctx, response, case):
    """positive_data_acceptance, less the refusals the document states in words (DOCUMENTED_REFUSALS)."""
    operation_id = case.operation.definition.raw.get("operationId", "")
    if documented_refusal(operation_id, response.status_code, response.content):
        return None
    return positive_data_acceptance(ctx, response, case)
