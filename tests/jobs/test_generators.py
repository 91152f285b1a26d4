"""Each generator on its own: determinism, chunking, de-duplication, never padding, concurrency."""
from __future__ import annotations

import itertools
import random

import pytest

from stimserver.jobs.generators import GENERATORS
from stimserver.jobs.kinds import JobFailed, JobRun, JobSource
from stimserver.jobs.stim import StimKind
from stimserver.store.datasets import Datasets

from .conftest import StubLLM, asked_count, seed_target


def planned(paths, gen, **config):
    record = seed_target(paths, [gen], **config)
    return StimKind().plan(JobSource(paths, "alice", "r1", "t1", record, Datasets(paths.root))).spec


def run_for(paths, tmp_path, spec, llm):
    job_dir = tmp_path / f"job-{next(_runs)}"  # a fresh job each time: an answer log would be reused
    job_dir.mkdir()
    return JobRun(1, job_dir, spec, 0, llm, Datasets(paths.root), paths.root)


_runs = itertools.count()


async def questions(paths, tmp_path, gen, llm=None, **config):
    """A generator's questions: its list, or its stream's batches joined (LLM generators)."""
    spec = planned(paths, gen, **config)
    g = spec["generators"][0]
    impl, run = GENERATORS[g["type"]], run_for(paths, tmp_path, spec, llm or StubLLM())
    if not impl.streams:
        return await impl.questions(g, run)
    return [q async for batch in impl.stream(g, run, 0) for q in batch]


async def test_hardcoded_takes_the_first_numq(paths, tmp_path):
    gen = {"type": "hardcoded", "questions": ["a", "b", "c"], "numq": 2}
    assert await questions(paths, tmp_path, gen) == ["a", "b"]


async def test_from_dataset_is_a_seeded_sample_without_repeats(paths, tmp_path):
    items = Datasets(paths.root).load("arithmetic")
    gen = {"type": "from_dataset", "dataset": "arithmetic", "numq": 50, "seed": 7}
    first = await questions(paths, tmp_path, gen)
    assert first == await questions(paths, tmp_path, gen)
    assert first == [items[i] for i in random.Random(7).sample(range(len(items)), 50)]
    assert len(set(first)) == 50
    other = await questions(paths, tmp_path, {**gen, "seed": 8})
    assert other != first


async def test_oneshot_asks_in_concurrent_chunks(paths, tmp_path):
    llm = StubLLM(delay=0.01)
    qs = await questions(paths, tmp_path, {"type": "oneshot_qs", "numq": 230, "model": "m", "temperature": 0.5},
                         llm, max_concurrency=2, extra_kwargs={"top_p": 0.9})
    assert len(qs) == len(set(qs)) == 230
    assert sorted(asked_count(p) for p in llm.prompts) == [30, 50, 50, 50, 50]
    assert llm.max_in_flight == 5  # the job's completer caps this at max_concurrency (test_runner)
    assert llm.kwargs[0] == {"model": "m", "temperature": 0.5, "max_tokens": None, "extra_kwargs": {"top_p": 0.9}}
    assert "You are a patient maths tutor" in llm.prompts[0]  # ${prompt_u}


async def test_duplicates_are_dropped_and_asked_for_again(paths, tmp_path):
    answers = iter(["Same?\nSame?\nOther?", "Third?"])
    llm = StubLLM(lambda prompt: next(answers))
    qs = await questions(paths, tmp_path, {"type": "oneshot_qs", "numq": 3, "model": "m"}, llm)
    assert qs == ["Same?", "Other?", "Third?"]
    assert asked_count(llm.prompts[1]) == 1 and "Same?" in llm.prompts[1]


async def test_never_pads_when_the_model_falls_short(paths, tmp_path):
    llm = StubLLM(lambda prompt: "1. The only question?")
    # One planned request, then three top-up rounds asking for the 3 missing: never a repeat.
    with pytest.raises(JobFailed, match=r"only 1 distinct questions of the 4 asked for \(4 requests\)"):
        await questions(paths, tmp_path, {"type": "oneshot_qs", "numq": 4, "model": "m"}, llm)
    assert [asked_count(p) for p in llm.prompts] == [4, 3, 3, 3]


async def test_chunks_that_repeat_each_other_are_topped_up_then_fail(paths, tmp_path):
    llm = StubLLM(lambda prompt: "\n".join(f"Q{i}?" for i in range(asked_count(prompt))))
    with pytest.raises(JobFailed, match=r"only 50 distinct questions of the 60 asked for \(5 requests\)"):
        await questions(paths, tmp_path, {"type": "oneshot_qs", "numq": 60, "model": "m"}, llm)


async def test_custom_uses_its_template(paths, tmp_path):
    llm = StubLLM()
    gen = {"type": "custom", "numq": 2, "model": "m",
           "template_content": "Riddles please, exactly ${numq}, for ${prompt_u}"}
    assert len(await questions(paths, tmp_path, gen, llm)) == 2
    assert llm.prompts[0].startswith("Riddles please, exactly 2, for You are a patient maths tutor")


async def test_persona_writes_in_the_voice_of_seeded_personas(paths, tmp_path):
    llm = StubLLM()
    gen = {"type": "persona", "numq": 12, "model": "m", "seed": 3}
    qs = await questions(paths, tmp_path, gen, llm)
    assert len(set(qs)) == 12
    assert sorted(asked_count(p) for p in llm.prompts) == [2, 5, 5]
    personas = [p.split("<persona>\n", 1)[1].split("\n</persona>", 1)[0] for p in llm.prompts]
    assert len(set(personas)) == 3
    again = StubLLM()
    await questions(paths, tmp_path, gen, again)
    assert sorted(personas) == sorted(p.split("<persona>\n", 1)[1].split("\n</persona>", 1)[0]
                                      for p in again.prompts)


async def test_persona_list_can_be_replaced_in_the_data_directory(paths, tmp_path):
    paths.root.mkdir(parents=True, exist_ok=True)
    (paths.root / "personas.json").write_text('["a pirate who loves maths"]')
    llm = StubLLM()
    await questions(paths, tmp_path, {"type": "persona", "numq": 7, "model": "m"}, llm)
    assert all("a pirate who loves maths" in p for p in llm.prompts) and len(llm.prompts) == 2
