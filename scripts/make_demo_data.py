#!/usr/bin/env python3
"""Rebuild the demo data in data/users/demo through the real pipeline.

    python scripts/make_demo_data.py

Starts ``stimserver serve`` on a scratch copy of data/ (datasets included), and with
the official aibread client creates user ``demo``'s repo ``demo``, a teacher and a
student prompt, and two targets — ``geography`` (hardcoded questions) and
``arithmetic`` (from_dataset over the shipped arithmetic set) — runs their stim jobs to
completion, then runs ``geography``'s rollout (two trajectories per stimulus) against a
local fake OpenAI-compatible provider (tests/llm/fake_providers.py, in this process) that
plays the model ``demo-tutor``: it answers each question from the short table below. The
result is copied into data/users/demo. Nothing here is hand-written output: the lines are
what the server's own job runner produced.
"""
from __future__ import annotations

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
sys.path.insert(0, str(ROOT))

from tests.llm.fake_providers import FakeOpenAI, ProviderThread, Reply  # noqa: E402

MODEL = "demo-tutor"
TRAJECTORIES = 2

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


# What the fake "demo-tutor" answers, question by question (GEOGRAPHY's order).
FACTS = [
    "Canberra", "The Nile", "The Gobi Desert", "Canada", "Mount Kilimanjaro", "The Indian Ocean", "Ottawa",
    "The Strait of Gibraltar", "The Amazon", "Morocco", "Vatican City", "The Pyrenees", "Nairobi", "The Dead Sea",
    "Sicily", "Canada and the United States", "Lima", "The Rio Grande", "Lake Baikal", "Nigeria", "Oslo",
    "The Atacama Desert", "Brazil", "Istanbul", "Hanoi", "Mount Vesuvius", "The Volga", "France", "Wellington",
    "The Suez Canal", "Angel Falls", "Turkey", "Buenos Aires", "Sri Lanka", "Lake Victoria", "Denali",
    "Cairo", "The Tigris", "Australia", "Budapest",
]
PHRASINGS = ["{fact}.", "The answer is {fact}: a well-known fact of world geography."]


def tutor(fake: FakeOpenAI):
    """The fake model: the fact for the question, phrased differently for each trajectory."""
    asked: dict[str, int] = {}

    def answer(body: dict) -> Reply:
        question = body["messages"][-1]["content"]
        n = asked[question] = asked.get(question, -1) + 1
        fact = FACTS[GEOGRAPHY.index(question)] if question in GEOGRAPHY else "I do not know"
        return Reply(PHRASINGS[n % len(PHRASINGS)].format(fact=fact))

    return answer


def wait_done(get, target: str, me: dict):
    for _ in range(600):
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


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="stimserver-demo-"))
    shutil.copytree(DATA / "datasets", scratch / "datasets")
    provider = ProviderThread(FakeOpenAI(api_key=None))
    fake = provider.start()
    fake.default = tutor(fake)
    key = "demo-build-" + secrets.token_hex(16)
    port = free_port()
    env = {**os.environ, "STIMSERVER_MASTER_KEY": key, "OPENAI_BASE_URL": f"{fake.url}/v1"}
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
        client.repo.create(repo_name="demo", **me)
        client.prompts.create("demo", prompt_name="teacher", messages=TEACHER, **me)
        client.prompts.create("demo", prompt_name="student", messages=STUDENT, **me)
        common = {"teacher_prompt": "teacher", "student_prompt": "student"}
        client.targets.create("demo", target_name="geography", template="default", **me, overrides={
            **common, "generators": [{"type": "hardcoded", "questions": GEOGRAPHY, "numq": len(GEOGRAPHY)}],
            # one request at a time: each stimulus's trajectories are asked in order, so a rebuild is identical
            "model_name": MODEL, "num_traj_per_stimulus": TRAJECTORIES, "max_concurrency": 1})
        client.targets.create("demo", target_name="arithmetic", template="default", **me, overrides={
            **common, "generators": [{"type": "from_dataset", "dataset": "arithmetic", "numq": 150, "seed": 7,
                                      "rollout_with_conditioned": True}]})
        for target in ("geography", "arithmetic"):
            client.targets.stim.run(target, repo_name="demo", poll=False, **me)
            print(f"{target}: {wait_done(client.targets.stim.get, target, me).lines} lines")
        client.targets.rollout.run("geography", repo_name="demo", poll=False, **me)
        print(f"geography rollout: {wait_done(client.targets.rollout.get, 'geography', me).lines} trajectories")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
        provider.stop()
    built = scratch / "users" / "demo"
    for leftover in built.rglob("*.lock"):
        leftover.unlink()
    shutil.rmtree(DATA / "users" / "demo", ignore_errors=True)
    shutil.copytree(built, DATA / "users" / "demo")
    shutil.rmtree(scratch)
    print(f"demo data written to {DATA / 'users' / 'demo'}")


if __name__ == "__main__":
    main()
