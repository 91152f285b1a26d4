"""The bake's training loop: Hugging Face's ``Trainer`` with the bake's loss, rows and checkpoints.

``BakeTrainer`` changes only what a bake needs: ``compute_loss`` (the teacher pass — the same
model with its adapter disabled, no gradients — and the student pass, compared by
``loss.generalized_jsd`` on the response tokens) and the count of response tokens across a
step's micro-batches and processes, so the loss is a mean per response token of the whole
optimizer step. Everything else — optimizer, scheduler, gradient accumulation, DDP, resume —
is the Trainer's.

``BakeCallback`` writes the job folder: one metrics row per ``train_log_iter_interval`` steps
and held-out eval rows (rank 0; a row only when its ``iter`` is above the last of its type, so
a resumed run never writes one twice), and publishes checkpoints at ``options.checkpoint_steps``
(the Trainer's own save into ``work/``, then ``checkpoints.finish`` and one rename).
"""
from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..store import bakefiles
from . import checkpoints, options
from .data import Example
from .loss import generalized_jsd, output_head, response_logits

__all__ = ["ModelError", "ConfigError", "BakeTrainer", "BakeCallback", "load_tokenizer", "load_base", "load_model",
           "load_checkpoint",
           "token_divergence", "heldout_values", "is_main_process", "barrier"]

EVAL_BATCH = 8


class ModelError(RuntimeError):
    """The bake's model (or its parent's adapter, or its tokenizer) cannot be loaded."""


class ConfigError(ValueError):
    """A config field the model itself refuses (found only once it is loaded: LoRA target modules)."""


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def _all_reduce(value: torch.Tensor, op: Any = None) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(value, op=op or dist.ReduceOp.SUM)
    return value


# -- loading -----------------------------------------------------------------------------------
@contextlib.contextmanager
def _peft_on_transformers_5() -> Iterator[None]:
    """peft 0.21 reads a model property transformers 5 deprecated: keep its warning out of the log."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def load_tokenizer(spec: dict[str, Any]) -> Any:
    from transformers import AutoTokenizer

    model = spec["model"]
    kwargs = {"gguf_file": model["gguf_file"]} if model.get("gguf_file") else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(model["path"], **kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"the tokenizer of model {model.get('reference')!r} could not be loaded: {e}") from e
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"model {model.get('reference')!r} has no chat template: a bake needs a chat model")
    return tokenizer


def load_base(spec: dict[str, Any]) -> Any:
    """The bake's base model, with the parent bake's adapter merged in if it has one."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = spec["config"]
    model_spec = spec["model"]
    kwargs: dict[str, Any] = {"dtype": getattr(torch, options.torch_dtype_name(config))}
    attention = (config.get("model") or {}).get("attn_implementation")
    if attention:
        kwargs["attn_implementation"] = attention
    if model_spec.get("gguf_file"):
        kwargs["gguf_file"] = model_spec["gguf_file"]
    try:
        base = AutoModelForCausalLM.from_pretrained(model_spec["path"], **kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"model {model_spec.get('reference')!r} could not be loaded: {e}") from e
    parent = spec.get("parent")
    if parent:
        try:
            with _peft_on_transformers_5():
                base = PeftModel.from_pretrained(base, parent["adapter_dir"]).merge_and_unload()
        except (OSError, ValueError) as e:
            raise ModelError(f"the parent bake {parent.get('reference')!r} could not be applied: {e}") from e
    return base


def load_model(spec: dict[str, Any]) -> Any:
    """The base model (with the parent bake's adapter merged in, if any) + a new LoRA adapter: a PeftModel."""
    from peft import LoraConfig, get_peft_model

    config = spec["config"]
    base = load_base(spec)
    base.config.use_cache = False
    try:
        with _peft_on_transformers_5():
            model = get_peft_model(base, LoraConfig(**options.lora_config(config)))
    except ValueError as e:  # target modules the model does not have
        raise ConfigError(f"model.baked_adapter_config: {e}") from e
    return model


def load_checkpoint(spec: dict[str, Any], adapter_dir: Path) -> Any:
    """The base model with the published checkpoint's adapter in ``adapter_dir`` (a PeftModel, for inference)."""
    from peft import PeftModel

    base = load_base(spec)
    try:
        with _peft_on_transformers_5():
            return PeftModel.from_pretrained(base, str(adapter_dir))
    except (OSError, ValueError) as e:
        raise ModelError(f"checkpoint {adapter_dir.name} could not be loaded onto model "
                         f"{spec['model'].get('reference')!r}: {e}") from e


# -- the loss ----------------------------------------------------------------------------------
class BakeTrainer(Trainer):
    """``Trainer`` with the bake's loss. The loss a step returns is already a mean over the step's
    response tokens (all micro-batches, all processes), hence ``loss_is_scaled_for_ga``."""

    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, beta: float, temperature: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beta = beta
        self.temperature = temperature
        self.step_tokens = 0                   # response tokens of the current step, all processes
        self.step_loss = torch.zeros(())       # this process's share of the current step's mean loss
        self.step_seqlen = 0                   # the longest padded sequence of the step on this process

    def _get_num_items_in_batch(self, batch_samples: list[Any], device: torch.device) -> torch.Tensor:
        """The step's response tokens, weighted, over its micro-batches and all processes (the loss divisor)."""
        counts = torch.zeros(2, dtype=torch.float64)
        for batch in batch_samples:
            mask = batch["student_completion_mask"]
            counts[0] += (mask * batch["weight"][:, None]).sum()
            counts[1] += mask.sum()
            self.step_seqlen = max(self.step_seqlen, batch["teacher_input_ids"].shape[1],
                                   batch["student_input_ids"].shape[1])
        if self.args.world_size > 1:
            counts = self.accelerator.reduce(counts.to(device), reduction="sum").cpu()
        self.step_tokens = int(counts[1])
        return counts[0].to(device=device, dtype=torch.float32).clamp(min=1e-8)

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> Any:
        total, weight = token_divergence(model, self.accelerator.unwrap_model(model), inputs, beta=self.beta,
                                         temperature=self.temperature)
        if num_items_in_batch is None:
            loss = total / weight.clamp(min=1e-8)
        else:
            loss = total / num_items_in_batch
            self.step_loss = self.step_loss.to(loss.device) + loss.detach()
            loss = loss * self.accelerator.num_processes  # DDP averages the processes' gradients
        return (loss, None) if return_outputs else loss


def token_divergence(model: Any, peft_model: Any, inputs: dict[str, torch.Tensor], *, beta: float,
                     temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted sum of the divergence over the batch's response tokens, sum of their weights).

    The teacher runs as ``peft_model`` with its adapter disabled, in eval mode, without gradients;
    the student as ``model`` (the same PeftModel, or DDP around it) with the adapter.
    """
    head = output_head(peft_model)
    with torch.no_grad(), peft_model.disable_adapter(), _eval_mode(peft_model):
        teacher = response_logits(peft_model, head, inputs["teacher_input_ids"], inputs["teacher_attention_mask"],
                                  inputs["teacher_completion_mask"])
    student = response_logits(model, head, inputs["student_input_ids"], inputs["student_attention_mask"],
                              inputs["student_completion_mask"])
    mask = inputs["student_completion_mask"].bool()
    weights = inputs["weight"][:, None].expand(mask.shape)[mask].to(student.device, torch.float32)
    per_token = generalized_jsd(student, teacher, beta=beta, temperature=temperature)
    return (per_token * weights).sum(), weights.sum()


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """No dropout while inside (the teacher is the base model as it answers), the training flag restored after."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def heldout_values(peft_model: Any, examples: Sequence[Example], collate: Any, *, beta: float,
                   temperature: float) -> tuple[float, float] | None:
    """(eval_loss, heldout_kl) over ``examples``, each process taking its share: the bake's divergence
    (weighted) and KL(teacher ‖ student) at temperature 1, both per response token."""
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    mine = list(examples)[rank::world]
    device = next(peft_model.parameters()).device
    sums = torch.zeros(4, dtype=torch.float64)
    with torch.no_grad(), _eval_mode(peft_model):
        for start in range(0, len(mine), EVAL_BATCH):
            batch = {k: v.to(device) for k, v in collate(mine[start:start + EVAL_BATCH]).items()}
            head = output_head(peft_model)
            with peft_model.disable_adapter():
                teacher = response_logits(peft_model, head, batch["teacher_input_ids"],
                                          batch["teacher_attention_mask"], batch["teacher_completion_mask"])
            student = response_logits(peft_model, head, batch["student_input_ids"],
                                      batch["student_attention_mask"], batch["student_completion_mask"])
            mask = batch["student_completion_mask"].bool()
            weights = batch["weight"][:, None].expand(mask.shape)[mask].float()
            loss = generalized_jsd(student, teacher, beta=beta, temperature=temperature)
            kl = generalized_jsd(student, teacher, beta=0.0, temperature=1.0)
            sums += torch.stack([(loss * weights).sum(), weights.sum(), kl.sum(),
                                 torch.tensor(float(kl.numel()))]).double().cpu()
    sums = _all_reduce(sums)
    if sums[3] == 0:
        return None
    return float(sums[0] / sums[1].clamp(min=1e-12)), float(sums[2] / sums[3])


# -- rows and checkpoints ----------------------------------------------------------------------
class BakeCallback(TrainerCallback):
    """Metrics rows, held-out eval rows and checkpoint publishing, for one run of the trainer.

    Every process runs the same hooks (the reductions are collective); only the main process
    writes. ``last_train`` / ``last_eval`` are the last rows already in ``metrics.jsonl``, read
    before the run by every process, so all agree on what is logged again. A train row that
    covers several steps (``train_log_iter_interval`` > 1) has the mean ``loss``, ``step_time``
    (forward, backward, optimizer) and ``iter_time`` (the whole step, checkpoints and eval rows
    included) of its steps, the sum of their ``tokens`` and the largest ``seqlen``.
    """

    def __init__(self, trainer: BakeTrainer, *, job_dir: Path, spec: dict[str, Any], eval_examples: Sequence[Example],
                 total_steps: int, steps_per_epoch: int, last_train: int, last_eval: int) -> None:
        config = spec["config"]
        self.trainer = trainer
        self.job_dir = job_dir
        self.spec = spec
        self.eval_examples = list(eval_examples)
        self.total_steps = total_steps
        self.log_interval = options.settings(config).log_interval
        self.save_at = set(options.checkpoint_steps(config, total_steps, steps_per_epoch))
        self.eval_at = set(options.eval_steps(config, total_steps)) if self.eval_examples else set()
        self.last_train = last_train
        self.last_eval = last_eval
        self.main = is_main_process()
        self._reset_interval()
        self.step_started = self.last_step_end = time.perf_counter()
        self.lr = 0.0
        self.last_loss: float | None = None

    def _reset_interval(self) -> None:
        self.losses: list[float] = []
        self.step_times: list[float] = []
        self.iter_times: list[float] = []
        self.tokens = 0
        self.seqlen = 0

    def _append(self, row: dict[str, Any]) -> None:
        if self.main:
            bakefiles.append_rows(self.job_dir, [row])

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if state.max_steps != self.total_steps:
            raise RuntimeError(f"the Trainer plans {state.max_steps} steps, the bake {self.total_steps}")
        if state.global_step == 0 and 0 in self.eval_at and self.last_eval < 0:
            self._eval_row(0, 0.0)
        self.step_started = self.last_step_end = time.perf_counter()

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        self.step_started = time.perf_counter()

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                          **kwargs: Any) -> None:
        optimizer = self.trainer.optimizer
        if optimizer is not None:
            self.lr = float(optimizer.param_groups[0]["lr"])  # the rate this step used

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        now = time.perf_counter()
        trainer = self.trainer
        step = state.global_step
        loss = _all_reduce(trainer.step_loss.detach().double().cpu().reshape(1))
        seqlen = _all_reduce(torch.tensor([trainer.step_seqlen]), dist.ReduceOp.MAX if dist.is_initialized() else None)
        self.last_loss = float(loss[0])
        self.losses.append(self.last_loss)
        self.step_times.append(now - self.step_started)
        self.iter_times.append(now - self.last_step_end)
        self.tokens += trainer.step_tokens
        self.seqlen = max(self.seqlen, int(seqlen[0]))
        trainer.step_loss = torch.zeros(())
        trainer.step_seqlen = 0
        epoch = float(state.epoch or 0.0)
        if step % self.log_interval == 0 or step == self.total_steps:
            if step > self.last_train:
                self._append({"type": "train", "iter": step, "epoch": epoch,
                              "loss": sum(self.losses) / len(self.losses), "lr": self.lr,
                              "step_time": sum(self.step_times) / len(self.step_times),
                              "iter_time": sum(self.iter_times) / len(self.iter_times),
                              "tokens": self.tokens, "seqlen": self.seqlen})
                self.last_train = step
            self._reset_interval()
        if step in self.eval_at and step > self.last_eval:
            self._eval_row(step, epoch)
        if step in self.save_at:
            control.should_save = True
        self.last_step_end = time.perf_counter()

    def _eval_row(self, step: int, epoch: float) -> None:
        trainer = self.trainer
        values = heldout_values(trainer.model, self.eval_examples, trainer.data_collator, beta=trainer.beta,
                                temperature=trainer.temperature)
        if values is not None:
            self._append({"type": "eval", "iter": step, "epoch": epoch, "eval_loss": values[0],
                          "heldout_kl": values[1]})
        self.last_eval = step

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """The Trainer has saved ``work/checkpoint-<step>`` (every process its part): publish it."""
        barrier()
        step = state.global_step
        if self.main:
            written = Path(str(args.output_dir)) / f"checkpoint-{step}"
            checkpoints.finish(written, spec=self.spec, step=step, epoch=float(state.epoch or 0.0),
                               loss=self.last_loss)
            bakefiles.publish_checkpoint(self.job_dir, written, step)
        barrier()
