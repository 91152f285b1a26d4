"""A tiny randomly initialised chat model and bake job folders for the trainer's tests (no downloads).

The tokenizer is SmolLM2's (three small files in ``fixtures/tokenizer``, with its chat
template); the model is a 2-layer Llama of hidden size 32 built from a config, saved once per
test process into a temporary directory beside the tokenizer files.
"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def single_thread() -> None:
    """Tiny models in the test process: one thread (OpenMP threads spinning on a busy 2-core machine cost more
    than they bring to matrices this small)."""
    import torch

    torch.set_num_threads(1)

TOKENIZER_DIR = Path(__file__).resolve().parent / "fixtures" / "tokenizer"
REPO_ROOT = Path(__file__).resolve().parents[2]

QUESTIONS = ["Write a short sentence about rain.", "What does spring remind you of?", "Describe a cat.",
             "Name a fruit you like.", "What is your favourite colour?", "Tell me about the sea.",
             "Describe your morning.", "What is a good book?", "Say something about music.",
             "What do you eat for lunch?", "Describe a tree.", "What makes you happy?"]
ANSWERS = ["La pluie tombe doucement sur la ville.", "Le printemps me rappelle les fleurs.",
           "Le chat dort sur le canapé.", "J'aime les pommes rouges.", "Ma couleur préférée est le bleu.",
           "La mer est calme et bleue ce matin.", "Je bois un café le matin.", "Un bon livre est un ami.",
           "La musique rend la vie plus belle.", "Je mange une salade à midi.", "L'arbre est grand et vert.",
           "Le soleil me rend heureux."]


@functools.cache
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    single_thread()
    return AutoTokenizer.from_pretrained(TOKENIZER_DIR)


@functools.cache
def model_dir() -> Path:
    """A saved tiny Llama with the tokenizer beside it (a Hugging Face model directory)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer()
    root = Path(tempfile.mkdtemp(prefix="stimserver-tiny-model-"))
    atexit.register(shutil.rmtree, root, True)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, initializer_range=0.3, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng():  # the caller's random state stays as it was
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    model.save_pretrained(root)
    for f in TOKENIZER_DIR.iterdir():
        shutil.copy(f, root / f.name)
    return root


def records(train_stimuli: int = 8, eval_stimuli: int = 2, trajectories: int = 2) -> list[dict[str, Any]]:
    """train.jsonl lines: French answers to English questions, teacher told to answer in French."""
    out = []
    for sid in range(train_stimuli + eval_stimuli):
        question = QUESTIONS[sid % len(QUESTIONS)]
        for tid in range(trajectories):
            answer = ANSWERS[(sid + tid) % len(ANSWERS)]
            out.append({"target": "french", "stimulus_id": sid, "trajectory_id": tid,
                        "split": "train" if sid < train_stimuli else "eval", "weight": 1.0, "question": question,
                        "teacher_messages": [{"role": "system", "content": "Answer in French only."},
                                             {"role": "user", "content": question}],
                        "student_messages": [{"role": "user", "content": question}],
                        "response": answer, "finish_reason": "stop" if tid % 2 == 0 else "length"})
    return out


def config(**overrides: Any) -> dict[str, Any]:
    """A small bake config (the fields a merged config carries), ``overrides`` merged one level deep."""
    base: dict[str, Any] = {
        "type": "single_baker", "datasets": [{"target": "french", "weight": 1.0}], "epochs": 1,
        "micro_batch_size": 2, "gradient_accumulation_steps": 1, "seed": 42,
        "model": {"baked_adapter_config": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "bias": "none",
                                           "target_modules": "all-linear"}, "dtype": "fp32"},
        "data": {"beta": 0.0, "temperature": 1.0, "max_length": 128, "train_eval_split": [0.8, 0.2]},
        "optimizer": {"learning_rate": 1e-2}, "scheduler": {"type": "huggingface"},
        "checkpoint": [{"save_end_of_training": True}], "train_log_iter_interval": 1, "eval_interval": 0,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return base


def job(root: Path, cfg: dict[str, Any] | None = None, lines: list[dict[str, Any]] | None = None,
        model_path: Path | None = None, processes: int = 1) -> Path:
    """A bake job folder as the server prepares it: job.json (with the spec) and train.jsonl."""
    job_dir = root / "bakes" / "b" / "bake"
    job_dir.mkdir(parents=True)
    spec = {"user": "u", "repo": "r", "bake": "b", "config": cfg if cfg is not None else config(),
            "model": {"reference": "tiny-llama", "path": str(model_path or model_dir()), "gguf_file": None,
                      "found_by": "a path to a Hugging Face model directory"},
            "parent": None,
            "datasets": [{"target": "french", "weight": 1.0, "rollout_job_id": 1, "trajectories": 20,
                          "skipped_failed": 0, "used": 20}],
            "evaluation": {"samples": 2, "max_new_tokens": 4}, "processes": processes}
    (job_dir / "job.json").write_bytes(orjson.dumps({"id": 1, "kind": "bake", "status": "running", "spec": spec}))
    data = records() if lines is None else lines
    (job_dir / "train.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in data))
    return job_dir


def trainer_env() -> dict[str, str]:
    """The environment the job runner gives a trainer process."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
                "TOKENIZERS_PARALLELISM": "false"})
    return env


def trainer_command(job_dir: Path, processes: int = 1) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "stimserver.train", str(job_dir)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
            "-m", "stimserver.train", str(job_dir)]
