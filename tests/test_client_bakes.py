"""A bake end to end through the official client, on a tiny random model: create → run → poll →
metrics → download (a signed link, no key) → load the adapter with PEFT onto the base → generate.

The server starts a real trainer process (``python -m stimserver.train``); only the model is
small. The packaged SmolLM2 runs the same path in tests/e2e/.
"""
from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from typing import Any

import aibread
import httpx
import orjson
import pytest

from stimserver.config import Settings
from tests.conftest import MASTER_KEY, import_jsonl
from tests.train import tiny

POLL_TIMEOUT = 180.0


def rollout_lines(stimuli: int = 10, k: int = 2) -> list[dict[str, Any]]:
    """A rollout of the French teacher: its lines as the rollout job writes them."""
    out = []
    for s in range(stimuli):
        question = tiny.QUESTIONS[s % len(tiny.QUESTIONS)]
        for t in range(k):
            q = {"role": "user", "content": question}
            out.append({"stimulus_id": s, "trajectory_id": t, "question": question,
                        "unconditioned_stimulus": {"messages": [{"role": "system", "content": "Answer in French only."},
                                                                q]},
                        "conditioned_stimulus": {"messages": [q]},
                        "response": {"role": "assistant", "content": tiny.ANSWERS[(s + t) % len(tiny.ANSWERS)],
                                     "finish_reason": "stop"},
                        "error": None})
    return out


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.build(data_dir=tmp_path / "data", master_key=MASTER_KEY, access_log=False, bake_threads=1,
                          bake_eval_samples=2)


@pytest.fixture
def alice(bread_server, user_key, records, tmp_path) -> aibread.Bread:
    key = user_key("alice")["Authorization"].split(" ", 1)[1]
    client = bread_server.client(key, _strict_response_validation=True)
    client.repo.create(repo_name="r1", base_model=str(tiny.model_dir()))
    src = tmp_path / "rollout.jsonl"
    src.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in rollout_lines()))
    import_jsonl(records, "alice", "r1", "french", src, kind="rollout")
    return client


OVERRIDES = {"datasets": [{"target": "french"}], "epochs": 2, "micro_batch_size": 4,
             "model": {"baked_adapter_config": {"r": 4, "lora_alpha": 8}},
             "optimizer": {"learning_rate": 0.01}, "data": {"max_length": 128, "train_eval_split": [0.8, 0.2]},
             "checkpoint": [{"save_every_n_steps": 2, "save_end_of_training": True}]}


def wait_done(client: aibread.Bread, bake: str) -> Any:
    deadline = time.monotonic() + POLL_TIMEOUT
    while True:
        status = client.bakes.get(bake, repo_name="r1")
        if status.status in ("complete", "failed") or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def test_a_bake_through_the_official_client(alice: aibread.Bread, tmp_path: Path) -> None:
    created = alice.bakes.with_raw_response.create(repo_name="r1", bake_name="b1", template="default",
                                                   overrides=OVERRIDES)
    assert created.status_code == 201 and created.parse().status == "not_started"
    started = alice.bakes.run("b1", repo_name="r1", poll=False)
    assert started.status in ("pending", "running", "complete")
    assert alice.bakes.run("b1", repo_name="r1", poll=False).job_id == started.job_id  # idempotent
    done = wait_done(alice, "b1")
    assert done.status == "complete", done.error
    assert done.progress_percent == 100.0 and done.loss is not None and "final_loss" in done.loss
    steps = [int(name.rsplit("/", 1)[1]) for name in done.api_model_name]
    assert steps == sorted(steps, reverse=True) and done.api_model_name[0] == f"alice/r1/b1/{steps[0]}"

    metrics = alice.bakes.get_metrics("b1", repo_name="r1")
    train = [row for row in metrics if row["type"] == "train"]
    assert [row["iter"] for row in train] == list(range(1, steps[0] + 1))  # one row per step, none twice
    assert all(row["tokens"] > 0 and row["step_time"] > 0 for row in train)
    assert {"epoch", "loss", "lr"} <= set(train[0])
    assert any(row["type"] == "eval" for row in metrics)

    link = alice.bakes.download("b1", repo_name="r1", checkpoint=steps[0], expires_in=60)
    assert (link.bake_name, link.checkpoint, link.expires_in) == ("b1", steps[0], 60)
    archive = httpx.get(link.url)  # no key: the link is the permission
    assert archive.status_code == 200 and archive.headers["content-type"] == "application/gzip"
    out = tmp_path / "adapter"
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        tar.extractall(out, filter="data")
    (folder,) = out.iterdir()
    names = {p.name for p in folder.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "tokenizer.json"} <= names
    assert not names & {"optimizer.pt", "scheduler.pt", "trainer_state.json"}
    card = (folder / "README.md").read_text()
    assert str(tiny.model_dir()) in card and "french" in card

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny.model_dir())
    baked = PeftModel.from_pretrained(base, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Describe a cat."}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        answer = baked.generate(**ids, max_new_tokens=5, do_sample=False)
    assert answer.shape[1] == ids["input_ids"].shape[1] + 5

    graph = alice.recipes.get_dependency_graph("b1", repo_name="r1")
    assert ["bake", "b1", "target", "french"] in graph.edges
    assert alice.repo.get_tree("r1").bakes["b1"].status == "complete"


def test_a_bake_that_cannot_run_says_why(alice: aibread.Bread) -> None:
    alice.bakes.create(repo_name="r1", bake_name="nomodel", template="default",
                       overrides={**OVERRIDES, "model": {"parent_model_name": "org/not-here"}})
    with pytest.raises(aibread.BadRequestError) as caught:
        alice.bakes.run("nomodel", repo_name="r1", poll=False)
    assert "'org/not-here' was not found" in caught.value.body["message"]
    alice.bakes.create(repo_name="r1", bake_name="nodata", template="default", overrides={})
    with pytest.raises(aibread.BadRequestError) as caught:
        alice.bakes.run("nodata", repo_name="r1", poll=False)
    assert "names no datasets" in caught.value.body["message"]


async def test_the_async_client_reads_a_bake(alice: aibread.Bread, bread_server, user_key) -> None:
    alice.bakes.create(repo_name="r1", bake_name="b2", template="default",
                       overrides={**OVERRIDES, "epochs": 1, "checkpoint": [{"save_end_of_training": True}]})
    assert alice.bakes.run("b2", repo_name="r1", poll=False).status in ("pending", "running", "complete")
    key = user_key("alice")["Authorization"].split(" ", 1)[1]
    async with aibread.AsyncBread(api_key=key, base_url=bread_server.base_url,
                                  _strict_response_validation=True) as client:
        deadline = time.monotonic() + POLL_TIMEOUT
        while (status := await client.bakes.get("b2", repo_name="r1")).status not in ("complete", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert status.status == "complete", status.error
        assert (await client.bakes.list("r1")) is not None
        assert [row["iter"] for row in await client.bakes.get_metrics("b2", repo_name="r1") if row["type"] == "train"]
        link = await client.bakes.download("b2", repo_name="r1")
    assert link.checkpoint == int(status.api_model_name[0].rsplit("/", 1)[1])
