"""The stim kind: planning a target (400-worthy problems) and the lines it produces."""
from __future__ import annotations

import pytest

from stimserver.jobs.kinds import ConfigProblem, JobFailed, JobRun, JobSource
from stimserver.jobs.stim import StimKind, prompt_text
from stimserver.store.datasets import Datasets

from .conftest import STUDENT, TEACHER, StubLLM, hardcoded, seed_target


def source(paths, record, datasets=None):
    return JobSource(paths, "alice", "r1", "t1", record, datasets or Datasets(paths.root))


def plan(paths, generators, **kw):
    return StimKind().plan(source(paths, seed_target(paths, generators, **kw)))


async def produce(paths, tmp_path, spec, start=0, llm=None):
    run = JobRun(job_id=1, job_dir=tmp_path / "job", spec=spec, start=start, llm=llm or StubLLM(),
                 datasets=Datasets(paths.root), data_root=paths.root)
    run.job_dir.mkdir(exist_ok=True)
    return [line async for line in StimKind().produce(run)]


async def test_lines_follow_the_documented_shape(paths, tmp_path):
    p = plan(paths, [hardcoded(2, "A"), hardcoded(3, "B", rollout_with_conditioned=True)])
    assert p.expected_lines == 5
    lines = await produce(paths, tmp_path, p.spec)
    assert [line["stimulus_id"] for line in lines] == [0, 1, 2, 3, 4]
    assert [line["question"] for line in lines] == ["A0?", "A1?", "B0?", "B1?", "B2?"]
    first = lines[0]
    assert first["type"] == "hardcoded"
    assert first["unconditioned_stimulus"] == {"messages": [*TEACHER, {"role": "user", "content": "A0?"}]}
    assert first["conditioned_stimulus"] == {"messages": [*STUDENT, {"role": "user", "content": "A0?"}]}
    assert "trajectory_override_stimulus" not in first
    assert lines[2]["trajectory_override_stimulus"] == lines[2]["conditioned_stimulus"]


async def test_resume_starts_mid_generator_with_the_same_lines(paths, tmp_path):
    p = plan(paths, [hardcoded(4, "A"), hardcoded(4, "B")])
    whole = await produce(paths, tmp_path, p.spec)
    assert await produce(paths, tmp_path, p.spec, start=6) == whole[6:]
    assert await produce(paths, tmp_path, p.spec, start=8) == []


async def test_empty_student_prompt_and_tools(paths, tmp_path):
    tools = [{"type": "function", "function": {"name": "calc", "parameters": {}}}]
    p = plan(paths, [hardcoded(1)], student="", tools=tools)
    line = (await produce(paths, tmp_path, p.spec))[0]
    assert line["conditioned_stimulus"] == {"messages": [{"role": "user", "content": "Q0?"}]}
    assert line["unconditioned_stimulus"]["tools"] == tools


async def test_llm_generators_are_not_asked_again_for_committed_lines(paths, tmp_path):
    llm = StubLLM()
    p = plan(paths, [{"type": "oneshot_qs", "numq": 3, "model": "m"}, hardcoded(2)])
    whole = await produce(paths, tmp_path, p.spec, llm=llm)
    assert len(llm.prompts) == 1
    again = StubLLM()
    assert await produce(paths, tmp_path, p.spec, start=1, llm=again) == whole[1:]  # from the checkpoint
    assert await produce(paths, tmp_path, p.spec, start=3, llm=again) == whole[3:]
    assert again.prompts == []


MISSING = {
    "no-generators": ({"generators": []}, "generators"),
    "no-teacher": ({"teacher": None}, "teacher_prompt"),
    "no-student": ({"student": None}, "student_prompt"),
}


@pytest.mark.parametrize("change, named", MISSING.values(), ids=MISSING.keys())
def test_missing_stim_configuration(paths, change, named):
    gens = change.pop("generators", [hardcoded(1)])
    with pytest.raises(ConfigProblem, match="Target must have generators and teacher prompt configured") as e:
        plan(paths, gens, **change)
    assert named in str(e.value)


def test_unknown_prompt_is_named(paths):
    record = seed_target(paths, [hardcoded(1)])
    record["config"]["teacher_prompt"] = "ghost"
    with pytest.raises(ConfigProblem, match="teacher_prompt 'ghost' does not exist"):
        StimKind().plan(source(paths, record))


# A stored generator is parsed by schemas.generators at plan time: the messages are those of a 422 at creation.
BAD_GENERATORS = {
    "unknown-type": ({"type": "magic", "numq": 1}, "type: unknown generator type 'magic'"),
    "hardcoded-pad": ({"type": "hardcoded", "questions": ["a?"], "numq": 3}, "never repeats"),
    "hardcoded-empty": ({"type": "hardcoded", "questions": []}, "questions: must contain at least 1"),
    "numq-missing": ({"type": "oneshot_qs", "model": "m"}, "numq: field required"),
    "numq-zero": ({"type": "from_dataset", "dataset": "arithmetic", "numq": 0}, "numq: must be at least 1"),
    "numq-text": ({"type": "from_dataset", "dataset": "arithmetic", "numq": "5"}, "numq: must be an integer"),
    "no-model": ({"type": "oneshot_qs", "numq": 2}, "model is required"),
    "hot": ({"type": "oneshot_qs", "numq": 2, "model": "m", "temperature": 3}, "temperature"),
    "bad-template": ({"type": "oneshot_qs", "numq": 2, "model": "m", "template_content": "no placeholders"},
                     "${numq}"),
    "custom-without-template": ({"type": "custom", "numq": 2, "model": "m"}, "template_path or template_content"),
    "missing-template-file": ({"type": "custom", "numq": 2, "model": "m", "template_path": "templates/x.txt"},
                              "no templates/x.txt"),
    "unknown-dataset": ({"type": "from_dataset", "dataset": "nope", "numq": 2}, "unknown dataset 'nope'"),
    "dataset-too-small": ({"type": "from_dataset", "dataset": "arithmetic", "numq": 201}, "only 200"),
}


@pytest.mark.parametrize("gen, message", BAD_GENERATORS.values(), ids=BAD_GENERATORS.keys())
def test_bad_generators_are_named(paths, gen, message):
    with pytest.raises(ConfigProblem) as e:
        plan(paths, [hardcoded(1), gen])
    assert "generators[1]" in str(e.value) and message in str(e.value)


def test_template_path_is_read_from_the_repo(paths):
    folder = paths.repo("alice", "r1") / "templates"
    seed_target(paths, [hardcoded(1)])
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("Write exactly ${numq} riddles for: ${prompt_u}")
    p = plan(paths, [{"type": "custom", "numq": 2, "model": "m", "template_path": "templates/mine.txt"}])
    assert p.spec["generators"][0]["template"].startswith("Write exactly ${numq} riddles")


def test_model_falls_back_to_the_targets_model_name(paths):
    p = plan(paths, [{"type": "oneshot_qs", "numq": 2}], model_name="llama3", temperature=0.3, max_tokens=99)
    gen = p.spec["generators"][0]
    assert (gen["model"], gen["temperature"], gen["max_tokens"]) == ("llama3", 0.3, 99)


async def test_generator_failures_name_the_generator(paths, tmp_path):
    p = plan(paths, [hardcoded(1), {"type": "oneshot_qs", "numq": 2, "model": "m"}])
    with pytest.raises(JobFailed, match=r"generators\[1\] \(oneshot_qs\)"):
        await produce(paths, tmp_path, p.spec, llm=StubLLM(lambda prompt: "1. Only one?"))


@pytest.mark.parametrize("messages, text", [
    ([{"role": "system", "content": "Be kind."}], "Be kind."),
    ([{"role": "system", "content": "A"}, {"role": "user", "content": [{"type": "text", "text": "B"}]}],
     "system: A\n\nuser: B"),
    ([{"role": "assistant", "content": None, "tool_calls": []}, {"role": "system", "content": "C"}], "C"),
], ids=["one", "parts", "skips-empty"])
def test_prompt_text(messages, text):
    assert prompt_text(messages) == text
