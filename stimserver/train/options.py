"""A bake config → the trainer's settings, and every field this machine cannot honour, by name.

Torch-free: the server imports it to refuse a bad config at run, before a trainer starts; the
trainer imports it again to build its ``TrainingArguments`` and ``LoraConfig``. A field is
honoured, or handled elsewhere (``datasets``, ``total_trajectories`` and ``data.train_eval_split``
at prepare time, as is ``data.seed``, which also seeds the order batches are drawn in;
``model_name`` and ``model.parent_model_name`` by ``train.resolve``), or refused with a message
that names it — never silently ignored. So an unknown field is refused too. A null field takes
the default in ``DEFAULTS``.
"""
from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULTS", "ADAPTER_DEFAULTS", "OPTIMIZERS", "SCHEDULERS", "DTYPES", "ATTENTION", "Settings",
           "settings", "refusals", "cuda_plausible", "torch_dtype_name", "steps_per_epoch", "training_arguments",
           "deepspeed_config", "lora_config", "checkpoint_steps", "eval_steps"]

# What a null field means (Bread's expanded default where it has one).
DEFAULTS: dict[str, Any] = {
    "micro_batch_size": 2, "gradient_accumulation_steps": 1, "epochs": 1, "seed": 42,
    "train_log_iter_interval": 1, "eval_interval": 0,
    "learning_rate": 1e-4, "weight_decay": 0.0, "betas": (0.9, 0.999),
    "beta": 0.0, "temperature": 1.0, "max_length": None, "dl_num_workers": 0,
}
ADAPTER_DEFAULTS: dict[str, Any] = {"r": 32, "lora_alpha": 16, "lora_dropout": 0.0, "bias": "none",
                                    "target_modules": "all-linear"}

# optimizer.type → TrainingArguments.optim. DeepSpeed's FusedAdam and CPUAdam (Bread's names) run the
# AdamW update (adam_w_mode), which torch's AdamW computes on any device.
OPTIMIZERS = {"adamw": "adamw_torch", "adamw_torch": "adamw_torch", "adamw_torch_fused": "adamw_torch_fused",
              "fusedadam": "adamw_torch", "cpu_adam": "adamw_torch", "adafactor": "adafactor", "sgd": "sgd",
              "adagrad": "adagrad", "rmsprop": "rmsprop"}
# scheduler.type → TrainingArguments.lr_scheduler_type ("huggingface": Hugging Face's default, linear decay).
SCHEDULERS = {"huggingface": "linear", "linear": "linear", "cosine": "cosine",
              "cosine_with_restarts": "cosine_with_restarts", "polynomial": "polynomial", "constant": "constant",
              "constant_with_warmup": "constant_with_warmup", "inverse_sqrt": "inverse_sqrt"}
DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16",
          "fp16": "float16", "float16": "float16"}
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3")
ADAPTER_BIAS = ("none", "all", "lora_only")

# Every field of BakeConfigBase, and what takes care of it. A dict is a nested object; "list" a list of objects.
_HANDLED_ELSEWHERE = "handled elsewhere"
_FIELDS: dict[str, Any] = {
    "activation_checkpoint_cpu_offload": None, "checkpoint": "list", "data": {
        "beta": None, "cache_dir": None, "cache_fs_type": None, "dl_num_workers": None, "eval_sources": "list",
        "max_length": None, "num_proc": None, "seed": None, "sources": "list", "temperature": None,
        "train_eval_split": _HANDLED_ELSEWHERE, "type": None, "use_data_cache": None},
    "datasets": _HANDLED_ELSEWHERE, "deepspeed": {"zero_optimization": {"stage": None}}, "epochs": None,
    "eval_interval": None, "gradient_accumulation_steps": None, "micro_batch_size": None,
    "model": {"attn_implementation": None, "baked_adapter_config": {k: None for k in ADAPTER_DEFAULTS},
              "disable_activation_checkpoint": None, "dtype": None, "parent_model_name": _HANDLED_ELSEWHERE,
              "peft_config": None, "save_name": None, "student_model_path": None, "type": None},
    "model_name": _HANDLED_ELSEWHERE,
    "optimizer": {"betas": None, "learning_rate": None, "type": None, "weight_decay": None},
    "scheduler": {"lr": None, "type": None}, "seed": None, "total_trajectories": _HANDLED_ELSEWHERE,
    "train_log_iter_interval": None, "type": None,
    "wandb": {"enable": None, "entity": None, "name": None, "project": None},
}
_CHECKPOINT_FIELDS = ("auto_resume", "enabled", "output_dir", "save_end_of_training", "save_every_n_epochs",
                      "save_every_n_steps", "type")
_SOURCE_FIELDS = ("max_samples", "name_or_path", "process", "sample_count", "sample_ratio", "sample_seed",
                  "split", "type")


def _get(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _or_default(config: dict[str, Any], path: str, default: Any) -> Any:
    value = _get(config, path)
    return default if value is None else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def cuda_plausible() -> bool:
    """A GPU the trainer could use, judged without torch: the NVIDIA driver is loaded and a device is visible."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/proc/driver/nvidia/version")


@dataclass(frozen=True)
class Settings:
    """The numbers of a bake config, defaults filled in (for a config ``refusals`` accepts)."""

    micro_batch_size: int
    gradient_accumulation_steps: int
    epochs: int
    seed: int
    log_interval: int
    eval_interval: int
    beta: float
    temperature: float
    max_length: int | None


def settings(config: dict[str, Any]) -> Settings:
    d = DEFAULTS
    return Settings(
        micro_batch_size=int(_or_default(config, "micro_batch_size", d["micro_batch_size"])),
        gradient_accumulation_steps=int(_or_default(config, "gradient_accumulation_steps",
                                                    d["gradient_accumulation_steps"])),
        epochs=int(_or_default(config, "epochs", d["epochs"])),
        seed=int(_or_default(config, "seed", d["seed"])),
        log_interval=int(_or_default(config, "train_log_iter_interval", d["train_log_iter_interval"])),
        eval_interval=int(_or_default(config, "eval_interval", d["eval_interval"])),
        beta=float(_or_default(config, "data.beta", d["beta"])),
        temperature=float(_or_default(config, "data.temperature", d["temperature"])),
        max_length=_get(config, "data.max_length"),
    )


# -- refusals ----------------------------------------------------------------------------------
def refusals(config: dict[str, Any], *, cuda: bool | None = None) -> list[str]:
    """Every field of ``config`` this trainer cannot honour here, one message each, naming the field.

    ``cuda``: whether a GPU is usable (the trainer passes ``torch.cuda.is_available()``); by
    default guessed without torch (``cuda_plausible``).
    """
    gpu = cuda_plausible() if cuda is None else cuda
    out: list[str] = []
    out += _unknown_fields(config, _FIELDS, "")
    out += _numbers(config)
    out += _model(config, gpu)
    out += _data(config)
    out += _optimizer(config)
    out += _checkpoints(config)
    out += _deepspeed(config, gpu)
    out += _others(config)
    return out


def _unknown_fields(node: Any, known: dict[str, Any], prefix: str) -> list[str]:
    if not isinstance(node, dict):
        return []
    out = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        if key not in known:
            out.append(f"{path}: unknown field; the bake config has no such setting")
        elif isinstance(known[key], dict) and value is not None:
            if isinstance(value, dict):
                out += _unknown_fields(value, known[key], path + ".")
            else:
                out.append(f"{path}: must be an object")
    return out


def _check_int(config: dict[str, Any], path: str, least: int) -> list[str]:
    value = _get(config, path)
    if value is None or (_is_int(value) and value >= least):
        return []
    return [f"{path}: {value!r} must be a whole number of at least {least}"]


def _numbers(config: dict[str, Any]) -> list[str]:
    out = []
    for path in ("micro_batch_size", "gradient_accumulation_steps", "epochs", "train_log_iter_interval"):
        out += _check_int(config, path, 1)
    for path in ("eval_interval", "seed", "data.dl_num_workers"):
        out += _check_int(config, path, 0)
    beta = _get(config, "data.beta")
    if beta is not None and not (_is_number(beta) and 0 <= beta <= 1):
        out.append(f"data.beta: {beta!r} must be a number from 0 (forward KL) to 1 (reverse KL)")
    temperature = _get(config, "data.temperature")
    if temperature is not None and not (_is_number(temperature) and temperature > 0):
        out.append(f"data.temperature: {temperature!r} must be a number above 0")
    max_length = _get(config, "data.max_length")
    if max_length is not None and not (_is_int(max_length) and max_length >= 2):
        out.append(f"data.max_length: {max_length!r} must be a whole number of at least 2 (or null: no limit)")
    return out


def _model(config: dict[str, Any], gpu: bool) -> list[str]:
    out = []
    if _get(config, "model.student_model_path") is not None:
        out.append("model.student_model_path: distillation into a separate student model is not supported; the "
                   "student is the base model plus the baked LoRA adapter (leave it null)")
    if _get(config, "model.peft_config") is not None:
        out.append("model.peft_config: not supported; set the adapter with model.baked_adapter_config")
    if _get(config, "model.save_name") is not None:
        out.append("model.save_name: checkpoints are named <user>/<repo>/<bake>/<step> by the server (leave it null)")
    model_type = _get(config, "model.type")
    if model_type not in (None, "huggingface"):
        out.append(f"model.type: {model_type!r} is not available here; the accepted value is 'huggingface' (or null)")
    dtype = _get(config, "model.dtype")
    if dtype is not None and dtype not in DTYPES:
        out.append(f"model.dtype: {dtype!r} is not a known dtype; accepted: {', '.join(DTYPES)}")
    elif dtype is not None and DTYPES[dtype] == "float16" and not gpu:
        out.append(f"model.dtype: {dtype!r} (float16 mixed precision) needs a GPU and none is visible; "
                   "use 'bf16' or 'fp32' on a CPU")
    attention = _get(config, "model.attn_implementation")
    if attention is not None and attention not in ATTENTION:
        out.append(f"model.attn_implementation: {attention!r} is not available here; accepted: eager, sdpa, "
                   "flash_attention_2 and flash_attention_3 (with flash-attn and a GPU)")
    elif attention in ("flash_attention_2", "flash_attention_3"):
        package = "flash_attn" if attention == "flash_attention_2" else "flash_attn_interface"
        if importlib.util.find_spec(package) is None or not gpu:
            out.append(f"model.attn_implementation: {attention!r} needs the {package} package and a GPU; "
                       "use 'sdpa' (or null) here")
    if _get(config, "activation_checkpoint_cpu_offload"):
        out.append("activation_checkpoint_cpu_offload: offloading activation checkpoints is not supported "
                   "(set it to false or null)")
    flag = _get(config, "model.disable_activation_checkpoint")
    if flag is not None and not isinstance(flag, bool):
        out.append(f"model.disable_activation_checkpoint: {flag!r} must be true or false")
    return out + _adapter(config)


def _adapter(config: dict[str, Any]) -> list[str]:
    out = []
    p = "model.baked_adapter_config"
    r = _get(config, f"{p}.r")
    if r is not None and not (_is_int(r) and r >= 1):
        out.append(f"{p}.r: {r!r} must be a whole number of at least 1")
    alpha = _get(config, f"{p}.lora_alpha")
    if alpha is not None and not (_is_number(alpha) and alpha > 0):
        out.append(f"{p}.lora_alpha: {alpha!r} must be a number above 0")
    dropout = _get(config, f"{p}.lora_dropout")
    if dropout is not None and not (_is_number(dropout) and 0 <= dropout < 1):
        out.append(f"{p}.lora_dropout: {dropout!r} must be a number from 0 up to (not including) 1")
    bias = _get(config, f"{p}.bias")
    if bias is not None and bias not in ADAPTER_BIAS:
        out.append(f"{p}.bias: {bias!r} is not one of {', '.join(ADAPTER_BIAS)}")
    targets = _get(config, f"{p}.target_modules")
    if targets is not None and not _target_modules(targets):
        out.append(f"{p}.target_modules: {targets!r} must be 'all-linear' or module names separated by commas "
                   "(e.g. 'q_proj,k_proj,v_proj,o_proj')")
    return out


def _target_modules(value: Any) -> str | list[str] | None:
    """'all-linear', or the module names of a comma-separated string or a list; None when malformed."""
    if isinstance(value, str):
        if value.strip() == "all-linear":
            return "all-linear"
        names = [n.strip() for n in value.replace(" ", ",").split(",") if n.strip()]
    elif isinstance(value, list) and all(isinstance(n, str) for n in value):
        names = [n.strip() for n in value if n.strip()]
    else:
        return None
    return names or None


def _data(config: dict[str, Any]) -> list[str]:
    out = []
    for field, split in (("sources", "train"), ("eval_sources", "eval")):
        sources = _get(config, f"data.{field}")
        if sources is None:
            continue
        if not isinstance(sources, list):
            out.append(f"data.{field}: must be a list")
            continue
        for i, source in enumerate(sources):
            out += _source(source, f"data.{field}[{i}]", split)
    for field in ("cache_dir", "cache_fs_type"):
        if _get(config, f"data.{field}") is not None:
            out.append(f"data.{field}: a bake reads its frozen train.jsonl and caches no data here (leave it null)")
    if _get(config, "data.use_data_cache"):
        out.append("data.use_data_cache: deprecated, and a bake caches no data here (leave it null)")
    num_proc = _get(config, "data.num_proc")
    if num_proc is not None and num_proc != 1:
        out.append(f"data.num_proc: {num_proc!r}: tokenization runs in the trainer process, one process "
                   "(a bake's data takes seconds); use 1 or null")
    data_type = _get(config, "data.type")
    if data_type not in (None, "single_baker"):
        out.append(f"data.type: {data_type!r} is not available here; the accepted value is 'single_baker' (or null)")
    return out


def _source(source: Any, path: str, split: str) -> list[str]:
    """A source is accepted only when it names the bake's own data (Bread's default entry); else refused."""
    if not isinstance(source, dict):
        return [f"{path}: must be an object"]
    out = [f"{path}.{k}: unknown field" for k in source if k not in _SOURCE_FIELDS]
    own = (source.get("type") in (None, "bake_jsonl") and source.get("name_or_path") is None
           and source.get("split") in (None, split) and source.get("max_samples") in (None, -1)
           and source.get("sample_count") is None and source.get("sample_ratio") in (None, 1, 1.0)
           and source.get("process") in (None, True))
    if not own:
        out.append(f"{path}: a bake trains on its datasets' rollouts (set `datasets`, split by "
                   "data.train_eval_split); other data sources are not supported — remove it, or keep only "
                   "{'type': 'bake_jsonl', 'max_samples': -1}")
    return out


def _optimizer(config: dict[str, Any]) -> list[str]:
    out = []
    name = _get(config, "optimizer.type")
    if name is not None and name not in OPTIMIZERS:
        out.append(f"optimizer.type: {name!r} is not available here; accepted: {', '.join(OPTIMIZERS)}")
    lr = _get(config, "optimizer.learning_rate")
    if lr is not None and not (_is_number(lr) and lr > 0):
        out.append(f"optimizer.learning_rate: {lr!r} must be a number above 0")
    decay = _get(config, "optimizer.weight_decay")
    if decay is not None and not (_is_number(decay) and decay >= 0):
        out.append(f"optimizer.weight_decay: {decay!r} must be a number of at least 0")
    betas = _get(config, "optimizer.betas")
    if betas is not None and not (isinstance(betas, list | tuple) and len(betas) == 2
                                  and all(_is_number(b) and 0 <= b < 1 for b in betas)):
        out.append(f"optimizer.betas: {betas!r} must be two numbers from 0 up to (not including) 1")
    scheduler = _get(config, "scheduler.type")
    if scheduler is not None and scheduler not in SCHEDULERS:
        out.append(f"scheduler.type: {scheduler!r} is not available here; accepted: {', '.join(SCHEDULERS)}")
    if _get(config, "scheduler.lr") is not None:
        out.append("scheduler.lr: deprecated; set the learning rate with optimizer.learning_rate")
    return out


def _checkpoints(config: dict[str, Any]) -> list[str]:
    entries = _get(config, "checkpoint")
    if entries is None:
        return []
    if not isinstance(entries, list):
        return ["checkpoint: must be a list"]
    out = []
    for i, entry in enumerate(entries):
        path = f"checkpoint[{i}]"
        if not isinstance(entry, dict):
            out.append(f"{path}: must be an object")
            continue
        out += [f"{path}.{k}: unknown field" for k in entry if k not in _CHECKPOINT_FIELDS]
        if entry.get("type") not in (None, "huggingface"):
            out.append(f"{path}.type: {entry['type']!r} is not available here; checkpoints are Hugging Face "
                       "PEFT folders (accepted: 'huggingface' or null)")
        if entry.get("output_dir") is not None:
            out.append(f"{path}.output_dir: the server decides where checkpoints go (leave it null)")
        if entry.get("auto_resume") is False:
            out.append(f"{path}.auto_resume: false is not supported: an interrupted bake always resumes from its "
                       "last checkpoint, which keeps the checkpoints already listed unchanged")
        for field in ("save_every_n_steps", "save_every_n_epochs"):
            value = entry.get(field)
            if value is not None and not (_is_int(value) and value >= 0):
                out.append(f"{path}.{field}: {value!r} must be a whole number of at least 0 (0 or null: never)")
        for field in ("enabled", "save_end_of_training", "auto_resume"):
            if entry.get(field) is not None and not isinstance(entry[field], bool):
                out.append(f"{path}.{field}: {entry[field]!r} must be true or false")
    return out


def _deepspeed(config: dict[str, Any], gpu: bool) -> list[str]:
    stage = _get(config, "deepspeed.zero_optimization.stage")
    if stage is None or stage == 0:
        return []
    if not (_is_int(stage) and 0 <= stage <= 3):
        return [f"deepspeed.zero_optimization.stage: {stage!r} must be 0, 1, 2 or 3"]
    if importlib.util.find_spec("deepspeed") is None or not gpu:
        missing = [w for w, ok in (("DeepSpeed is not installed", importlib.util.find_spec("deepspeed") is not None),
                                   ("no GPU is visible", gpu)) if not ok]
        return [f"deepspeed.zero_optimization.stage: {stage} needs DeepSpeed and a GPU; {' and '.join(missing)} "
                "here. Use 0 (or null) to train without DeepSpeed"]
    return []


def _others(config: dict[str, Any]) -> list[str]:
    out = []
    if _get(config, "wandb.enable"):
        out.append("wandb.enable: Weights & Biases logging is not available (the trainer has no network); the "
                   "bake's metrics are served by bakes.get_metrics. Set it to false")
    bake_type = _get(config, "type")
    if bake_type not in (None, "single_baker"):
        out.append(f"type: {bake_type!r} is not available here; the accepted value is 'single_baker' (or null)")
    return out


# -- what the trainer builds ---------------------------------------------------------------------
def torch_dtype_name(config: dict[str, Any]) -> str:
    """The dtype the model is loaded and trained in: float32 unless model.dtype says otherwise."""
    dtype = _get(config, "model.dtype")
    return DTYPES.get(dtype, "float32") if dtype is not None else "float32"


def steps_per_epoch(train_examples: int, config: dict[str, Any], world_size: int = 1) -> int:
    """Optimizer steps in one epoch, as the Trainer counts them: each process takes every
    ``world_size``-th batch of ``micro_batch_size`` (the last round filled up), ``gradient_accumulation_steps``
    batches a step, the last step of an epoch shorter."""
    s = settings(config)
    batches = math.ceil(train_examples / s.micro_batch_size)
    per_process = math.ceil(batches / max(1, world_size))
    return max(1, math.ceil(per_process / s.gradient_accumulation_steps))


def deepspeed_config(config: dict[str, Any]) -> dict[str, Any] | None:
    """The DeepSpeed config for ``deepspeed.zero_optimization.stage`` > 0 ("auto" lets the Trainer fill the rest)."""
    stage = _get(config, "deepspeed.zero_optimization.stage")
    if not stage:
        return None
    return {"zero_optimization": {"stage": int(stage)}, "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
            "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}}


def training_arguments(config: dict[str, Any], *, output_dir: str, steps_per_epoch: int,
                       cuda: bool | None = None) -> dict[str, Any]:
    """Keyword arguments of ``transformers.TrainingArguments`` for ``config`` (one ``refusals`` accepts).

    The Trainer saves, evaluates and reports nothing itself: the bake's callbacks publish
    checkpoints and write metrics rows. ``max_steps`` is fixed from ``steps_per_epoch`` so the
    plan's step count is the Trainer's. Activation checkpointing is on only when
    ``model.disable_activation_checkpoint`` is false (it costs a second forward pass; a small
    model on a CPU does not need the memory it saves). ``cuda``: whether a GPU is used (pinned
    memory, else the CPU and DDP over gloo), by default ``cuda_plausible()``.
    """
    s = settings(config)
    gpu = cuda_plausible() if cuda is None else cuda
    dtype = torch_dtype_name(config)
    betas = _or_default(config, "optimizer.betas", DEFAULTS["betas"])
    args: dict[str, Any] = {
        "output_dir": output_dir,
        "per_device_train_batch_size": s.micro_batch_size,
        "per_device_eval_batch_size": s.micro_batch_size,
        "gradient_accumulation_steps": s.gradient_accumulation_steps,
        "num_train_epochs": s.epochs,
        "max_steps": s.epochs * steps_per_epoch,
        "seed": s.seed,
        "learning_rate": float(_or_default(config, "optimizer.learning_rate", DEFAULTS["learning_rate"])),
        "weight_decay": float(_or_default(config, "optimizer.weight_decay", DEFAULTS["weight_decay"])),
        "adam_beta1": float(betas[0]), "adam_beta2": float(betas[1]),
        "optim": OPTIMIZERS[_or_default(config, "optimizer.type", "adamw")],
        "lr_scheduler_type": SCHEDULERS[_or_default(config, "scheduler.type", "huggingface")],
        "warmup_steps": 0,
        "save_strategy": "no", "eval_strategy": "no", "save_total_limit": None, "save_only_model": False,
        "logging_strategy": "steps", "logging_steps": s.log_interval, "report_to": [], "disable_tqdm": True,
        "bf16": dtype == "bfloat16", "fp16": dtype == "float16",
        "activation_checkpointing": _get(config, "model.disable_activation_checkpoint") is False,
        "activation_checkpointing_kwargs": {"use_reentrant": False},
        "dataloader_num_workers": int(_or_default(config, "data.dl_num_workers", DEFAULTS["dl_num_workers"])),
        "dataloader_pin_memory": gpu,
        "use_cpu": not gpu,  # several CPU processes (torchrun) then train with DDP over gloo
        "remove_unused_columns": False,
        "ddp_find_unused_parameters": False,
        "push_to_hub": False,
    }
    data_seed = _get(config, "data.seed")
    if data_seed is not None:
        args["data_seed"] = int(data_seed)
    ds = deepspeed_config(config)
    if ds is not None:
        args["deepspeed"] = ds
    return args


def lora_config(config: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``peft.LoraConfig`` from ``model.baked_adapter_config`` (nulls → ``ADAPTER_DEFAULTS``)."""
    adapter = {**ADAPTER_DEFAULTS, **{k: v for k, v in (_get(config, "model.baked_adapter_config") or {}).items()
                                      if v is not None}}
    return {"r": int(adapter["r"]), "lora_alpha": adapter["lora_alpha"], "lora_dropout": float(adapter["lora_dropout"]),
            "bias": adapter["bias"], "target_modules": _target_modules(adapter["target_modules"]),
            "task_type": "CAUSAL_LM"}


def checkpoint_steps(config: dict[str, Any], total_steps: int, steps_per_epoch: int) -> list[int]:
    """The steps whose checkpoints are published, ascending: every enabled ``checkpoint[]`` entry's
    ``save_every_n_steps`` and ``save_every_n_epochs`` multiples, and always the final step (so a
    complete bake always has a model, whether ``save_end_of_training`` is set or not)."""
    steps = {total_steps} if total_steps > 0 else set()
    for entry in _get(config, "checkpoint") or []:
        if not isinstance(entry, dict) or entry.get("enabled") is False:
            continue
        every = entry.get("save_every_n_steps") or 0
        if every > 0:
            steps.update(range(every, total_steps + 1, every))
        epochs = entry.get("save_every_n_epochs") or 0
        if epochs > 0:
            steps.update(min(total_steps, n * steps_per_epoch)
                         for n in range(epochs, math.ceil(total_steps / steps_per_epoch) + 1, epochs))
    return sorted(s for s in steps if 0 < s <= total_steps)


def eval_steps(config: dict[str, Any], total_steps: int) -> list[int]:
    """The steps of held-out eval rows (when an eval split exists): 0, every ``eval_interval`` steps, and the last."""
    interval = settings(config).eval_interval
    steps = {0, total_steps}
    if interval > 0:
        steps.update(range(interval, total_steps + 1, interval))
    return sorted(steps)
