"""train.data: trajectories → teacher and student ids sharing one response; limits, counts, the collator."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import torch

from stimserver.train import data
from tests.train import tiny


def write_lines(job_dir: Path, lines: list[dict]) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "train.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))


def test_both_sides_end_with_the_same_response_and_eos_when_it_stopped() -> None:
    tok = tiny.tokenizer()
    stopped, cut = tiny.records(1, 0, 2)
    example, status = data.encode(tok, stopped, None)
    assert status == "ok" and example is not None
    response = tok(stopped["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert example.response_len == len(response)
    assert example.teacher_ids[-len(response):] == response == example.student_ids[-len(response):]
    assert example.teacher_ids[:-len(response)] == data.prompt_ids(tok, stopped["teacher_messages"])
    assert tok.decode(example.teacher_ids).count("Answer in French only.") == 1
    assert "Answer in French" not in tok.decode(example.student_ids)
    cut_example, _ = data.encode(tok, cut, None)
    assert cut_example is not None and cut_example.teacher_ids[-1] != tok.eos_token_id  # finish_reason "length"


def test_max_length_truncates_the_response_to_fit_the_longer_side_or_skips(tmp_path: Path) -> None:
    tok = tiny.tokenizer()
    record = tiny.records(1, 0, 1)[0]
    teacher = len(data.prompt_ids(tok, record["teacher_messages"]))
    student = len(data.prompt_ids(tok, record["student_messages"]))
    longest = max(teacher, student)
    example, status = data.encode(tok, record, longest + 3)
    assert status == "truncated" and example is not None and example.response_len == 3
    assert max(len(example.teacher_ids), len(example.student_ids)) == longest + 3
    assert data.encode(tok, record, longest) == (None, "too_long")

    lines = tiny.records(4, 2, 1)
    write_lines(tmp_path, lines)
    found = data.load(tmp_path, tok, longest + 3)
    counts = found.counts()
    assert counts["truncated"] == 6 and counts["skipped_too_long"] == 0
    assert (counts["train_examples"], counts["eval_examples"]) == (4, 2) and len(found.eval_records) == 2
    assert all(max(len(e.teacher_ids), len(e.student_ids)) <= longest + 3 for e in found.train + found.eval)
    unlimited = data.load(tmp_path, tok, None).counts()
    assert unlimited["truncated"] == 0 and unlimited["train_tokens"] > counts["train_tokens"]


def test_prompts_too_long_are_skipped_and_counted_and_an_empty_train_split_is_a_data_error(tmp_path: Path) -> None:
    tok = tiny.tokenizer()
    lines = tiny.records(3, 1, 1)
    lines[0]["teacher_messages"][1]["content"] = "word " * 300
    write_lines(tmp_path, lines)
    found = data.load(tmp_path, tok, 100)
    assert found.skipped_too_long == 1 and len(found.train) == 2
    for line in lines[:3]:
        line["student_messages"][0]["content"] = "word " * 300
    write_lines(tmp_path, lines)
    with pytest.raises(data.DataError, match="train split is empty; 3 trajectories had prompts longer"):
        data.load(tmp_path, tok, 100)


def test_missing_empty_or_malformed_data(tmp_path: Path) -> None:
    tok = tiny.tokenizer()
    with pytest.raises(data.DataError, match="missing"):
        data.load(tmp_path, tok, None)
    write_lines(tmp_path, tiny.records(0, 2, 1))  # only held-out lines
    with pytest.raises(data.DataError, match="nothing to train on"):
        data.load(tmp_path, tok, None)
    (tmp_path / "train.jsonl").write_bytes(b'{"split": "train"}\n')
    with pytest.raises(data.DataError, match="line 1 is not a trajectory"):
        data.load(tmp_path, tok, None)


def test_an_empty_response_that_did_not_stop_is_skipped(tmp_path: Path) -> None:
    tok = tiny.tokenizer()
    lines = tiny.records(2, 0, 1)
    lines[0].update(response="", finish_reason="length")
    write_lines(tmp_path, lines)
    found = data.load(tmp_path, tok, None)
    assert found.skipped_empty == 1 and len(found.train) == 1


def test_the_collator_pads_each_side_right_and_marks_equal_response_counts() -> None:
    tok = tiny.tokenizer()
    lines = tiny.records(3, 0, 1)
    lines[2]["weight"] = 2.0
    examples = [data.encode(tok, r, None)[0] for r in lines]
    batch = data.BakeCollator(data.pad_id(tok))(examples)
    assert set(batch) == {"teacher_input_ids", "teacher_attention_mask", "teacher_completion_mask",
                          "student_input_ids", "student_attention_mask", "student_completion_mask", "weight"}
    for side in ("teacher", "student"):
        ids, attention = batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"]
        lengths = [len(getattr(e, f"{side}_ids")) for e in examples]
        assert ids.shape == (3, max(lengths))
        assert attention.sum(1).tolist() == lengths
        for row, n in enumerate(lengths):  # right padding: real tokens first
            assert attention[row, :n].all() and not attention[row, n:].any()
            assert (ids[row, n:] == data.pad_id(tok)).all()
    assert batch["teacher_completion_mask"].sum(1).tolist() == batch["student_completion_mask"].sum(1).tolist() \
        == [e.response_len for e in examples]
    teacher = batch["teacher_input_ids"][batch["teacher_completion_mask"].bool()]
    student = batch["student_input_ids"][batch["student_completion_mask"].bool()]
    assert torch.equal(teacher, student)  # the same tokens, in the same order
    assert batch["weight"].tolist() == [1.0, 1.0, 2.0]
