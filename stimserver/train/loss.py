"""The bake's objective: how far the student's next-token distribution is from the teacher's, on response tokens.

``generalized_jsd`` is the generalized Jensen–Shannon divergence of GKD (Agarwal et al. 2024, as
TRL's GKD trainer defines it): ``beta`` 0 is the forward KL(teacher ‖ student) — prompt baking's
objective —, 1 the reverse KL(student ‖ teacher), and in between ``beta·KL(teacher ‖ m) +
(1-beta)·KL(student ‖ m)`` with the mixture ``m = beta·teacher + (1-beta)·student``. Both
distributions are softmaxes of the logits divided by ``temperature``.

``response_logits`` runs a causal LM and computes its output head only at the positions that
predict a response token: a small model's head over a 49k vocabulary costs as much as its
layers, and prompts are a third of a bake's tokens. It selects those positions with a forward
pre-hook on the head, so the model's own ``forward`` (and a DistributedDataParallel wrapper
around it) still runs as usual.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["generalized_jsd", "kl_divergence", "prediction_positions", "response_logits", "output_head"]


def kl_divergence(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) over the last dimension, from log-probabilities."""
    return (p_log.exp() * (p_log - q_log)).sum(-1)


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, beta: float = 0.0,
                    temperature: float = 1.0) -> torch.Tensor:
    """The divergence of each row (a token's next-token logits, ``[..., vocab]``) → ``[...]``, in float32."""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if beta <= 0:
        return kl_divergence(teacher, student)
    if beta >= 1:
        return kl_divergence(student, teacher)
    mixture = torch.logsumexp(torch.stack([student + math.log(1 - beta), teacher + math.log(beta)]), dim=0)
    return beta * kl_divergence(teacher, mixture) + (1 - beta) * kl_divergence(student, mixture)


def prediction_positions(completion_mask: torch.Tensor) -> torch.Tensor:
    """The positions whose logits predict a completion token (the token after them): the mask shifted left."""
    positions = torch.zeros_like(completion_mask, dtype=torch.bool)
    positions[:, :-1] = completion_mask[:, 1:].bool()
    return positions


def output_head(model: Any) -> torch.nn.Module:
    """The module that turns hidden states into logits (through PEFT and DDP wrappers)."""
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    head = inner.get_output_embeddings()
    if head is None:
        raise TypeError(f"{type(inner).__name__} has no output head")
    return head


@contextlib.contextmanager
def _head_only_at(head: torch.nn.Module, positions: torch.Tensor) -> Iterator[None]:
    def select(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        if hidden.shape[:2] != positions.shape:
            raise RuntimeError(f"the output head got hidden states {tuple(hidden.shape)} for positions "
                               f"{tuple(positions.shape)}: the model cut its logits itself")
        return (hidden[positions], *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


def response_logits(model: Any, head: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    completion_mask: torch.Tensor) -> torch.Tensor:
    """The logits predicting each completion token, rows concatenated in order: ``[completion tokens, vocab]``.

    ``model`` is what is called (a PeftModel, or DDP around one); ``head`` its output head.
    """
    with _head_only_at(head, prediction_positions(completion_mask)):
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.logits
