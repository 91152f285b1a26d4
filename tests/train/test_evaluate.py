"""The bake's held-out evaluation on a tiny random Llama: KL before/after, greedy answers, behaviour rates."""
from __future__ import annotations

import warnings
from typing import Any

import pytest

pytest.importorskip("peft")

import torch  # noqa: E402

from stimserver.train import evaluate  # noqa: E402
from tests.train import tiny  # noqa: E402

SPEC: dict[str, Any] = {"config": tiny.config(), "evaluation": {"samples": 3, "max_new_tokens": 4}}


@pytest.fixture(scope="module")
def model() -> Any:
    """A PeftModel whose adapter changes the output (random B, unlike a fresh adapter's zeros)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny.model_dir(), dtype=torch.float32)
    with warnings.catch_warnings():  # peft 0.21 reads an attribute transformers 5 deprecates
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                               init_lora_weights=False))
    peft.train()
    return peft


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return tiny.tokenizer()


def eval_records(stimuli: int = 4, trajectories: int = 2) -> list[dict[str, Any]]:
    return [r for r in tiny.records(train_stimuli=2, eval_stimuli=stimuli, trajectories=trajectories)
            if r["split"] == "eval"]


def same_prompts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "student_messages": r["teacher_messages"]} for r in records]


def test_kl_is_zero_for_the_same_model_and_prompts(model: Any, tokenizer: Any) -> None:
    result = evaluate.heldout_kl(model, tokenizer, same_prompts(eval_records()), student_adapter=False)
    assert result["examples"] == 8 and result["stimuli"] == 4
    assert result["kl"] == pytest.approx(0.0, abs=1e-6)
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in result["per_stimulus"].values())


def test_kl_is_positive_with_different_prompts(model: Any, tokenizer: Any) -> None:
    result = evaluate.heldout_kl(model, tokenizer, eval_records(), student_adapter=False)
    assert result["kl"] > 1e-6
    assert set(result["per_stimulus"]) == {"2", "3", "4", "5"}


def test_the_adapter_side_is_the_student(model: Any, tokenizer: Any) -> None:
    """Same prompts, adapter on for the student only: only the adapter can make them differ."""
    assert evaluate.heldout_kl(model, tokenizer, same_prompts(eval_records()), student_adapter=True)["kl"] > 1e-6
    assert model.training  # the training flag is given back


def test_kl_does_not_depend_on_the_batching(model: Any, tokenizer: Any) -> None:
    records = eval_records(stimuli=5)
    one = evaluate.heldout_kl(model, tokenizer, records, student_adapter=True, batch_size=1)
    many = evaluate.heldout_kl(model, tokenizer, records, student_adapter=True, batch_size=4)
    assert many["kl"] == pytest.approx(one["kl"], rel=1e-4)
    for key, value in one["per_stimulus"].items():
        assert many["per_stimulus"][key] == pytest.approx(value, rel=1e-4)


def test_kl_is_a_mean_per_token_and_per_stimulus_a_mean_per_trajectory(model: Any, tokenizer: Any) -> None:
    records = eval_records(stimuli=2)
    examples, keys = evaluate.encode_records(tokenizer, records)
    sums = evaluate.example_kl(model, tokenizer, examples, student_adapter=True)
    result = evaluate.heldout_kl(model, tokenizer, records, student_adapter=True)
    assert result["kl"] == pytest.approx(sum(s for s, _ in sums) / sum(n for _, n in sums))
    first = [s / n for k, (s, n) in zip(keys, sums, strict=True) if k == keys[0]]
    assert result["per_stimulus"][keys[0]] == pytest.approx(sum(first) / len(first))


def test_max_length_cuts_responses_like_the_trainer(model: Any, tokenizer: Any) -> None:
    records = eval_records(stimuli=2)
    full, _ = evaluate.encode_records(tokenizer, records)
    prompt = max(max(len(e.teacher_ids), len(e.student_ids)) - e.response_len for e in full)
    cut, _ = evaluate.encode_records(tokenizer, records, max_length=prompt + 2)
    assert len(cut) == len(full)
    assert all(max(len(e.teacher_ids), len(e.student_ids)) <= prompt + 2 for e in cut)
    assert min(e.response_len for e in cut) <= 2 < min(e.response_len for e in full)
    assert evaluate.encode_records(tokenizer, records, max_length=5)[0] == []  # no room at all: left out


def test_generation_returns_greedy_strings(model: Any, tokenizer: Any) -> None:
    conversations = [r["student_messages"] for r in eval_records(stimuli=3, trajectories=1)]
    batched = evaluate.generate_answers(model, tokenizer, conversations, adapter=True, max_new_tokens=4)
    single = evaluate.generate_answers(model, tokenizer, conversations, adapter=True, max_new_tokens=4, batch_size=1)
    assert len(batched) == 3 and all(isinstance(a, str) for a in batched)
    assert batched == single  # left padding changes nothing
    assert model.training


def test_pick_samples_takes_the_first_trajectory_of_the_first_stimuli() -> None:
    records = list(reversed(eval_records(stimuli=4, trajectories=3)))
    picked = evaluate.pick_samples(records, 2)
    assert [(r["stimulus_id"], r["trajectory_id"]) for r in picked] == [(2, 0), (3, 0)]
    assert len(evaluate.pick_samples(records, 16)) == 4


def test_evaluate_before(model: Any, tokenizer: Any) -> None:
    records = tiny.records(train_stimuli=2, eval_stimuli=4)
    result = evaluate.evaluate_before(model, tokenizer, records, spec=SPEC)  # train lines are ignored
    assert result["heldout"]["examples"] == 8 and result["heldout"]["stimuli"] == 4
    assert result["heldout"]["kl"] > 0
    assert [s["stimulus_id"] for s in result["samples"]] == [2, 3, 4]
    for sample in result["samples"]:
        assert sample["target"] == "french" and sample["question"]
        assert isinstance(sample["teacher"]["answer"], str) and isinstance(sample["base"]["answer"], str)
        assert "language" in sample["teacher"] and "baked" not in sample
        assert sample["kl_before"] == result["heldout"]["per_stimulus"][str(sample["stimulus_id"])]
    assert set(result["behaviour"]) == {"check", "teacher_language", "questions", "teacher_rate", "base_rate"}
    assert result["behaviour"]["questions"] == 3


def test_evaluate_after_reports_the_drop_and_reuses_the_answers_before(model: Any, tokenizer: Any) -> None:
    records = eval_records(stimuli=3)
    before = {"heldout": {"examples": 6, "stimuli": 3, "kl": 2.5, "per_stimulus": {"2": 1.0, "3": 2.0, "4": 3.0}},
              "samples": [{"target": "french", "stimulus_id": 2, "question": "q",
                           "teacher": {"answer": "Le chat est sur la table.", "language": "fr"},
                           "base": {"answer": "The cat is on the table.", "language": "en"}}]}
    result = evaluate.evaluate_after(model, tokenizer, records, before, spec=SPEC, checkpoint=7)
    heldout = result["heldout"]
    assert result["checkpoint"] == 7
    assert heldout["kl_before"] == 2.5
    assert heldout["kl_after"] == pytest.approx(
        evaluate.heldout_kl(model, tokenizer, records, student_adapter=True)["kl"])
    assert heldout["kl_drop"] == pytest.approx(1 - heldout["kl_after"] / 2.5)
    assert (heldout["examples"], heldout["stimuli"]) == (6, 3)
    first, *rest = result["samples"]
    assert first["teacher"]["answer"] == "Le chat est sur la table."  # from before, not generated again
    assert first["base"]["answer"] == "The cat is on the table."
    assert (first["kl_before"], first["kl_after"]) == (1.0, pytest.approx(first["kl_after"]))
    assert len(rest) == 2 and all(isinstance(s["teacher"]["answer"], str) for s in rest)  # generated here
    assert all(isinstance(s["baked"]["answer"], str) and s["kl_after"] >= 0 for s in result["samples"])
    assert result["behaviour"]["check"] == "language" and "baked_rate" in result["behaviour"]


def test_evaluate_after_measures_the_base_when_before_has_no_kl(model: Any, tokenizer: Any) -> None:
    records = same_prompts(eval_records(stimuli=2))
    result = evaluate.evaluate_after(model, tokenizer, records, {}, spec=SPEC, checkpoint=1)
    assert result["heldout"]["kl_before"] == pytest.approx(0.0, abs=1e-6)
    assert result["heldout"]["kl_drop"] is None  # nothing to drop from


def test_no_eval_split(model: Any, tokenizer: Any) -> None:
    train_only = tiny.records(train_stimuli=3, eval_stimuli=0)
    expected: dict[str, Any] = {"heldout": None, "behaviour": None, "samples": [],
                                "reason": "data.train_eval_split has no eval part"}
    assert evaluate.evaluate_before(model, tokenizer, train_only, spec=SPEC) == expected
    after = evaluate.evaluate_after(model, tokenizer, [], expected, spec=SPEC, checkpoint=3)
    assert after == {"checkpoint": 3, **expected}


def test_behaviour_rates() -> None:
    def sample(teacher: str | None, base: str | None, baked: str | None) -> dict[str, Any]:
        return {"teacher": {"language": teacher}, "base": {"language": base}, "baked": {"language": baked}}

    samples = [sample("fr", "en", "fr"), sample("fr", None, "fr"), sample("en", "en", None), sample(None, "en", "fr")]
    assert evaluate.behaviour(samples, ("teacher", "base", "baked")) == {
        "check": "language", "teacher_language": "fr", "questions": 4,
        "teacher_rate": 0.5, "base_rate": 0.0, "baked_rate": 0.75}
    silent = evaluate.behaviour([sample(None, "en", "fr")], ("teacher", "base"))
    assert silent["teacher_language"] is None and silent["base_rate"] is None
