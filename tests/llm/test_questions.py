"""Templates, parsing of model answers, and write_questions' count, dedupe and top-up rules."""

import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import pytest

from stimserver.llm import (
    DEFAULT_ONESHOT_TEMPLATE,
    DEFAULT_PERSONA_TEMPLATE,
    MAX_TEMPLATE_BYTES,
    LLMClient,
    LLMError,
    parse_questions,
    render_template,
    validate_template,
    write_questions,
)

from .fake_providers import FakeAnthropic, FakeOpenAI

TWO = ["What is bread?", "How do I bake?"]
THREE = [*TWO, "Why rye?"]
# Puts the requested count first in the prompt, so tests can read it back.
COUNT_TEMPLATE = "n=${numq}\n${prompt_u}"


class ScriptedModel:
    """Answers `complete` from a list (the last answer repeats) and records the prompts."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    async def complete(self, *, model: str, prompt: str, **params: object) -> str:
        self.prompts.append(prompt)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def asked_counts(self) -> list[str]:
        return [prompt.split("\n", 1)[0] for prompt in self.prompts]


async def write(model: ScriptedModel, numq: int, **options: object) -> list[str]:
    params: dict[str, object] = {
        "model": "m",
        "template_text": COUNT_TEMPLATE,
        "numq": numq,
        "prompt_u": "You are a helpful baker.",
        "temperature": 1.0,
        "max_tokens": None,
        "extra_kwargs": None,
        **options,
    }
    return await write_questions(model, **params)  # type: ignore[arg-type]  # **options may hold anything


# --- templates -----------------------------------------------------------------------------


def test_default_templates_are_valid() -> None:
    validate_template(DEFAULT_ONESHOT_TEMPLATE)
    validate_template(DEFAULT_PERSONA_TEMPLATE, extra_names=["persona"])


def test_render_fills_placeholders_and_keeps_values_literal() -> None:
    template = "Ask ${numq} for ${prompt_u} as $persona; costs $$5"
    text = render_template(template, numq=3, prompt_u="$x", persona="a cook")
    assert text == "Ask 3 for $x as a cook; costs $5"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Write questions for ${prompt_u}", r"must contain \$\{numq\}$"),
        ("Write ${numq} questions", r"must contain \$\{prompt_u\}$"),
        ("Write", r"must contain \$\{numq\} and \$\{prompt_u\}"),
        ("${numq} ${prompt_u}\nfor $5", r"bad placeholder '\$5' on line 2.*\$\$"),
        ("${numq} ${prompt_u} ${unclosed", r"bad placeholder '\$\{unclosed'"),
        ("${numq} ${prompt_u} ${persona}", r"unknown placeholder \$\{persona\}; available: \$\{numq\}, \$\{prompt_u\}"),
        ("${numq} ${prompt_u} " + "x" * MAX_TEMPLATE_BYTES, r"the limit is 1048576 \(1 MiB\)"),
    ],
    ids=["no-numq", "no-prompt_u", "neither", "dollar-digit", "unclosed-brace", "unknown-name", "too-big"],
)
def test_validate_template_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_template(text)


def test_render_rejects_a_placeholder_without_a_value() -> None:
    with pytest.raises(ValueError, match=r"unknown placeholder \$\{persona\}"):
        render_template(DEFAULT_PERSONA_TEMPLATE, numq=1, prompt_u="p")


# --- parse_questions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is bread?\nHow do I bake?", TWO),
        ("1. What is bread?\n2. How do I bake?", TWO),
        ("1) What is bread?\n10) How do I bake?", TWO),
        ("(1) What is bread?\n(2) How do I bake?", TWO),
        ("Q1: What is bread?\nq2. How do I bake?\nQuestion 3: Why rye?", THREE),
        ("- What is bread?\n* How do I bake?\n• Why rye?\n•Is it hot?", [*THREE, "Is it hot?"]),
        ("1. **What is bread?**\n**Q2:** How do I bake?", TWO),
        ('"What is bread?"\n1. “How do I bake?”\n\'Why rye?\'', THREE),
        ("\n\n  What is bread?  \n\n\nHow do I bake?\n", TWO),
        ("Here are 2 questions:\n1. What is bread?\n2. How do I bake?", TWO),
        ("Rye or wheat? Pick one:\nExplain this: the crumb", ["Rye or wheat? Pick one:", "Explain this: the crumb"]),
        ('["What is bread?", "How do I bake?"]', TWO),
        ('```json\n["What is bread?",\n "1. How do I\\n bake?"]\n```', TWO),
        ("```\nWhat is bread?\nHow do I bake?\n```", TWO),
        ("## Questions\n---\nWhat is bread?", ["What is bread?"]),
        ("1.5 million loaves: how?\n2020 was good for rye?", ["1.5 million loaves: how?", "2020 was good for rye?"]),
        ("What does __init__ do in my oven app?", ["What does __init__ do in my oven app?"]),
        ('["What is bread?", 3]', ['["What is bread?", 3]']),
        ("", []),
    ],
    ids=[
        "plain-lines",
        "numbered-dot",
        "numbered-paren",
        "numbered-parens",
        "q-prefixes",
        "bullets",
        "markdown-bold",
        "wrapping-quotes",
        "blank-lines",
        "preamble",
        "colon-in-question",
        "json-array",
        "fenced-json",
        "code-fence",
        "heading-and-rule",
        "leading-numbers-kept",
        "dunder-kept",
        "json-not-all-strings",
        "empty",
    ],
)
def test_parse_questions(text: str, expected: list[str]) -> None:
    assert parse_questions(text) == expected


# --- write_questions -----------------------------------------------------------------------


async def test_exact_count_in_one_round() -> None:
    model = ScriptedModel("A?\nB?\nC?")
    assert await write(model, 3) == ["A?", "B?", "C?"]
    assert model.asked_counts() == ["n=3"]


async def test_extras_are_truncated() -> None:
    model = ScriptedModel("1. A?\n2. B?\n3. C?\n4. D?\n5. E?")
    assert await write(model, 2) == ["A?", "B?"]
    assert len(model.prompts) == 1


async def test_duplicates_are_dropped_and_only_the_missing_are_asked_for() -> None:
    model = ScriptedModel("A?\nB?\nb?\n  a? \nC?", "D?\nA?\nE?\nF?")
    assert await write(model, 5) == ["A?", "B?", "C?", "D?", "E?"]
    assert model.asked_counts() == ["n=5", "n=2"]
    assert model.prompts[1].endswith("A?\nB?\nC?")  # the top-up lists what to avoid


async def test_a_model_that_keeps_repeating_fails_instead_of_padding() -> None:
    model = ScriptedModel("A?\nB?", "b?\nA?")
    with pytest.raises(LLMError, match=r"^model produced only 2 of 5 distinct questions after 3 attempts$"):
        await write(model, 5, max_rounds=3)
    assert model.asked_counts() == ["n=5", "n=3", "n=3"]


async def test_template_vars_reach_the_prompt() -> None:
    model = ScriptedModel("A?")
    await write(model, 1, template_text=DEFAULT_PERSONA_TEMPLATE, template_vars={"persona": "a retired pilot"})
    assert "a retired pilot" in model.prompts[0] and "You are a helpful baker." in model.prompts[0]


@pytest.mark.parametrize(("numq", "max_rounds"), [(0, 4), (3, 0)], ids=["numq", "max_rounds"])
async def test_bad_counts_are_refused(numq: int, max_rounds: int) -> None:
    model = ScriptedModel("A?")
    with pytest.raises(ValueError, match="at least 1"):
        await write(model, numq, max_rounds=max_rounds)
    assert model.prompts == []


async def test_end_to_end_through_the_openai_wire(
    make_client: Callable[[Mapping[str, str]], LLMClient], openai_server: FakeOpenAI
) -> None:
    openai_server.script(
        "Here are 3 questions:\n1. What is rye?\n2. What is rye?",
        "- Is spelt wheat?\n- How long to proof?",
    )
    questions = await write_questions(
        make_client(openai_server.env()),
        model="qwen2.5:7b",
        template_text=DEFAULT_ONESHOT_TEMPLATE,
        numq=3,
        prompt_u="You are a helpful baker.",
        temperature=0.9,
        max_tokens=256,
        extra_kwargs={"seed": 1},
    )
    assert questions == ["What is rye?", "Is spelt wheat?", "How long to proof?"]
    first, second = (request.body for request in openai_server.received)
    assert "Write exactly 3 diverse questions" in first["messages"][0]["content"]
    assert "Write exactly 2 diverse questions" in second["messages"][0]["content"]
    assert (second["temperature"], second["max_tokens"], second["seed"]) == (0.9, 256, 1)


async def test_persona_end_to_end_through_the_anthropic_wire(
    make_client: Callable[[Mapping[str, str]], LLMClient], anthropic_server: FakeAnthropic
) -> None:
    def answer(body: dict[str, Any]) -> str:
        """Writes as many questions as the prompt asks for, as a JSON array."""
        count = int(re.search(r"Write exactly (\d+)", body["messages"][0]["content"])[1])  # type: ignore[index]  # the prompt always says it
        return orjson.dumps([f"Pilot question {i}?" for i in range(count)]).decode()

    anthropic_server.script(answer)
    questions = await write_questions(
        make_client(anthropic_server.env()),
        model="claude-sonnet-4-6",
        template_text=DEFAULT_PERSONA_TEMPLATE,
        numq=4,
        prompt_u="You are a helpful baker.",
        temperature=0.5,
        max_tokens=None,
        extra_kwargs=None,
        template_vars={"persona": "a retired pilot"},
    )
    assert questions == [f"Pilot question {i}?" for i in range(4)]
    (request,) = anthropic_server.received
    assert "a retired pilot" in request.body["messages"][0]["content"]
    assert request.body["temperature"] == 0.5
