"""Recipes (API.md §14): a bake's dependency graph and its recreation plan (answers only)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .base import Answer

__all__ = ["RecipeDependencyGraph", "RecreationStep", "RecreationResources", "RecreationBake", "RecreationPlan",
           "ACTIONS"]

ACTIONS = ("create_prompt", "create_target", "run_stim", "run_rollout", "create_bake", "run_bake")


class RecipeDependencyGraph(Answer):
    base_model: str = Field(description="the repo's base model")
    bakes: dict[str, dict[str, Any]] = Field(description="bake name → merged config: the bake and its parents")
    targets: dict[str, dict[str, Any]] = Field(description="target name → config: the bakes' datasets and their "
                                                           "template targets")
    prompts: dict[str, str | None] = Field(description="prompt name → null (stimserver shows no storage paths)")
    edges: list[list[str]] = Field(description="[type, name, type, name] from the dependent to the dependency, "
                                               "e.g. ['bake', 'b', 'target', 't']")


class RecreationStep(Answer):
    step: int = Field(ge=1, description="position in execution order")
    action: Literal["create_prompt", "create_target", "run_stim", "run_rollout", "create_bake", "run_bake"]
    resource_type: Literal["prompt", "target", "bake"]
    resource_name: str
    dependencies: list[str] = Field(description="'type:name', or 'type:name:state' (target:t:rollout_complete, "
                                                "target:t:stim_complete, bake:b:complete)")
    config: dict[str, Any] = Field(description="create_prompt: {messages, tools?}; create_target and create_bake: "
                                               "the whole config, to send as overrides with template 'default'; "
                                               "runs: {}")


class RecreationBake(Answer):
    bake_name: str
    model_names: list[str] | None = Field(description="the bake's checkpoints, newest first; null without any")


class RecreationResources(Answer):
    prompts: list[str]
    targets: list[str]
    bakes: list[RecreationBake]


class RecreationPlan(Answer):
    base_model: str
    total_steps: int = Field(ge=0)
    steps: list[RecreationStep]
    resources: RecreationResources
