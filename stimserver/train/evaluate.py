"""Did the bake work: held-out KL before and after, and the answers of teacher, base and baked model.

Runs in the trainer process. ``evaluate_before`` (once per job, before the first step; the
trainer writes its dict to ``eval-before.json``) measures the base model; ``evaluate_after``
(at the end; ``eval.json``) the baked one, reusing the teacher and base answers of ``before``.
Both read the held-out trajectories (``train.jsonl`` lines with ``split == "eval"``) and never
train.

Held-out KL: the mean, per response token, of KL(teacher ‖ student) at temperature 1 — the
teacher is the model with its adapter disabled on the teacher messages, the student the model
(adapter disabled before, enabled after) on the student messages, both followed by the same
response tokens; the number a bake minimises, on stimuli it never saw. ``kl_drop = 1 - after /
before``. Answers: greedy decoding of up to ``evaluation.samples`` held-out questions (the first
trajectory of each of the first stimuli by id), ``evaluation.max_new_tokens`` tokens each,
batched with left padding; their language (``language.detect``) gives the behaviour rates:
the share of answers in the language the teacher mostly answers in.
"""
from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .data import BakeCollator, Example, encode, pad_id, prompt_ids
from .language import detect
from .loss import kl_divergence, output_head, response_logits

__all__ = ["NO_EVAL_REASON", "DEFAULT_SAMPLES", "DEFAULT_MAX_NEW_TOKENS", "encode_records", "example_kl",
           "heldout_kl", "generate_answers", "pick_samples", "behaviour", "evaluate_before", "evaluate_after"]

NO_EVAL_REASON = "data.train_eval_split has no eval part"
DEFAULT_SAMPLES = 16
DEFAULT_MAX_NEW_TOKENS = 48
KL_BATCH = 8  # trajectories a forward pass: bounded memory (batch × response × vocabulary logits)
GENERATE_BATCH = 16


def _stimulus_key(record: dict[str, Any], several_targets: bool) -> str:
    sid = str(record.get("stimulus_id"))
    return f"{record.get('target')}/{sid}" if several_targets else sid


def _several_targets(records: Sequence[dict[str, Any]]) -> bool:
    return len({r.get("target") for r in records}) > 1


def _max_length(spec: dict[str, Any] | None) -> int | None:
    value = (((spec or {}).get("config") or {}).get("data") or {}).get("max_length")
    return int(value) if isinstance(value, int) and value > 0 else None


def encode_records(tokenizer: Any, records: Sequence[dict[str, Any]],
                   max_length: int | None = None) -> tuple[list[Example], list[str]]:
    """The records tokenized as the trainer does (``data.encode``: same cut at ``max_length``, same skips)
    and, for each kept one, its stimulus key (the stimulus id; ``target/id`` when several targets)."""
    several = _several_targets(records)
    examples, keys = [], []
    for r in records:
        example, _ = encode(tokenizer, r, max_length)
        if example is not None:
            examples.append(example)
            keys.append(_stimulus_key(r, several))
    return examples, keys


@contextlib.contextmanager
def _adapter(model: Any, enabled: bool) -> Iterator[None]:
    """The model with its LoRA adapter on or off (a model without adapters is its own base)."""
    if enabled or not hasattr(model, "disable_adapter"):
        yield
    else:
        with model.disable_adapter():
            yield


@contextlib.contextmanager
def _inference(model: Any) -> Iterator[None]:
    """Eval mode (no dropout) and no gradients, the model's training flag restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def example_kl(model: Any, tokenizer: Any, examples: Sequence[Example], *, student_adapter: bool,
               batch_size: int = KL_BATCH) -> list[tuple[float, int]]:
    """(sum of KL(teacher ‖ student) over its response tokens, their number) for each example, in order.

    Batched as in training (``data.BakeCollator``, logits only where a response token is
    predicted); the teacher always runs with the adapter disabled.
    """
    collate = BakeCollator(pad_id(tokenizer))
    head = output_head(model)
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].student_ids))  # less padding
    out: dict[int, tuple[float, int]] = {}
    with _inference(model):
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in chosen]).items()}
            with _adapter(model, False):
                teacher = response_logits(model, head, batch["teacher_input_ids"], batch["teacher_attention_mask"],
                                          batch["teacher_completion_mask"])
            with _adapter(model, student_adapter):
                student = response_logits(model, head, batch["student_input_ids"], batch["student_attention_mask"],
                                          batch["student_completion_mask"])
            token_kl = kl_divergence(torch.log_softmax(teacher.float(), dim=-1),
                                     torch.log_softmax(student.float(), dim=-1)).clamp(min=0.0)
            offset = 0
            for i in chosen:  # the logits' rows are the batch's rows, concatenated in order
                n = examples[i].response_len
                out[i] = (float(token_kl[offset:offset + n].sum()), n)
                offset += n
    return [out[i] for i in range(len(examples))]


def heldout_kl(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], *, student_adapter: bool,
               max_length: int | None = None, batch_size: int = KL_BATCH) -> dict[str, Any]:
    """Held-out KL over ``records``: ``{examples, stimuli, kl, per_stimulus}``.

    ``kl`` weighs every response token alike (as the trainer's ``heldout_kl`` rows do);
    ``per_stimulus`` averages the per-token KL of each trajectory of a stimulus.
    """
    examples, keys = encode_records(tokenizer, records, max_length)
    sums = example_kl(model, tokenizer, examples, student_adapter=student_adapter, batch_size=batch_size)
    tokens = sum(n for _, n in sums)
    by_stimulus: dict[str, list[float]] = defaultdict(list)
    for key, (total, n) in zip(keys, sums, strict=True):
        by_stimulus[key].append(total / n)
    return {"examples": len(examples), "stimuli": len(by_stimulus),
            "kl": sum(t for t, _ in sums) / tokens if tokens else None,
            "per_stimulus": {k: sum(v) / len(v) for k, v in by_stimulus.items()}}


def generate_answers(model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, Any]]], *, adapter: bool,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_size: int = GENERATE_BATCH) -> list[str]:
    """Greedy answers to ``conversations`` (chat template, generation prompt), batched with left padding."""
    from transformers import GenerationConfig

    pad = pad_id(tokenizer)
    # temperature / top_p at their neutral values: the model's own sampling defaults would be merged in
    # and warned about, though greedy decoding ignores them
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, temperature=1.0, top_p=1.0,
                              pad_token_id=pad, eos_token_id=tokenizer.eos_token_id, use_cache=True)
    answers: list[str] = []
    device = next(model.parameters()).device
    with _inference(model), _adapter(model, adapter):
        for start in range(0, len(conversations), batch_size):
            prompts = [prompt_ids(tokenizer, c) for c in conversations[start:start + batch_size]]
            width = max(len(p) for p in prompts)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            answers += [tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=True).strip() for row in out]
    return answers


def pick_samples(records: Sequence[dict[str, Any]], samples: int) -> list[dict[str, Any]]:
    """One record per stimulus (its first trajectory), for the first ``samples`` stimuli by id."""
    first: dict[tuple[Any, Any], dict[str, Any]] = {}
    for r in records:
        key = (r.get("target"), r.get("stimulus_id"))
        if key not in first or (r.get("trajectory_id") or 0) < (first[key].get("trajectory_id") or 0):
            first[key] = r
    ordered = sorted(first.values(), key=lambda r: (r.get("stimulus_id") or 0, str(r.get("target"))))
    return ordered[:max(0, samples)]


def _question(record: dict[str, Any]) -> str | None:
    if record.get("question"):
        return str(record["question"])
    users = [m.get("content") for m in record.get("student_messages") or [] if m.get("role") == "user"]
    return str(users[-1]) if users else None


def _answer(text: str) -> dict[str, Any]:
    return {"answer": text, "language": detect(text)}


def behaviour(samples: list[dict[str, Any]], sides: tuple[str, ...]) -> dict[str, Any]:
    """The share of each side's answers in the teacher's most common language (None when it has none)."""
    found = Counter(s["teacher"]["language"] for s in samples if s["teacher"]["language"])
    language = found.most_common(1)[0][0] if found else None
    out: dict[str, Any] = {"check": "language", "teacher_language": language, "questions": len(samples)}
    for side in sides:
        hits = sum(1 for s in samples if language and s[side]["language"] == language)
        out[f"{side}_rate"] = hits / len(samples) if samples and language else None
    return out


def _evaluation(spec: dict[str, Any]) -> tuple[int, int]:
    ev = spec.get("evaluation") or {}
    return int(ev.get("samples", DEFAULT_SAMPLES)), int(ev.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))


def _no_eval() -> dict[str, Any]:
    return {"heldout": None, "behaviour": None, "samples": [], "reason": NO_EVAL_REASON}


def _sample_rows(picked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    several = _several_targets(picked)
    return [{"target": r.get("target"), "stimulus_id": r.get("stimulus_id"), "question": _question(r),
             "key": _stimulus_key(r, several)} for r in picked]


def evaluate_before(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], *,
                    spec: dict[str, Any]) -> dict[str, Any]:
    """``eval-before.json``: held-out KL of the base model, the teacher's and the base model's answers."""
    records = [r for r in records if r.get("split", "eval") == "eval"]
    if not records:
        return _no_eval()
    samples, max_new = _evaluation(spec)
    heldout = heldout_kl(model, tokenizer, records, student_adapter=False, max_length=_max_length(spec))
    picked = pick_samples(records, samples)
    teacher = generate_answers(model, tokenizer, [r["teacher_messages"] for r in picked], adapter=False,
                               max_new_tokens=max_new)
    base = generate_answers(model, tokenizer, [r["student_messages"] for r in picked], adapter=False,
                            max_new_tokens=max_new)
    rows = []
    for row, t, b in zip(_sample_rows(picked), teacher, base, strict=True):
        key = row.pop("key")
        rows.append({**row, "teacher": _answer(t), "base": _answer(b),
                     "kl_before": heldout["per_stimulus"].get(key)})
    return {"heldout": heldout, "behaviour": behaviour(rows, ("teacher", "base")), "samples": rows}


def evaluate_after(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], before: dict[str, Any], *,
                   spec: dict[str, Any], checkpoint: int) -> dict[str, Any]:
    """``eval.json``: held-out KL of the baked model against ``before``'s, and the three answers per sample.

    Teacher and base answers come from ``before`` when it has them for a sampled stimulus (they
    are the same model and prompts), else they are generated here.
    """
    records = [r for r in records if r.get("split", "eval") == "eval"]
    if not records:
        return {"checkpoint": checkpoint, **_no_eval()}
    samples, max_new = _evaluation(spec)
    max_length = _max_length(spec)
    old = before.get("heldout") or {}
    if old.get("kl") is None:
        old = heldout_kl(model, tokenizer, records, student_adapter=False, max_length=max_length)
    after = heldout_kl(model, tokenizer, records, student_adapter=True, max_length=max_length)
    kl_before, kl_after = old.get("kl"), after["kl"]
    kl_drop = 1 - kl_after / kl_before if kl_before and kl_after is not None else None
    picked = pick_samples(records, samples)
    known = {(s.get("target"), s.get("stimulus_id")): s for s in before.get("samples") or []
             if s.get("teacher") and s.get("base")}
    missing = [r for r in picked if (r.get("target"), r.get("stimulus_id")) not in known]
    if missing:
        teacher = generate_answers(model, tokenizer, [r["teacher_messages"] for r in missing], adapter=False,
                                   max_new_tokens=max_new)
        base = generate_answers(model, tokenizer, [r["student_messages"] for r in missing], adapter=False,
                                max_new_tokens=max_new)
        for r, t, b in zip(missing, teacher, base, strict=True):
            known[(r.get("target"), r.get("stimulus_id"))] = {"teacher": _answer(t), "base": _answer(b)}
    baked = generate_answers(model, tokenizer, [r["student_messages"] for r in picked], adapter=True,
                             max_new_tokens=max_new)
    rows = []
    per_before = old.get("per_stimulus") or {}
    for row, b in zip(_sample_rows(picked), baked, strict=True):
        key = row.pop("key")
        seen = known[(row["target"], row["stimulus_id"])]
        rows.append({**row, "teacher": seen["teacher"], "base": seen["base"], "baked": _answer(b),
                     "kl_before": per_before.get(key), "kl_after": after["per_stimulus"].get(key)})
    heldout = {"examples": after["examples"], "stimuli": after["stimuli"], "kl_before": kl_before,
               "kl_after": kl_after, "kl_drop": kl_drop}
    return {"checkpoint": checkpoint, "heldout": heldout,
            "behaviour": behaviour(rows, ("teacher", "base", "baked")), "samples": rows}
