"""train.loss: the generalized JSD's properties, and logits computed only where a response token is predicted."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stimserver.train import data
from stimserver.train.loss import generalized_jsd, output_head, prediction_positions, response_logits
from tests.train import tiny


def logits(seed: int, shape: tuple[int, ...] = (5, 11)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_zero_when_the_distributions_are_equal(beta: float) -> None:
    x = logits(1)
    assert torch.allclose(generalized_jsd(x, x.clone(), beta=beta), torch.zeros(5), atol=1e-6)
    assert torch.allclose(generalized_jsd(x, x + 4.0, beta=beta), torch.zeros(5), atol=1e-5)  # softmax shift


def test_beta_0_is_forward_kl_and_beta_1_reverse_kl() -> None:
    student, teacher = logits(1), logits(2)
    s, t = F.log_softmax(student, -1), F.log_softmax(teacher, -1)
    forward = F.kl_div(s, t, reduction="none", log_target=True).sum(-1)   # KL(teacher ‖ student)
    reverse = F.kl_div(t, s, reduction="none", log_target=True).sum(-1)   # KL(student ‖ teacher)
    assert torch.allclose(generalized_jsd(student, teacher, beta=0.0), forward, atol=1e-5)
    assert torch.allclose(generalized_jsd(student, teacher, beta=1.0), reverse, atol=1e-5)
    assert not torch.allclose(forward, reverse)


def test_between_it_is_a_jensen_shannon_divergence() -> None:
    student, teacher = logits(3), logits(4)
    half = generalized_jsd(student, teacher, beta=0.5)
    assert torch.allclose(half, generalized_jsd(teacher, student, beta=0.5), atol=1e-5)  # symmetric at 0.5
    assert (half >= 0).all() and (half <= torch.log(torch.tensor(2.0)) + 1e-5).all()  # bounded by log 2
    p, q = F.softmax(teacher, -1), F.softmax(student, -1)
    m = 0.3 * p + 0.7 * q
    expected = 0.3 * (p * (p / m).log()).sum(-1) + 0.7 * (q * (q / m).log()).sum(-1)
    assert torch.allclose(generalized_jsd(student, teacher, beta=0.3), expected, atol=1e-5)


def test_temperature_scales_the_logits() -> None:
    student, teacher = logits(5), logits(6)
    assert torch.allclose(generalized_jsd(student, teacher, temperature=2.0),
                          generalized_jsd(student / 2, teacher / 2), atol=1e-6)
    assert generalized_jsd(student, teacher, temperature=4.0).mean() < generalized_jsd(student, teacher).mean()


def test_gradients_flow_to_the_student_only() -> None:
    student, teacher = logits(7).requires_grad_(), logits(8).requires_grad_()
    generalized_jsd(student, teacher.detach()).sum().backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None


def test_prediction_positions_shift_the_completion_mask_left() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]])
    assert prediction_positions(mask).long().tolist() == [[0, 1, 1, 0, 0], [1, 1, 1, 1, 0]]


def test_response_logits_are_the_full_logits_at_the_predicting_positions() -> None:
    from transformers import AutoModelForCausalLM

    tok = tiny.tokenizer()
    model = AutoModelForCausalLM.from_pretrained(tiny.model_dir()).eval()
    examples = [data.encode(tok, r, None)[0] for r in tiny.records(3, 0, 1)]
    batch = data.BakeCollator(data.pad_id(tok))(examples)
    ids, attention, completion = (batch[f"student_{k}"] for k in ("input_ids", "attention_mask", "completion_mask"))
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=attention).logits
        only = response_logits(model, output_head(model), ids, attention, completion)
    assert only.shape == (int(completion.sum()), model.config.vocab_size)
    assert torch.allclose(only, full[prediction_positions(completion)], atol=1e-5)
    assert not output_head(model)._forward_pre_hooks  # the hook is gone after the call
