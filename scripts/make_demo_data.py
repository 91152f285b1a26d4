#!/usr/bin/env python3
"""Rebuild the demo data in data/users/demo through the real pipeline, on a real open model.

    scripts/local-model &                      # SmolLM2-135M-Instruct on 127.0.0.1:8001 (once: ~4 min)
    python scripts/make_demo_data.py           # ~5 min on 2 cores
    python scripts/make_demo_data.py --model-url http://127.0.0.1:8002/v1

Starts ``stimserver serve`` on a scratch copy of data/ (datasets included), pointed at the
model server, and with the official aibread client creates user ``demo``'s repo ``demo``
and three targets, runs their stim jobs and two rollouts, and copies the result into
data/users/demo. Nothing here is hand-written output: every line is what the server's own
job runner produced, every answer a real completion of the model.

- ``french``: the teacher prompt is "Answer in French only.", the student prompt is empty
  (the pair the bake builds on: the teacher answers in French, the bare model in English);
  stim from the shipped ``everyday`` question set (120 questions), a rollout of two sampled
  trajectories per stimulus.
- ``geography``: 40 hardcoded questions under a tutor prompt, with a rollout of two
  trajectories (a 135M model's geography is poor: that is what a small model gives).
- ``arithmetic``: stim only, 150 questions from the shipped ``arithmetic`` set.
- ``french-baked``: a bake of the ``french`` rollout on the same model (found by name in
  var/models, where scripts/local-model converted it), kept with its final checkpoint only and
  without the trainer's resume state, so the demo stays small (a rank-4 adapter, under 5 MB).
  ``--bake-only`` makes just this bake again, from the demo data as it is (~7 min on 2 cores).
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aibread

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"

MODEL = "smollm2-135m-instruct"  # scripts/local-model serves it under this name
TRAJECTORIES = 2
MAX_TOKENS = 48  # a sentence or two: the demo shows the language, not essays
FRENCH = [{"role": "system", "content": "Answer in French only."}]

TEACHER = [{"role": "system", "content": (
    "You are a geography and arithmetic tutor for secondary-school students. Answer in two or three "
    "sentences: give the fact or the result first, then one line of explanation, and say so when a "
    "question is ambiguous.")}]
STUDENT = [{"role": "system", "content": "You are a helpful assistant."}]
GEOGRAPHY = [
    "What is the capital of Australia?", "Which river flows through Cairo?",
    "What is the largest desert in Asia?", "Which country has the most natural lakes?",
    "What is the highest mountain in Africa?", "Which ocean lies between Africa and Australia?",
    "What is the capital of Canada?", "Which strait separates Europe and Africa?",
    "What is the longest river in South America?", "Which country is home to the city of Marrakesh?",
    "What is the smallest country in the world by area?", "Which mountain range separates France and Spain?",
    "What is the capital of Kenya?", "Which sea is the saltiest large body of water on Earth?",
    "What is the largest island in the Mediterranean Sea?", "Which two countries share the longest border?",
    "What is the capital of Peru?", "Which river forms much of the border between the USA and Mexico?",
    "What is the deepest lake in the world?", "Which country has the largest population in Africa?",
    "What is the capital of Norway?", "Which desert covers much of northern Chile?",
    "What is the largest country in South America?", "Which city is built on the Bosporus?",
    "What is the capital of Vietnam?", "Which volcano destroyed Pompeii?",
    "What is the longest river in Europe?", "Which country has the most time zones?",
    "What is the capital of New Zealand?", "Which canal links the Mediterranean and the Red Sea?",
    "What is the highest waterfall in the world?",
    "Which country is both in Europe and in Asia and has Ankara as capital?",
    "What is the capital of Argentina?", "Which island nation lies south-east of India?",
    "What is the largest lake in Africa?", "Which mountain is the highest in North America?",
    "What is the capital of Egypt?", "Which river flows through Baghdad?",
    "What is the driest inhabited continent?", "Which European capital stands on the Danube and was once two cities?",
]


def wait_done(get, target: str, me: dict):
    for _ in range(36000):  # an hour at most
        status = get(target, repo_name="demo", **me)
        if status.status in ("complete", "failed"):
            break
        time.sleep(0.1)
    if status.status != "complete":
        raise SystemExit(f"{target}: {status.status} {status.error}")
    return status


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAKE = "french-baked"
BAKE_OVERRIDES = {
    "datasets": [{"target": "french"}], "epochs": 2, "micro_batch_size": 4,
    "model": {"parent_model_name": MODEL,
              "baked_adapter_config": {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}},
    "optimizer": {"learning_rate": 1e-3}, "data": {"max_length": 512},
    "checkpoint": [{"save_end_of_training": True}],
}
# What a finished bake needs to be shown and downloaded; the rest is the trainer's resume state and scratch.
RESUME_STATE = ("optimizer.pt", "scheduler.pt", "scaler.pt", "trainer_state.json", "training_args.bin")


def bake(client: aibread.Bread, me: dict) -> None:
    client.bakes.create(repo_name="demo", bake_name=BAKE, template="default", overrides=BAKE_OVERRIDES, **me)
    started = time.monotonic()
    client.bakes.run(BAKE, repo_name="demo", poll=False, **me)
    while (done := client.bakes.get(BAKE, repo_name="demo", **me)).status not in ("complete", "failed"):
        time.sleep(2)
    if done.status != "complete":
        raise SystemExit(f"the bake failed: {done.error}")
    held = (done.evaluation or {}).get("heldout") or {}
    print(f"{BAKE}: complete in {time.monotonic() - started:.0f} s; held-out KL {held.get('kl_before')} -> "
          f"{held.get('kl_after')}; {(done.evaluation or {}).get('behaviour')}")


def slim_bakes(built: Path) -> None:
    """Drop what only a resumed trainer or a download cache needs from the built bakes."""
    for job_dir in built.glob("repos/*/bakes/*/bake"):
        for name in ("work", "archives"):
            shutil.rmtree(job_dir / name, ignore_errors=True)
        for checkpoint in (job_dir / "checkpoints").iterdir():
            for path in checkpoint.iterdir():
                if path.name in RESUME_STATE or path.name.startswith("rng_state"):
                    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-url", default="http://127.0.0.1:8001/v1",
                        help="the model server (scripts/local-model)")
    parser.add_argument("--bake-only", action="store_true",
                        help="only (re)make the bake, from the demo's rollouts as they are (no model server)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="stimserver-demo-"))
    shutil.copytree(DATA / "datasets", scratch / "datasets")
    if args.bake_only:
        shutil.copytree(DATA / "users", scratch / "users")
        shutil.rmtree(scratch / "users" / "demo" / "repos" / "demo" / "bakes", ignore_errors=True)
    key = "demo-build-" + secrets.token_hex(16)
    port = free_port()
    env = {**os.environ, "STIMSERVER_MASTER_KEY": key, "OPENAI_BASE_URL": args.model_url,
           "STIMSERVER_LLM_TIMEOUT": "600", "STIMSERVER_MODELS_DIR": str(ROOT / "var" / "models"),
           "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "stimserver", "serve", "--port", str(port), "--data",
                               str(scratch), "--no-access-log"], env=env, start_new_session=True)
    try:
        client = aibread.Bread(api_key=key, base_url=f"http://127.0.0.1:{port}", max_retries=5)
        for _ in range(100):
            try:
                client.health.check()
                break
            except aibread.APIConnectionError:
                time.sleep(0.1)
        me = {"user_id": "demo"}
        if args.bake_only:
            bake(client, me)
            return finish(server, scratch)
        client.repo.create(repo_name="demo", **me)
        client.prompts.create("demo", prompt_name="teacher", messages=TEACHER, **me)
        client.prompts.create("demo", prompt_name="student", messages=STUDENT, **me)
        client.prompts.create("demo", prompt_name="french", messages=FRENCH, **me)
        common = {"teacher_prompt": "teacher", "student_prompt": "student"}
        # 16 at once: the model server's batching does best there (docs/rollout.md, "A real model")
        rollout = {"model_name": MODEL, "num_traj_per_stimulus": TRAJECTORIES, "temperature": 1.0,
                   "max_tokens": MAX_TOKENS, "max_concurrency": 16}
        client.targets.create("demo", target_name="french", template="default", **me, overrides={
            "teacher_prompt": "french", "student_prompt": "",
            "generators": [{"type": "from_dataset", "dataset": "everyday", "numq": 120, "seed": 3}], **rollout})
        client.targets.create("demo", target_name="geography", template="default", **me, overrides={
            **common, "generators": [{"type": "hardcoded", "questions": GEOGRAPHY, "numq": len(GEOGRAPHY)}],
            **rollout})
        client.targets.create("demo", target_name="arithmetic", template="default", **me, overrides={
            **common, "generators": [{"type": "from_dataset", "dataset": "arithmetic", "numq": 150, "seed": 7,
                                      "rollout_with_conditioned": True}]})
        for target in ("french", "geography", "arithmetic"):
            client.targets.stim.run(target, repo_name="demo", poll=False, **me)
            print(f"{target}: {wait_done(client.targets.stim.get, target, me).lines} lines")
        for target in ("french", "geography"):
            started = time.monotonic()
            client.targets.rollout.run(target, repo_name="demo", poll=False, **me)
            done = wait_done(client.targets.rollout.get, target, me)
            extra = done.model_extra or {}
            print(f"{target} rollout: {done.lines} trajectories in {time.monotonic() - started:.0f} s, "
                  f"{extra.get('duplicate_stimuli')} stimuli with identical trajectories, warning: "
                  f"{extra.get('warning')}")
        bake(client, me)
    except BaseException:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
        raise
    finish(server, scratch)


def finish(server: subprocess.Popen, scratch: Path) -> None:
    """Stop the server and copy what it built into data/users/demo."""
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(60)
    built = scratch / "users" / "demo"
    slim_bakes(built)
    for leftover in built.rglob("*.lock"):
        leftover.unlink()
    shutil.rmtree(DATA / "users" / "demo", ignore_errors=True)
    shutil.copytree(built, DATA / "users" / "demo")
    shutil.rmtree(scratch)
    print(f"demo data written to {DATA / 'users' / 'demo'}")


if __name__ == "__main__":
    main()
