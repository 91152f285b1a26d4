"""The models and the one adapter from pydantic errors to the 422 shape, without HTTP."""
from __future__ import annotations

import pytest

from stimserver.schemas.generators import CustomGenerator, HardcodedGenerator, PersonaGenerator
from stimserver.schemas.prompts import PromptCreate
from stimserver.schemas.repos import RepoCreate
from stimserver.schemas.targets import TargetConfig, TargetCreate, TargetOverrides, config_problems
from stimserver.schemas.validation import Invalid, message, parse


def problems(model, value, prefix=("body",)):
    with pytest.raises(Invalid) as e:
        parse(model, value, prefix)
    return e.value.detail


def test_detail_shape_and_message():
    detail = problems(RepoCreate, {"repo_name": "a/b", "base_model": 5, "extra": 1})
    assert [d["loc"] for d in detail] == [["body", "repo_name"], ["body", "base_model"], ["body", "extra"]]
    assert [d["type"] for d in detail] == ["value_error.name", "type_error.str", "value_error.extra"]
    assert all(set(d) == {"loc", "msg", "type"} for d in detail)
    assert message(detail).startswith("repo_name: contains invalid character: '/'")
    assert "base_model: must be a string, got number" in message(detail)
    assert "extra: unknown field 'extra'" in message(detail)


def test_missing_and_null_are_the_same():
    for body in ({}, {"repo_name": None}):
        assert problems(RepoCreate, body) == [{"loc": ["body", "repo_name"], "msg": "field required",
                                               "type": "value_error.missing"}]
    assert parse(RepoCreate, {"repo_name": "r", "base_model": None}).base_model is None


@pytest.mark.parametrize("numq, ok", [(3, True), (3.0, True), (3.5, False), (True, False), ("3", False), (0, False)],
                         ids=["int", "integral-float", "fraction", "bool", "string", "zero"])
def test_json_integers(numq, ok):
    body = {"type": "persona", "numq": numq}
    if ok:
        assert parse(PersonaGenerator, body).numq == 3
    else:
        assert problems(PersonaGenerator, body, ())[0]["loc"] == ["numq"]


def test_union_tags_leave_the_location_clean():
    detail = problems(TargetOverrides, {"generators": [{"type": "oneshot_qs"}, {"numq": 1}, {"type": "magic"}]},
                      ("body", "overrides"))
    assert [d["loc"] for d in detail] == [["body", "overrides", "generators", 0, "numq"],
                                          ["body", "overrides", "generators", 1, "type"],
                                          ["body", "overrides", "generators", 2, "type"]]
    assert "unknown generator type 'magic'; one of: oneshot_qs, hardcoded" in detail[2]["msg"]


def test_batch_item_keeps_its_index():
    detail = problems(TargetCreate, {"target_name": "t", "template": "default", "overrides": {"temperature": 3}},
                      ("body", "targets", 4))
    assert detail[0]["loc"] == ["body", "targets", 4, "overrides", "temperature"]
    assert detail[0]["msg"] == "must be at most 2, got 3"


def test_every_problem_at_once():
    detail = problems(TargetOverrides, {"temperature": "hot", "max_tokens": 0, "generators": [
        {"type": "hardcoded", "questions": ["a", 5]}]}, ())
    assert [d["loc"] for d in detail] == [["generators", 0, "questions", 1], ["temperature"], ["max_tokens"]]


def test_unknown_placeholder_is_refused_when_the_generator_is_parsed():
    detail = problems(CustomGenerator, {"type": "custom", "numq": 1, "template_content": "${numq} ${prompt_u} ${foo}"},
                      ())
    assert detail == [{"loc": ["template_content"], "type": "value_error.template",
                       "msg": "template uses unknown placeholder ${foo}; available: ${numq}, ${prompt_u}"}]
    # persona templates may use ${persona}; the others may not
    assert parse(PersonaGenerator, {"type": "persona", "numq": 1, "template_content": "${numq}${prompt_u}${persona}"})
    assert problems(CustomGenerator, {"type": "custom", "numq": 1, "template_content": "${numq}${prompt_u}${persona}"},
                    ())[0]["loc"] == ["template_content"]


def test_hardcoded_numq_is_checked_against_the_list():
    detail = problems(HardcodedGenerator, {"type": "hardcoded", "questions": ["a?"], "numq": 2}, ())
    assert detail[0]["loc"] == ["numq"] and "only 1 questions" in detail[0]["msg"]
    assert parse(HardcodedGenerator, {"type": "hardcoded", "questions": ["a?", "b?"]}).stored() == {
        "type": "hardcoded", "questions": ["a?", "b?"]}


def test_aliases_are_renamed_once():
    assert parse(TargetOverrides, {"u": "p1", "v": ""}).stored() == {"teacher_prompt": "p1", "student_prompt": ""}


def test_the_current_name_wins_over_its_old_alias():
    """Both names with different values: the document allows it, so it is not a 422; the current name wins."""
    assert parse(TargetOverrides, {"u": "p1", "teacher_prompt": "p2", "v": "s1", "student_prompt": ""}).stored() == {
        "teacher_prompt": "p2", "student_prompt": ""}


def test_same_path_with_two_contents_is_refused():
    text = "${numq}${prompt_u}"
    gens = [{"type": "custom", "numq": 1, "template_path": "a.txt", "template_content": text},
            {"type": "custom", "numq": 1, "template_path": "templates/a.txt", "template_content": text + "!"}]
    assert problems(TargetOverrides, {"generators": gens}, ())[0]["loc"] == ["generators", 1, "template_content"]


def test_a_model_is_required_for_llm_generators():
    config = parse(TargetConfig, {"generators": [{"type": "hardcoded", "questions": ["a?"]},
                                                 {"type": "oneshot_qs", "numq": 2}]}, ())
    [(loc, msg)] = config_problems(config)
    assert loc == ("generators", 1, "model") and "model is required" in msg
    config = parse(TargetConfig, {"model_name": "m", "generators": [{"type": "oneshot_qs", "numq": 2}]}, ())
    assert config_problems(config) == []


def test_messages_are_checked_but_not_rewritten():
    messages = [{"role": "assistant", "content": None, "tool_calls": [{"id": "x"}]}]
    assert parse(PromptCreate, {"prompt_name": "p", "messages": messages}).messages[0].model_extra == {
        "tool_calls": [{"id": "x"}]}
    assert parse(PromptCreate, {"prompt_name": "p", "messages": []}).messages == []  # an empty prompt is valid
    detail = problems(PromptCreate, {"prompt_name": "p", "messages": [{"role": "user", "content": 3}]})
    assert detail[0]["loc"] == ["body", "messages", 0, "content"]
