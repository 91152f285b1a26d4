"""The bake config (schemas/bakes.py): the client's fields, strictness, bounds, the default and the merge."""
from __future__ import annotations

import copy
import typing

import pytest
import typing_extensions
from aibread.types import bake_config_base_param

from stimserver.schemas.bakes import (
    DEFAULT_BAKE_CONFIG,
    BakeConfigBase,
    BakeCreate,
    BakeSet,
    bake_config,
    checkpoint_ref,
    dataset_targets,
    merge,
    parent_bake,
)
from stimserver.schemas.validation import Invalid, parse


def problems(value, model=BakeCreate):
    with pytest.raises(Invalid) as e:
        parse(model, value)
    return e.value.detail


def body(**overrides):
    return {"bake_name": "b", "template": "default", "overrides": overrides}


def _typed_dict(annotation):
    """The TypedDict inside Optional[...] / Iterable[...] of a client annotation, if any."""
    if typing_extensions.is_typeddict(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        found = _typed_dict(arg)
        if found is not None:
            return found
    return None


def _client_fields(typed: type, prefix: str = "") -> set[str]:
    hints = typing_extensions.get_type_hints(typed, include_extras=True)
    found = set()
    for name, annotation in hints.items():
        found.add(prefix + name)
        inner = _typed_dict(annotation)
        if inner is not None:
            found |= _client_fields(inner, prefix + name + ".")
    return found


def _models_in(annotation) -> list[type]:
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _model_fields(model, prefix: str = "") -> set[str]:
    found = set()
    for name, info in model.model_fields.items():
        found.add(prefix + name)
        for inner in _models_in(info.annotation):
            found |= _model_fields(inner, prefix + name + ".")
    return found


def test_every_field_of_the_clients_type_and_no_other():
    client = _client_fields(bake_config_base_param.BakeConfigBaseParam)
    assert "data.train_eval_split" in client and "model.baked_adapter_config.lora_alpha" in client
    assert _model_fields(BakeConfigBase) == client


def test_the_default_is_a_valid_config_and_departs_from_bread_as_documented():
    assert BakeConfigBase.model_validate(DEFAULT_BAKE_CONFIG).stored() == DEFAULT_BAKE_CONFIG
    assert DEFAULT_BAKE_CONFIG["deepspeed"] == {"zero_optimization": {"stage": 0}}
    assert DEFAULT_BAKE_CONFIG["data"]["train_eval_split"] == [0.9, 0.1]
    assert DEFAULT_BAKE_CONFIG["model"]["disable_activation_checkpoint"] is True
    assert DEFAULT_BAKE_CONFIG["optimizer"] == {"type": "adamw", "learning_rate": 2e-4, "weight_decay": 0.0,
                                                "betas": [0.9, 0.999]}
    assert DEFAULT_BAKE_CONFIG["datasets"] == []
    # Bread's own values elsewhere (API.md §14)
    assert (DEFAULT_BAKE_CONFIG["micro_batch_size"], DEFAULT_BAKE_CONFIG["total_trajectories"],
            DEFAULT_BAKE_CONFIG["seed"]) == (2, 3600, 42)
    assert DEFAULT_BAKE_CONFIG["model"]["baked_adapter_config"] == {
        "r": 32, "lora_alpha": 16, "lora_dropout": 0.0, "bias": "none", "target_modules": "all-linear"}


def test_merge_objects_by_key_and_lists_whole():
    base = {"a": 1, "model": {"x": 1, "cfg": {"r": 8, "alpha": 16}}, "datasets": [{"target": "t1"}, {"target": "t2"}]}
    merged = merge(base, {"model": {"cfg": {"r": 4}}, "datasets": [{"target": "t3"}], "b": 2})
    assert merged == {"a": 1, "b": 2, "model": {"x": 1, "cfg": {"r": 4, "alpha": 16}}, "datasets": [{"target": "t3"}]}
    assert base["model"]["cfg"]["r"] == 8  # the template is not changed
    assert merge(base, {"model": 5})["model"] == 5  # a non-object replaces an object
    config = bake_config(None, {"optimizer": {"learning_rate": 1e-3}, "data": {"train_eval_split": [1.0, 0.0]}})
    assert config["optimizer"] == {**DEFAULT_BAKE_CONFIG["optimizer"], "learning_rate": 1e-3}
    assert config["data"]["train_eval_split"] == [1.0, 0.0] and config["data"]["max_length"] == 3000
    assert bake_config(None, {}) == DEFAULT_BAKE_CONFIG and bake_config(None, {}) is not DEFAULT_BAKE_CONFIG
    assert merge(DEFAULT_BAKE_CONFIG, copy.deepcopy(config)) == config  # a whole config sent again gives itself


def test_stored_overrides_are_normalised():
    parsed = parse(BakeCreate, body(data={"beta": 0, "temperature": 2}, datasets=[{"target": "t"}], epochs=3.0,
                                    seed=None, model=None))
    assert parsed.overrides.stored() == {"data": {"beta": 0.0, "temperature": 2.0}, "epochs": 3,
                                         "datasets": [{"target": "t", "weight": 1.0}]}
    assert isinstance(parsed.overrides.stored()["data"]["beta"], float)


@pytest.mark.parametrize("overrides, loc, type_", [
    ({"model": {"foo": 1}}, ["body", "overrides", "model", "foo"], "value_error.extra"),
    ({"bogus": 1}, ["body", "overrides", "bogus"], "value_error.extra"),
    ({"deepspeed": {"zero_optimization": {"stage": 4}}}, ["body", "overrides", "deepspeed", "zero_optimization",
                                                          "stage"], "value_error.number.not_le"),
    ({"data": {"train_eval_split": [0.5, 0.4]}}, ["body", "overrides", "data", "train_eval_split"],
     "value_error.split"),
    ({"data": {"train_eval_split": [0.0, 1.0]}}, ["body", "overrides", "data", "train_eval_split"],
     "value_error.split"),
    ({"data": {"beta": 1.5}}, ["body", "overrides", "data", "beta"], "value_error.number.not_le"),
    ({"datasets": [{"target": "a"}, {"target": "a", "weight": 2}]}, ["body", "overrides", "datasets", 1, "target"],
     "value_error.duplicate"),
    ({"datasets": [{"weight": 1}]}, ["body", "overrides", "datasets", 0, "target"], "value_error.missing"),
    ({"datasets": [{"target": "../x"}]}, ["body", "overrides", "datasets", 0, "target"], "value_error.name"),
    ({"datasets": [{"target": "t", "weight": 0}]}, ["body", "overrides", "datasets", 0, "weight"], "greater_than"),
    ({"scheduler": {"lr": 0.1}}, ["body", "overrides", "scheduler", "lr"], "value_error.deprecated"),
    ({"epochs": 0}, ["body", "overrides", "epochs"], "value_error.number.not_ge"),
    ({"epochs": 1.5}, ["body", "overrides", "epochs"], "type_error.integer"),
    ({"epochs": True}, ["body", "overrides", "epochs"], "type_error.integer"),
    ({"micro_batch_size": "2"}, ["body", "overrides", "micro_batch_size"], "type_error.integer"),
    ({"seed": 2**32}, ["body", "overrides", "seed"], "value_error.number.not_le"),
    ({"optimizer": {"learning_rate": 0}}, ["body", "overrides", "optimizer", "learning_rate"], "greater_than"),
    ({"optimizer": {"betas": [0.9, 1.0]}}, ["body", "overrides", "optimizer", "betas", 1], "less_than"),
    ({"model": {"dtype": "int4"}}, ["body", "overrides", "model", "dtype"], "literal_error"),
    ({"model": {"baked_adapter_config": {"r": 0}}}, ["body", "overrides", "model", "baked_adapter_config", "r"],
     "value_error.number.not_ge"),
    ({"checkpoint": {"save_end_of_training": True}}, ["body", "overrides", "checkpoint"], "type_error.list"),
    ({"wandb": {"enable": "yes"}}, ["body", "overrides", "wandb", "enable"], "type_error.bool"),
    ({"model": {"parent_model_name": " "}}, ["body", "overrides", "model", "parent_model_name"],
     "value_error.any_str.min_length"),
])
def test_bad_fields_are_named(overrides, loc, type_):
    detail = problems(body(**overrides))
    assert [(d["loc"], d["type"]) for d in detail] == [(loc, type_)]


def test_unknown_field_message_names_its_path():
    with pytest.raises(Invalid) as e:
        parse(BakeCreate, body(model={"foo": 1}))
    assert e.value.message == "overrides.model.foo: unknown field 'foo'"


@pytest.mark.parametrize("name", ["default", "batch", "a/b", "", "x" * 129, "a."])
def test_bake_names_follow_the_rules(name):
    assert [d["loc"] for d in problems({"bake_name": name, "template": "default"})] == [["body", "bake_name"]]


def test_template_required_and_not_blank():
    assert problems({"bake_name": "b"})[0]["type"] == "value_error.missing"
    assert problems({"template": " "}, BakeSet)[0]["loc"] == ["body", "template"]
    assert parse(BakeSet, {"template": "default", "overrides": None}).overrides is None


def test_checkpoint_references():
    assert checkpoint_ref("alice/r1/b1/12") == ("alice", "r1", "b1", 12)
    for name in ("Qwen/Qwen3-32B", "/models/a/b/12", "a/b/c/d", "a/b/../3", "a/b/c/3/4", None, 5):
        assert checkpoint_ref(name) is None
    config = {"model": {"parent_model_name": "alice/r1/b1/12"}, "datasets": [{"target": "t1"}, {"target": "t2"}]}
    assert parent_bake(config, "alice", "r1") == "b1"
    assert parent_bake(config, "alice", "r2") is None and parent_bake(config, "bob", "r1") is None
    assert parent_bake({}, "alice", "r1") is None and parent_bake(None, "alice", "r1") is None
    assert dataset_targets(config) == ["t1", "t2"] and dataset_targets({"datasets": None}) == []
