"""A bake on the real packaged model, the whole way, through the official client.

stim and rollout of a small French-teacher target on SmolLM2-135M-Instruct (served by
scripts/local-model), then a bake of that rollout on the same model, found by name in
var/models (where scripts/local-model converted it), then its checkpoint downloaded by its
signed link, loaded with PEFT onto the base model and asked a question. Small on purpose
(a few questions, one epoch): minutes, not the benchmark (scripts/bench/bench_bake.py).
"""
from __future__ import annotations

import io
import tarfile
import time

import httpx

from tests.serverproc import ServerProcess, free_port

from .conftest import MODEL, ROOT
from .test_pipeline import setup_repo, target, until

MODELS = ROOT / "var" / "models"


def test_a_bake_of_a_real_rollout_loads_with_peft(tmp_path, proxy) -> None:
    env = {"OPENAI_BASE_URL": proxy.url, "STIMSERVER_LLM_TIMEOUT": "300", "STIMSERVER_MODELS_DIR": str(MODELS),
           "STIMSERVER_BAKE_EVAL_SAMPLES": "4"}
    server = ServerProcess(tmp_path / "data", free_port(), tmp_path, env=env).start()
    try:
        with setup_repo(server) as client:
            me = {"user_id": "alice"}
            target(client, "fr", numq=16, k=2, max_tokens=24, concurrency=16)
            for kind in (client.targets.stim, client.targets.rollout):
                kind.run("fr", repo_name="e2e", poll=False, **me)
                until(lambda kind=kind: kind.get("fr", repo_name="e2e", **me).status == "complete", "stim and rollout")
            client.bakes.create(repo_name="e2e", bake_name="fr-baked", template="default", **me, overrides={
                "datasets": [{"target": "fr"}], "epochs": 1, "micro_batch_size": 4,
                "model": {"parent_model_name": MODEL, "baked_adapter_config": {"r": 4, "lora_alpha": 8}},
                "optimizer": {"learning_rate": 1e-3}, "data": {"train_eval_split": [0.75, 0.25]}})
            started = time.monotonic()
            client.bakes.run("fr-baked", repo_name="e2e", poll=False, **me)
            done = until(lambda: (s := client.bakes.get("fr-baked", repo_name="e2e", **me)).status
                         in ("complete", "failed") and s, "the bake", timeout=900)
            took = time.monotonic() - started
            assert done.status == "complete", done.error
            rows = client.bakes.get_metrics("fr-baked", repo_name="e2e", **me)
            link = client.bakes.download("fr-baked", repo_name="e2e", **me)
            archive = httpx.get(link.url)
    finally:
        server.terminate()
    print(f"bake of {done.data['datasets'][0]['used']} trajectories: {took:.0f} s; held-out KL "
          f"{done.evaluation['heldout']['kl_before']:.3f} -> {done.evaluation['heldout']['kl_after']:.3f}")
    assert [r["iter"] for r in rows if r["type"] == "train"] == list(range(1, done.total_steps + 1))
    assert done.evaluation["heldout"]["kl_after"] < done.evaluation["heldout"]["kl_before"]
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        tar.extractall(tmp_path / "adapter", filter="data")
    (folder,) = (tmp_path / "adapter").iterdir()
    assert MODEL in (folder / "README.md").read_text()

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(MODELS / MODEL)
    baked = PeftModel.from_pretrained(base, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Describe a cat."}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = baked.generate(**ids, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    print("baked answer:", answer)
    assert answer.strip()
