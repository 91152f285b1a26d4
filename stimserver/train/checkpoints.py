"""A checkpoint the Trainer saved in ``work/`` → a published, self-describing bake checkpoint.

The Trainer's own save writes the adapter, the tokenizer and the resume state (optimizer,
scheduler, RNG, trainer state), so ``trainer.train(resume_from_checkpoint=<published folder>)``
resumes exactly. Before the one rename that publishes it, the folder gets ``bake-checkpoint.json``
(what the server lists) and a ``README.md`` model card (what a downloader reads), and loses
``training_args.bin`` (a pickle, not needed to resume, not something to hand out).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..store import bakefiles
from ..store.records import now_iso

__all__ = ["finish", "model_card", "TRAINER_PICKLE"]

TRAINER_PICKLE = "training_args.bin"
ADAPTER_CONFIG = "adapter_config.json"


def model_card(spec: dict[str, Any], step: int) -> str:
    """The README of a checkpoint: what it was baked from, on what, and how to load it."""
    name = f"{spec.get('user')}/{spec.get('repo')}/{spec.get('bake')}/{step}"
    base = (spec.get("model") or {}).get("reference") or (spec.get("model") or {}).get("path")
    parent = spec.get("parent")
    datasets = spec.get("datasets") or []
    lines = [f"# {name}", "",
             "A LoRA adapter baked by stimserver (prompt baking: the student — the base model with this adapter, "
             "prompted with the student messages — was trained to match the teacher — the base model prompted "
             "with the target's teacher messages — on the response tokens of the targets' rollouts).", "",
             f"- Base model: `{base}`"]
    if parent:
        lines.append(f"- Parent bake: `{parent.get('reference')}` — its adapter was merged into the base model "
                     "first; load the base, apply and merge that adapter, then this one.")
    lines += [f"- Bake: `{spec.get('bake')}` of repo `{spec.get('repo')}` (user `{spec.get('user')}`), "
              f"checkpoint at optimizer step {step}", "", "## Data", ""]
    if datasets:
        lines += ["| target | weight | trajectories used |", "|---|---|---|"]
        lines += [f"| {d.get('target')} | {d.get('weight')} | {d.get('used')} |" for d in datasets]
    else:
        lines.append("(not recorded)")
    lines += ["", "## Load it", "", "```python", "from peft import PeftModel",
              "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f"base = AutoModelForCausalLM.from_pretrained({json.dumps(str(base))})"]
    if parent:
        lines += ["base = PeftModel.from_pretrained(base, \"<the parent checkpoint's folder>\").merge_and_unload()"]
    lines += ["model = PeftModel.from_pretrained(base, \"<this folder>\")",
              "tokenizer = AutoTokenizer.from_pretrained(\"<this folder>\")", "```", "",
              "## Bake config", "", "```json", json.dumps(spec.get("config") or {}, indent=2, sort_keys=True), "```",
              ""]
    return "\n".join(lines)


def _name_base_model(written: Path, spec: dict[str, Any]) -> None:
    """The adapter names its base model by the bake's reference, not by a path on this server."""
    path = written / ADAPTER_CONFIG
    try:
        adapter = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    model = spec.get("model") or {}
    adapter["base_model_name_or_path"] = model.get("reference") or model.get("path")
    path.write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def finish(written: Path, *, spec: dict[str, Any], step: int, epoch: float, loss: float | None) -> None:
    """Make the Trainer's folder ``written`` a bake checkpoint (info file, model card), ready to publish."""
    (written / TRAINER_PICKLE).unlink(missing_ok=True)
    _name_base_model(written, spec)
    (written / "README.md").write_text(model_card(spec, step), encoding="utf-8")
    bakefiles.write_json(written, bakefiles.CHECKPOINT_INFO,
                         {"step": step, "epoch": epoch, "loss": loss, "created_at": now_iso()})
