"""train.options: every config field honoured or refused by name; the Trainer's and LoRA's arguments."""
from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from stimserver.train import options
from tests.train import tiny


def refused(config: dict[str, Any], *, cuda: bool = False) -> list[str]:
    return options.refusals(config, cuda=cuda)


def test_a_plain_config_and_an_empty_one_are_accepted() -> None:
    assert refused(tiny.config()) == []
    assert refused({}) == []


def test_the_real_expanded_default_is_accepted_but_its_deepspeed_stage() -> None:
    # Bread's expanded default, from a public recreation plan
    config = {"type": "single_baker", "micro_batch_size": 2, "gradient_accumulation_steps": 1, "epochs": 1,
              "total_trajectories": 3600, "seed": 42,
              "model": {"baked_adapter_config": {"r": 32, "lora_alpha": 16, "target_modules": "all-linear",
                                                 "lora_dropout": 0, "bias": "none"}},
              "data": {"beta": 0, "temperature": 1, "max_length": 3000, "train_eval_split": [1, 0],
                       "sources": [{"type": "bake_jsonl", "max_samples": -1}]},
              "scheduler": {"type": "huggingface"}, "deepspeed": {"zero_optimization": {"stage": 3}},
              "checkpoint": [{"save_end_of_training": True}], "train_log_iter_interval": 1, "eval_interval": 0}
    problems = refused(config)
    assert len(problems) == 1 and problems[0].startswith("deepspeed.zero_optimization.stage: 3 needs DeepSpeed")


@pytest.mark.parametrize(("config", "field"), [
    ({"deepspeed": {"zero_optimization": {"stage": 2}}}, "deepspeed.zero_optimization.stage"),
    ({"deepspeed": {"zero_optimization": {"stage": 7}}}, "deepspeed.zero_optimization.stage"),
    ({"wandb": {"enable": True, "project": "p"}}, "wandb.enable"),
    ({"model": {"student_model_path": "Qwen/Qwen3-0.6B"}}, "model.student_model_path"),
    ({"model": {"peft_config": {"r": 8}}}, "model.peft_config"),
    ({"model": {"save_name": "mine"}}, "model.save_name"),
    ({"model": {"type": "liger"}}, "model.type"),
    ({"model": {"dtype": "fp16"}}, "model.dtype"),
    ({"model": {"dtype": "int4"}}, "model.dtype"),
    ({"model": {"attn_implementation": "flash_attention_2"}}, "model.attn_implementation"),
    ({"model": {"attn_implementation": "paged"}}, "model.attn_implementation"),
    ({"model": {"disable_activation_checkpoint": "yes"}}, "model.disable_activation_checkpoint"),
    ({"model": {"baked_adapter_config": {"r": 0}}}, "model.baked_adapter_config.r"),
    ({"model": {"baked_adapter_config": {"lora_alpha": -1}}}, "model.baked_adapter_config.lora_alpha"),
    ({"model": {"baked_adapter_config": {"lora_dropout": 1.5}}}, "model.baked_adapter_config.lora_dropout"),
    ({"model": {"baked_adapter_config": {"bias": "some"}}}, "model.baked_adapter_config.bias"),
    ({"model": {"baked_adapter_config": {"target_modules": ", ,"}}}, "model.baked_adapter_config.target_modules"),
    ({"data": {"sources": [{"type": "bake_jsonl", "name_or_path": "/x.jsonl"}]}}, "data.sources[0]"),
    ({"data": {"sources": [{"type": "bake_jsonl", "sample_count": 10}]}}, "data.sources[0]"),
    ({"data": {"eval_sources": [{"type": "hf", "name_or_path": "x"}]}}, "data.eval_sources[0]"),
    ({"data": {"sources": "x"}}, "data.sources"),
    ({"data": {"cache_dir": "/tmp/c"}}, "data.cache_dir"),
    ({"data": {"cache_fs_type": "shared"}}, "data.cache_fs_type"),
    ({"data": {"use_data_cache": True}}, "data.use_data_cache"),
    ({"data": {"num_proc": 4}}, "data.num_proc"),
    ({"data": {"type": "sft"}}, "data.type"),
    ({"data": {"beta": 1.5}}, "data.beta"),
    ({"data": {"temperature": 0}}, "data.temperature"),
    ({"data": {"max_length": 1}}, "data.max_length"),
    ({"data": {"dl_num_workers": -1}}, "data.dl_num_workers"),
    ({"checkpoint": [{"output_dir": "/somewhere"}]}, "checkpoint[0].output_dir"),
    ({"checkpoint": [{"auto_resume": False}]}, "checkpoint[0].auto_resume"),
    ({"checkpoint": [{"type": "deepspeed"}]}, "checkpoint[0].type"),
    ({"checkpoint": [{"save_every_n_steps": -2}]}, "checkpoint[0].save_every_n_steps"),
    ({"checkpoint": [{"save_every_n_epochs": 1.5}]}, "checkpoint[0].save_every_n_epochs"),
    ({"checkpoint": [{"enabled": "no"}]}, "checkpoint[0].enabled"),
    ({"checkpoint": [{"every": 3}]}, "checkpoint[0].every"),
    ({"checkpoint": {"save_end_of_training": True}}, "checkpoint"),
    ({"scheduler": {"lr": 1e-4}}, "scheduler.lr"),
    ({"scheduler": {"type": "warmup_stable_decay"}}, "scheduler.type"),
    ({"optimizer": {"type": "lion"}}, "optimizer.type"),
    ({"optimizer": {"learning_rate": 0}}, "optimizer.learning_rate"),
    ({"optimizer": {"weight_decay": -0.1}}, "optimizer.weight_decay"),
    ({"optimizer": {"betas": [0.9]}}, "optimizer.betas"),
    ({"activation_checkpoint_cpu_offload": True}, "activation_checkpoint_cpu_offload"),
    ({"type": "multi_baker"}, "type"),
    ({"micro_batch_size": 0}, "micro_batch_size"),
    ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
    ({"epochs": 0}, "epochs"),
    ({"train_log_iter_interval": 0}, "train_log_iter_interval"),
    ({"eval_interval": -1}, "eval_interval"),
    ({"seed": "42"}, "seed"),
    ({"learning_rate": 1e-4}, "learning_rate"),
    ({"model": {"lora": {"r": 2}}}, "model.lora"),
    ({"model": "tiny"}, "model"),
])
def test_a_field_that_cannot_be_honoured_is_refused_by_name(config: dict[str, Any], field: str) -> None:
    problems = refused(config)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{field}: ")


def test_every_refusal_is_listed_at_once() -> None:
    problems = refused({"wandb": {"enable": True}, "scheduler": {"lr": 1}, "data": {"cache_dir": "/c"}})
    assert [p.split(":")[0] for p in problems] == ["data.cache_dir", "scheduler.lr", "wandb.enable"]


def test_what_a_gpu_would_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    assert refused({"model": {"dtype": "fp16"}}, cuda=True) == []
    monkeypatch.setattr(options.importlib.util, "find_spec", lambda name: object())
    assert refused({"deepspeed": {"zero_optimization": {"stage": 3}}}, cuda=True) == []
    assert refused({"model": {"attn_implementation": "flash_attention_2"}}, cuda=True) == []


def test_accepted_values_that_do_nothing_odd() -> None:
    accepted = [
        {"model": {"dtype": "bf16", "attn_implementation": "sdpa", "type": "huggingface",
                   "disable_activation_checkpoint": False}},
        {"data": {"sources": [], "eval_sources": None, "num_proc": 1, "use_data_cache": False, "type": "single_baker"}},
        {"data": {"eval_sources": [{"type": "bake_jsonl", "split": "eval", "max_samples": -1}]}},
        {"checkpoint": [{"type": "huggingface", "enabled": False, "auto_resume": True}], "wandb": {"enable": False}},
        {"optimizer": {"type": "fusedadam", "betas": [0.9, 0.95], "weight_decay": 0.01},
         "scheduler": {"type": "cosine"}},
        {"deepspeed": {"zero_optimization": {"stage": 0}}, "model_name": "x", "total_trajectories": 10,
         "datasets": [{"target": "t"}]},
        {"model": {"baked_adapter_config": {"target_modules": "q_proj, v_proj"}}},
    ]
    for config in accepted:
        assert refused(config) == [], config


def test_training_arguments_map_the_config() -> None:
    config = tiny.config(micro_batch_size=3, gradient_accumulation_steps=2, epochs=2, seed=7,
                         train_log_iter_interval=5,
                         optimizer={"learning_rate": 3e-4, "weight_decay": 0.1, "betas": [0.8, 0.95],
                                    "type": "adamw"},
                         scheduler={"type": "cosine"}, model={"dtype": "bf16"},
                         data={"dl_num_workers": 2, "seed": 11})
    args = options.training_arguments(config, output_dir="/w", steps_per_epoch=4)
    assert args["per_device_train_batch_size"] == 3 and args["gradient_accumulation_steps"] == 2
    assert args["num_train_epochs"] == 2 and args["max_steps"] == 8 and args["seed"] == 7 and args["data_seed"] == 11
    optimizer = (args["learning_rate"], args["weight_decay"], args["adam_beta1"], args["adam_beta2"])
    assert optimizer == (3e-4, 0.1, 0.8, 0.95)
    assert args["optim"] == "adamw_torch" and args["lr_scheduler_type"] == "cosine"
    assert args["save_strategy"] == "no" and args["eval_strategy"] == "no" and args["save_total_limit"] is None
    assert args["logging_steps"] == 5 and args["report_to"] == [] and args["remove_unused_columns"] is False
    assert args["bf16"] is True and args["fp16"] is False and args["dataloader_num_workers"] == 2
    assert args["activation_checkpointing"] is False and "deepspeed" not in args


def test_training_arguments_defaults_and_their_meaning() -> None:
    args = options.training_arguments({}, output_dir="/w", steps_per_epoch=3)
    assert args["lr_scheduler_type"] == "linear"  # "huggingface": Hugging Face's default
    assert args["per_device_train_batch_size"] == options.DEFAULTS["micro_batch_size"]
    assert args["learning_rate"] == options.DEFAULTS["learning_rate"] and args["bf16"] is False
    checkpointed = options.training_arguments({"model": {"disable_activation_checkpoint": False}}, output_dir="/w",
                                              steps_per_epoch=3)
    assert checkpointed["activation_checkpointing"] is True


def test_the_arguments_build_real_training_arguments(tmp_path: Any) -> None:
    from transformers import TrainingArguments

    args = TrainingArguments(**options.training_arguments(tiny.config(), output_dir=str(tmp_path),
                                                          steps_per_epoch=2))
    assert args.max_steps == 2 and args.save_strategy == "no"


def test_deepspeed_maps_to_a_deepspeed_config() -> None:
    args = options.training_arguments({"deepspeed": {"zero_optimization": {"stage": 2}}}, output_dir="/w",
                                      steps_per_epoch=1)
    assert args["deepspeed"]["zero_optimization"] == {"stage": 2}
    assert args["deepspeed"]["train_micro_batch_size_per_gpu"] == "auto"


def test_lora_config() -> None:
    assert options.lora_config({}) == {"r": 32, "lora_alpha": 16, "lora_dropout": 0.0, "bias": "none",
                                       "target_modules": "all-linear", "task_type": "CAUSAL_LM"}
    mine = options.lora_config({"model": {"baked_adapter_config": {"r": 8, "target_modules": "q_proj,v_proj",
                                                                   "lora_alpha": None}}})
    assert mine["r"] == 8 and mine["target_modules"] == ["q_proj", "v_proj"] and mine["lora_alpha"] == 16
    from peft import LoraConfig

    assert LoraConfig(**mine).r == 8


def test_checkpoint_steps() -> None:
    assert options.checkpoint_steps({}, 10, 5) == [10]  # the final step, always
    every3 = {"checkpoint": [{"save_every_n_steps": 3, "save_end_of_training": False}]}
    assert options.checkpoint_steps(every3, 10, 5) == [3, 6, 9, 10]
    assert options.checkpoint_steps({"checkpoint": [{"save_every_n_epochs": 1}]}, 10, 4) == [4, 8, 10]
    off = {"checkpoint": [{"save_every_n_steps": 2, "enabled": False}, {"save_every_n_epochs": 2}]}
    assert options.checkpoint_steps(off, 12, 3) == [6, 12]


def test_eval_and_epoch_steps() -> None:
    assert options.eval_steps({"eval_interval": 4}, 10) == [0, 4, 8, 10]
    assert options.eval_steps({}, 10) == [0, 10]
    assert options.steps_per_epoch(20, {"micro_batch_size": 2}) == 10
    assert options.steps_per_epoch(21, {"micro_batch_size": 2, "gradient_accumulation_steps": 4}) == 3
    assert options.steps_per_epoch(20, {"micro_batch_size": 2}, world_size=2) == 5
    assert options.steps_per_epoch(18, {"micro_batch_size": 4}, world_size=2) == 3  # 5 batches: 3 rounds


def test_options_never_imports_torch() -> None:
    code = ("import sys; import stimserver.train.options as o; o.refusals({}); "
            "o.training_arguments({}, output_dir='w', steps_per_epoch=1); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tiny.REPO_ROOT)
    assert out.stdout.strip() == "[]"
