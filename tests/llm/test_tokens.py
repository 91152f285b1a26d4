"""Counting a rollout's input tokens: the approximation, a local tokenizer, Anthropic's count_tokens, fallbacks."""
from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from stimserver.config import Settings
from stimserver.jobs.rollout import _request as trajectory_request
from stimserver.llm import LLMConfig
from stimserver.llm.tokens import (
    ANTHROPIC,
    APPROXIMATION,
    EXACT_SAMPLE,
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    TOKENIZER,
    approx_tokens,
    count_tokens,
    find_tokenizer,
    scan_stimuli,
)

from .fake_providers import TEST_KEY, Fail, anthropic_server  # noqa: F401  (fixture)

TEACHER = "You are a patient geography tutor who always answers in full sentences"  # 12 words


def write_stimuli(folder: Path, rows: list[dict], data: str = "output.jsonl", idx: str = "output.idx") -> Path:
    """A line file and its index, as a complete stim output stores them."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [orjson.dumps(r) + b"\n" for r in rows]
    ends, end = [], 0
    for line in lines:
        end += len(line)
        ends.append(end)
    (folder / data).write_bytes(b"".join(lines))
    (folder / idx).write_bytes(b"".join(e.to_bytes(8, "little") for e in ends))
    return folder


def stim_row(i: int, question: str, system: str = TEACHER, tools: list | None = None) -> dict:
    side: dict = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}
    if tools:
        side["tools"] = tools
    return {"stimulus_id": i, "question": question, "unconditioned_stimulus": side,
            "conditioned_stimulus": {"messages": [{"role": "user", "content": question}]}}


def scan_of(tmp_path: Path, rows: list[dict], **kwargs):
    return scan_stimuli(write_stimuli(tmp_path / "stim", rows), "output.jsonl", "output.idx", trajectory_request,
                        **kwargs)


def config(**settings) -> LLMConfig:
    return LLMConfig.from_settings(Settings.build(**settings))


@pytest.mark.parametrize("text, tokens", [("", 0), ("abcd", 1), ("abcde", 2), ("é", 1), ("日本", 2), ("x" * 400, 100)])
def test_approx_tokens_is_utf8_bytes_over_four_rounded_up(text, tokens):
    assert approx_tokens(text) == tokens


def test_a_scan_groups_stimuli_by_their_prefix(tmp_path):
    rows = [stim_row(i, f"Question {i}?") for i in range(5)] + [stim_row(5, "Other?", system="Be brief.")]
    rows.append({"stimulus_id": 6, "question": "Imported, with a question only?"})
    scan = scan_of(tmp_path, rows)
    assert scan.lines == 7 and len(scan.stimuli) == 7
    assert [p.stimuli for p in scan.prefixes] == [5, 1, 1]
    assert scan.prefixes[0].messages == [{"role": "system", "content": TEACHER}]
    assert scan.prefixes[2].empty  # a question alone: no prefix at all
    assert scan.stimuli[0].tail == {"role": "user", "content": "Question 0?"} and scan.stimuli[0].nbytes == 11


def test_a_long_file_is_read_at_spread_lines(tmp_path):
    scan = scan_of(tmp_path, [stim_row(i, f"Q{i}?") for i in range(100)], max_scan=10)
    assert scan.lines == 100 and [s.line for s in scan.stimuli] == list(range(0, 100, 10))


def test_no_stimuli_file_is_none(tmp_path):
    assert scan_stimuli(tmp_path, "output.jsonl", "output.idx", trajectory_request) is None


async def test_the_approximation_counts_every_stimulus(tmp_path):
    rows = [stim_row(i, "x" * (4 * (i + 1))) for i in range(10)]  # 1..10 tokens each
    counts = await count_tokens(scan_of(tmp_path, rows), "gpt-4o", config(data_dir=tmp_path), models_dirs=[tmp_path])
    assert counts.counted_by == APPROXIMATION and not counts.fallback and counts.counted == 10
    assert counts.prefixes == ((10.0, approx_tokens(TEACHER) + MESSAGE_OVERHEAD),)
    assert counts.stimulus_tokens == sum(range(1, 11)) + 10 * (MESSAGE_OVERHEAD + REPLY_PRIMING)
    assert "no tokenizer.json of model 'gpt-4o'" in counts.notes[0]


async def test_a_spread_scan_is_scaled_to_every_line(tmp_path):
    scan = scan_of(tmp_path, [stim_row(i, "abcd") for i in range(100)], max_scan=10)
    counts = await count_tokens(scan, "gpt-4o", config(data_dir=tmp_path), models_dirs=[tmp_path])
    assert counts.stimuli == 100 and counts.scanned == 10
    assert counts.prefixes[0][0] == 100.0 and counts.stimulus_tokens == 100 * (1 + MESSAGE_OVERHEAD + REPLY_PRIMING)
    assert any("10 of 100 lines read" in note for note in counts.notes)


def _word_tokenizer(folder: Path) -> Path:
    """A model folder with a tokenizer.json that makes one token of each word or punctuation mark."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


async def test_a_local_models_tokenizer_counts(tmp_path):
    path = _word_tokenizer(tmp_path / "models" / "tiny-chat")
    assert find_tokenizer("tiny-chat", [tmp_path / "models"]) == path
    rows = [stim_row(i, "What is the capital of Peru ?") for i in range(3)]  # 7 tokens
    counts = await count_tokens(scan_of(tmp_path, rows), "tiny-chat", config(data_dir=tmp_path),
                                models_dirs=[tmp_path / "models"])
    assert counts.counted_by == TOKENIZER and counts.tokenizer == str(path) and counts.counted == 3
    assert counts.prefixes == ((3.0, 12 + MESSAGE_OVERHEAD),)
    assert counts.stimulus_tokens == 3 * (7 + MESSAGE_OVERHEAD + REPLY_PRIMING)


async def test_without_the_tokenizers_package_it_approximates_and_says_so(tmp_path, monkeypatch):
    _word_tokenizer(tmp_path / "models" / "tiny-chat")
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if it were not installed
    counts = await count_tokens(scan_of(tmp_path, [stim_row(0, "Q?")]), "tiny-chat", config(data_dir=tmp_path),
                                models_dirs=[tmp_path / "models"])
    assert counts.counted_by == APPROXIMATION and counts.fallback
    assert "the tokenizers package is not installed" in counts.notes[0]


def _anthropic(tmp_path, server) -> LLMConfig:
    return config(data_dir=tmp_path, anthropic_base_url=server.url, anthropic_api_key=server.api_key)


async def test_anthropic_counts_the_prefix_once_and_each_stimulus_exactly(tmp_path, anthropic_server):  # noqa: F811
    questions = [" ".join(["word"] * (i + 2)) for i in range(10)]  # 2..11 words
    counts = await count_tokens(scan_of(tmp_path, [stim_row(i, q) for i, q in enumerate(questions)]),
                                "claude-sonnet-4-5", _anthropic(tmp_path, anthropic_server), models_dirs=[])
    assert counts.counted_by == ANTHROPIC and not counts.fallback and counts.counted == 10
    # the fake counts words: the prefix with its one-word probe turn, then each whole request minus that
    assert counts.prefixes == ((10.0, 12 + 1),)
    assert counts.stimulus_tokens == sum(i + 2 - 1 for i in range(10))
    assert anthropic_server.calls.count("POST /v1/messages/count_tokens") == 1 + 10
    assert counts.notes == ()


async def test_anthropic_counts_a_sample_and_scales_the_rest_by_bytes(tmp_path, anthropic_server):  # noqa: F811
    rows = [stim_row(i, " ".join(["word"] * (5 + i % 20))) for i in range(300)]
    counts = await count_tokens(scan_of(tmp_path, rows), "claude-sonnet-4-5", _anthropic(tmp_path, anthropic_server),
                                models_dirs=[])
    assert counts.counted == EXACT_SAMPLE
    assert anthropic_server.calls.count("POST /v1/messages/count_tokens") == 1 + EXACT_SAMPLE
    exact = sum(5 + i % 20 - 1 for i in range(300))
    assert abs(counts.stimulus_tokens - exact) / exact < 0.05
    assert any(f"{EXACT_SAMPLE} of 300 stimuli read counted one by one" in note for note in counts.notes)


async def test_anthropic_sends_the_rollouts_request_shape(tmp_path, anthropic_server, monkeypatch):  # noqa: F811
    import anthropic

    sent: list[dict] = []
    original = anthropic.resources.messages.AsyncMessages.count_tokens

    async def spy(self, **kwargs):
        sent.append(kwargs)
        return await original(self, **kwargs)

    monkeypatch.setattr(anthropic.resources.messages.AsyncMessages, "count_tokens", spy)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    await count_tokens(scan_of(tmp_path, [stim_row(0, "Capital of Peru?", tools=tools)]), "claude-sonnet-4-5",
                       _anthropic(tmp_path, anthropic_server), models_dirs=[])
    prefix, whole = sent
    assert whole["model"] == "claude-sonnet-4-5"
    assert whole["system"] == [{"type": "text", "text": TEACHER, "cache_control": {"type": "ephemeral"}}]
    assert whole["tools"][0]["name"] == "lookup" and "input_schema" in whole["tools"][0]
    assert whole["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Capital of Peru?"}]}]
    assert prefix["messages"] == [{"role": "user", "content": [{"type": "text", "text": "."}]}]


async def test_without_credentials_anthropic_falls_back_to_the_approximation(tmp_path):
    counts = await count_tokens(scan_of(tmp_path, [stim_row(0, "Q?")]), "claude-sonnet-4-5",
                                config(data_dir=tmp_path), models_dirs=[])
    assert counts.counted_by == APPROXIMATION and counts.fallback
    assert "no ANTHROPIC_API_KEY" in counts.notes[0]


async def test_a_failing_count_falls_back_and_never_shows_the_key(tmp_path, anthropic_server):  # noqa: F811
    anthropic_server.fail_call("POST /v1/messages/count_tokens", Fail(400, f"bad request for key {TEST_KEY}"))
    counts = await count_tokens(scan_of(tmp_path, [stim_row(0, "Q?")]), "claude-sonnet-4-5",
                                _anthropic(tmp_path, anthropic_server), models_dirs=[])
    assert counts.counted_by == APPROXIMATION and counts.fallback
    assert "count_tokens failed" in counts.notes[0] and TEST_KEY not in counts.notes[0] and "***" in counts.notes[0]


async def test_an_unreachable_provider_falls_back(tmp_path, anthropic_server):  # noqa: F811
    url = anthropic_server.url
    await anthropic_server.close()
    counts = await count_tokens(scan_of(tmp_path, [stim_row(0, "Q?")]), "claude-sonnet-4-5",
                                config(data_dir=tmp_path, anthropic_base_url=url, anthropic_api_key=TEST_KEY),
                                models_dirs=[])
    assert counts.counted_by == APPROXIMATION and counts.fallback
    assert "APIConnectionError" in counts.notes[0]


async def test_a_count_that_takes_too_long_falls_back(tmp_path, anthropic_server, monkeypatch):  # noqa: F811
    import asyncio

    import anthropic

    async def never(self, **kwargs):
        await asyncio.Event().wait()

    monkeypatch.setattr(anthropic.resources.messages.AsyncMessages, "count_tokens", never)
    counts = await count_tokens(scan_of(tmp_path, [stim_row(0, "Q?")]), "claude-sonnet-4-5",
                                _anthropic(tmp_path, anthropic_server), models_dirs=[], timeout=0.01)
    assert counts.fallback and "did not answer within 0.01 s" in counts.notes[0]
