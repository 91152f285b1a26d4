"""train.trainer in one process: model loading, the loss scaled over a whole step, the model card."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from stimserver.train import checkpoints, data, options
from stimserver.train.trainer import BakeTrainer, ConfigError, ModelError, load_model, load_tokenizer, token_divergence
from tests.train import tiny


def spec(cfg: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"user": "u", "repo": "r", "bake": "b", "config": cfg or tiny.config(),
            "model": {"reference": "tiny-llama", "path": str(tiny.model_dir()), "gguf_file": None},
            "parent": None, "datasets": [{"target": "french", "weight": 1.0, "used": 20}], **extra}


def trained_adapter(tmp_path: Path, cfg: dict[str, Any], examples: list[data.Example]) -> dict[str, torch.Tensor]:
    """The adapter after one optimizer step of ``cfg`` on ``examples``."""
    from transformers import TrainingArguments, set_seed

    set_seed(1)
    model = load_model(spec(cfg))
    kwargs = options.training_arguments(cfg, output_dir=str(tmp_path), steps_per_epoch=1)
    trainer = BakeTrainer(model=model, args=TrainingArguments(**kwargs), train_dataset=data.ExampleDataset(examples),
                          data_collator=data.BakeCollator(data.pad_id(tiny.tokenizer())), beta=0.0, temperature=1.0)
    trainer.train()
    assert trainer.state.global_step == 1
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_gradient_accumulation_gives_the_step_of_one_big_batch(tmp_path: Path) -> None:
    tok = tiny.tokenizer()
    examples = [data.encode(tok, r, None)[0] for r in tiny.records(2, 0, 1)]
    assert examples[0].response_len != examples[1].response_len  # the per-token mean must weigh them
    one_batch = trained_adapter(tmp_path / "a", tiny.config(micro_batch_size=2), examples)
    accumulated = trained_adapter(tmp_path / "b", tiny.config(micro_batch_size=1, gradient_accumulation_steps=2),
                                  examples)
    for name, value in one_batch.items():
        assert torch.allclose(value, accumulated[name], atol=1e-6), name


def test_the_loss_is_the_divergence_per_response_token_and_zero_with_no_adapter_change() -> None:
    tok = tiny.tokenizer()
    model = load_model(spec())
    examples = [data.encode(tok, r, None)[0] for r in tiny.records(3, 0, 1)]
    batch = data.BakeCollator(data.pad_id(tok))(examples)
    total, weight = token_divergence(model, model, batch, beta=0.0, temperature=1.0)
    assert weight == sum(e.response_len for e in examples) and total > 0  # different prompts, different answers
    same = {**batch, **{k.replace("student", "teacher"): v for k, v in batch.items() if k.startswith("student")}}
    zero, _ = token_divergence(model, model, same, beta=0.0, temperature=1.0)  # LoRA starts as the identity
    assert abs(float(zero.detach())) < 1e-6


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_a_parent_adapter_is_merged_into_the_base(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(tiny.model_dir())
    original = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    parent = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    parent.save_pretrained(tmp_path / "parent")
    merged = parent.merge_and_unload().model.layers[0].self_attn.q_proj.weight.detach()
    model = load_model(spec(parent={"reference": "u/r/b0/4", "adapter_dir": str(tmp_path / "parent")}))
    baked_base = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.detach()
    assert not torch.allclose(baked_base, original) and torch.allclose(baked_base, merged, atol=1e-6)


def test_loading_failures_say_what_failed(tmp_path: Path) -> None:
    missing = spec()
    missing["model"] = {"reference": "nowhere", "path": str(tmp_path / "nowhere"), "gguf_file": None}
    with pytest.raises(ModelError, match="'nowhere'"):
        load_model(missing)
    with pytest.raises(ModelError, match="'nowhere'"):
        load_tokenizer(missing)
    wrong = tiny.config(model={"baked_adapter_config": {"target_modules": "no_such_proj"}})
    with pytest.raises(ConfigError, match="model.baked_adapter_config"):
        load_model(spec(wrong))
    with pytest.raises(ModelError, match="parent bake"):
        load_model(spec(parent={"reference": "u/r/b0/4", "adapter_dir": str(tmp_path / "gone")}))


def test_the_model_card_names_base_bake_data_and_loading() -> None:
    card = checkpoints.model_card(spec(), 12)
    assert card.startswith("# u/r/b/12") and "Base model: `tiny-llama`" in card
    assert "| french | 1.0 | 20 |" in card and "PeftModel.from_pretrained(base" in card
    assert '"micro_batch_size": 2' in card
    with_parent = checkpoints.model_card(spec(parent={"reference": "u/r/b0/4", "adapter_dir": "/x"}), 12)
    assert "Parent bake: `u/r/b0/4`" in with_parent and "merge_and_unload" in with_parent
