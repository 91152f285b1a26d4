"""A bake's trajectories as training examples: teacher and student ids that share one response.

Each ``train.jsonl`` line becomes two sequences: the teacher's prompt (chat template with the
generation prompt) + the response, and the student's prompt + the very same response ids. The
loss compares the two models' next-token distributions on those response tokens only, so both
sides mark them with a completion mask of the same length. The response gets the end-of-turn
token (the tokenizer's eos) when the model stopped by itself (``finish_reason == "stop"``): the
student then learns where to stop too.

``data.max_length`` bounds both sequences: the response is cut so the longer side fits
(``truncated``); a trajectory whose prompt alone leaves no room is left out (``skipped_too_long``).

The datasets' mixing weights are applied when ``train.jsonl`` is prepared (lines are drawn in
proportion); a line's ``weight`` other than 1.0 also weighs its tokens in the loss.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import torch

from ..store import bakefiles

__all__ = ["DataError", "Example", "BakeData", "prompt_ids", "response_ids", "encode", "load", "ExampleDataset",
           "BakeCollator", "pad_id"]


class DataError(ValueError):
    """The bake's data cannot be trained on (nothing left in the train split, a malformed line)."""


@dataclass(frozen=True)
class Example:
    teacher_ids: list[int]   # teacher prompt + response
    student_ids: list[int]   # student prompt + the same response
    response_len: int        # the response's tokens: the last ``response_len`` ids of both sides
    weight: float = 1.0


@dataclass
class BakeData:
    train: list[Example] = field(default_factory=list)
    eval: list[Example] = field(default_factory=list)
    eval_records: list[dict[str, Any]] = field(default_factory=list)  # the eval split's lines, as read
    truncated: int = 0
    skipped_too_long: int = 0
    skipped_empty: int = 0

    def counts(self) -> dict[str, int]:
        return {"train_examples": len(self.train), "eval_examples": len(self.eval),
                "truncated": self.truncated, "skipped_too_long": self.skipped_too_long,
                "skipped_empty": self.skipped_empty, "train_tokens": sum(e.response_len for e in self.train),
                "eval_tokens": sum(e.response_len for e in self.eval)}


def prompt_ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """The prompt as the model sees it before answering: the chat template with its generation prompt."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    return [int(i) for i in ids]


def response_ids(tokenizer: Any, response: str, finish_reason: str | None) -> list[int]:
    """The response's ids, and the end-of-turn token when the model stopped by itself."""
    ids = [int(i) for i in tokenizer(response, add_special_tokens=False)["input_ids"]]
    if finish_reason == "stop" and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def encode(tokenizer: Any, record: dict[str, Any], max_length: int | None) -> tuple[Example | None, str]:
    """One line → (example, "ok" | "truncated") or (None, "too_long" | "empty")."""
    teacher = prompt_ids(tokenizer, record["teacher_messages"])
    student = prompt_ids(tokenizer, record["student_messages"])
    response = response_ids(tokenizer, record.get("response") or "", record.get("finish_reason"))
    status = "ok"
    if max_length is not None:
        room = max_length - max(len(teacher), len(student))
        if room < 1:
            return None, "too_long"
        if len(response) > room:
            response, status = response[:room], "truncated"
    if not response:
        return None, "empty"
    weight = record.get("weight")
    return Example(teacher + response, student + response, len(response),
                   float(weight) if isinstance(weight, int | float) else 1.0), status


def load(job_dir: Path, tokenizer: Any, max_length: int | None) -> BakeData:
    """``train.jsonl`` of ``job_dir``, tokenized, split into train and eval. Raises ``DataError``."""
    path = job_dir / bakefiles.TRAIN_DATA
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise DataError(f"the bake has no training data ({bakefiles.TRAIN_DATA} is missing)") from None
    data = BakeData()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
            example, status = encode(tokenizer, record, max_length)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise DataError(f"{bakefiles.TRAIN_DATA} line {number} is not a trajectory: {e}") from e
        if status == "truncated":
            data.truncated += 1
        elif status == "too_long":
            data.skipped_too_long += 1
        elif status == "empty":
            data.skipped_empty += 1
        if record.get("split") == "eval":
            data.eval_records.append(record)
            if example is not None:
                data.eval.append(example)
        elif example is not None:
            data.train.append(example)
    if not data.train:
        why = (f"; {data.skipped_too_long} trajectories had prompts longer than data.max_length ({max_length})"
               if data.skipped_too_long else "")
        raise DataError(f"the bake has nothing to train on: the train split is empty{why}. Check the datasets' "
                        "rollouts and data.train_eval_split")
    return data


class ExampleDataset(torch.utils.data.Dataset[Example]):
    def __init__(self, examples: Sequence[Example]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]


def pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad) if pad is not None else 0


@dataclass(frozen=True)
class BakeCollator:
    """A batch of examples → teacher and student tensors, each side right-padded to its own longest row.

    ``*_completion_mask`` is 1 on the response tokens: the same count in a row on both sides, in the
    same order, so the positions a mask selects line up token for token.
    """

    pad_token_id: int

    def __call__(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        for side in ("teacher", "student"):
            rows = [getattr(e, f"{side}_ids") for e in examples]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            completion = torch.zeros((len(rows), width), dtype=torch.long)
            for i, (row, e) in enumerate(zip(rows, examples, strict=True)):
                ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
                attention[i, :len(row)] = 1
                completion[i, len(row) - e.response_len:len(row)] = 1
            batch[f"{side}_input_ids"] = ids
            batch[f"{side}_attention_mask"] = attention
            batch[f"{side}_completion_mask"] = completion
        batch["weight"] = torch.tensor([e.weight for e in examples], dtype=torch.float32)
        return batch
