"""The world the official client's generated cases expect: their literal names, made real.

The generated cases (aibread's sdist, tests/api_resources/) call the API with fixed names:
repo ``repo_name``, prompt ``prompt_name``, target ``target_name``, bake ``bake_name`` made
from the bake ``template``. The bake trains on ``target_name`` and on ``target`` (another
literal of the bake cases), whose teacher prompt is ``prompt_name``, so the recipe cases
see a whole lineage: bake → targets → prompt. The plain cases act as the master key's own user; the
``*_with_all_params`` cases send ``X-User-Id: X-User-Id`` (and ``user_id=user_id``; the header
wins, docs/auth.md), so that user gets the same world. Each user's records are the ones its
cases create, so a create of an existing name is the same request again (200):

* the records through the API itself (the official client, as any user would make them);
* the target's stim and rollout outputs imported complete (``store.importer``, as
  ``stimserver import`` does), and the bake's job folder written as a finished trainer
  leaves it (``store.bakefiles``): ``job.json`` complete, metrics rows, a trainer plan, an
  evaluation and two published checkpoints (steps 0 and 2: a case downloads checkpoint 0),
  each with a small LoRA adapter.

``ensure`` is cheap when nothing is missing (a few ``stat`` calls) and restores what a
case deleted (a bake, a target and its jobs), so each case meets the same world. This
module never imports the repo's ``tests`` package: it also runs inside the generated
suite's own pytest, where ``tests`` is the SDK's.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aibread
import orjson
from aibread import omit

from stimserver.schemas.targets import DEFAULT_BASE_MODEL, DEFAULT_TARGET_CONFIG
from stimserver.store import atomic, bakefiles, importer
from stimserver.store import jobrecords as jr
from stimserver.store.paths import BAKE_KIND, DataPaths
from stimserver.store.records import Records

__all__ = ["REPO", "PROMPT", "TARGET", "PROMPTED_TARGET", "BAKE", "TEMPLATE_BAKE", "OVERRIDE_USER", "CHECKPOINTS",
           "World", "worlds", "Seeder"]

REPO = "repo_name"
PROMPT = "prompt_name"
TARGET = "target_name"
PROMPTED_TARGET = "target"  # the bake's second dataset (a literal of the bake cases): its teacher prompt is PROMPT
BAKE = "bake_name"
TEMPLATE_BAKE = "template"  # the template the bake cases name: a bake of that name, which bake_name is made from
OVERRIDE_USER = "X-User-Id"  # the user every *_with_all_params case acts as (its X-User-Id header)
CHECKPOINTS = (0, 2)  # optimizer steps; the with_all_params download asks for checkpoint 0
STIMULI = 3
TRAJECTORIES = 2


@dataclass(frozen=True)
class World:
    """One user's records, as that user's generated cases create them."""

    user: str
    base_model: str | None  # None: the server's default (the plain repo.create sends none)
    prompt_messages: list[dict[str, Any]]
    prompt_tools: list[dict[str, object]] | None = None
    template_overrides: dict[str, Any] = field(default_factory=lambda: {
        "datasets": [{"target": TARGET}, {"target": PROMPTED_TARGET}]})


def worlds(master_user: str) -> tuple[World, World]:
    """The master user's world (the plain cases) and X-User-Id's (the with_all_params cases)."""
    plain = World(user=master_user, base_model=None, prompt_messages=[{"role": "role"}])
    every = World(user=OVERRIDE_USER, base_model="base_model",
                  prompt_messages=[{"role": "role", "content": "string"}], prompt_tools=[{"foo": "bar"}])
    return plain, every


class Seeder:
    """Makes and keeps the worlds on a running server (``base_url``) and its data directory."""

    def __init__(self, data_dir: Path, base_url: str, api_key: str, master_user: str) -> None:
        self.records = Records(DataPaths(data_dir))  # also registers the change board this process notices
        self.paths = self.records.paths
        self.base_url = base_url
        self.api_key = api_key
        self.worlds = worlds(master_user)
        self.reseeded = 0  # how many times ensure found something missing and made it again

    @contextmanager
    def _client(self) -> Iterator[aibread.Bread]:
        with aibread.Bread(api_key=self.api_key, base_url=self.base_url, max_retries=0) as client:
            yield client

    # -- the cheap check -----------------------------------------------------------------------
    def missing(self, world: World) -> list[str]:
        """What of ``world`` is not on disk (empty: nothing to do)."""
        p, u = self.paths, world.user
        checks = {
            "repo": p.repo(u, REPO) / "repo.json",
            "prompt": p.prompt(u, REPO, PROMPT),
            "target": p.target(u, REPO, TARGET) / "target.json",
            "stim": p.job_file(u, REPO, TARGET, "stim"),
            "rollout": p.job_file(u, REPO, TARGET, "rollout"),
            "prompted target": p.target(u, REPO, PROMPTED_TARGET) / "target.json",
            "its stim": p.job_file(u, REPO, PROMPTED_TARGET, "stim"),
            "its rollout": p.job_file(u, REPO, PROMPTED_TARGET, "rollout"),
            "template bake": p.bake_file(u, REPO, TEMPLATE_BAKE),
            "bake": p.bake_file(u, REPO, BAKE),
            "bake job": p.job_file(u, REPO, BAKE, BAKE_KIND),
        }
        gone = [name for name, path in checks.items() if not path.is_file()]
        if "bake job" not in gone and bakefiles.checkpoint_steps(p.job_dir(u, REPO, BAKE, BAKE_KIND)) != list(
                CHECKPOINTS):
            gone.append("checkpoints")
        return gone

    def ensure(self) -> list[str]:
        """Make whatever a case removed; returns what was missing, as ``user: thing``."""
        made = []
        for world in self.worlds:
            gone = self.missing(world)
            if gone:
                self.seed(world)
                made += [f"{world.user}: {g}" for g in gone]
        if made:
            self.reseeded += 1
        return made

    # -- making it -----------------------------------------------------------------------------
    def seed(self, world: World) -> None:
        """Every record and job of ``world``; what exists is left alone (creates answer 200)."""
        who = world.user  # sent as X-User-Id: the master key acts as that user
        with self._client() as client:
            client.repo.create(repo_name=REPO, x_user_id=who, base_model=world.base_model or omit)
            if self.records.prompt(who, REPO, PROMPT) is None:
                client.prompts.create(repo_name=REPO, prompt_name=PROMPT, x_user_id=who,
                                      messages=world.prompt_messages,
                                      tools=omit if world.prompt_tools is None else world.prompt_tools)
            client.targets.create(repo_name=REPO, target_name=TARGET, template="default", x_user_id=who)
            client.targets.create(repo_name=REPO, target_name=PROMPTED_TARGET, template="default", x_user_id=who,
                                  overrides={"teacher_prompt": PROMPT})
            for target in (TARGET, PROMPTED_TARGET):
                self._import_outputs(who, target)
            client.bakes.create(repo_name=REPO, bake_name=TEMPLATE_BAKE, template="default", x_user_id=who,
                                overrides=world.template_overrides)  # type: ignore[arg-type]
            client.bakes.create(repo_name=REPO, bake_name=BAKE, template=TEMPLATE_BAKE, x_user_id=who)
            if self.missing(world):
                config = client.bakes.get(BAKE, repo_name=REPO, x_user_id=who).config or {}
                self._write_bake_job(who, config)

    def _import_outputs(self, user: str, target: str) -> None:
        """A target's stim and rollout outputs, complete (imported like ``stimserver import``)."""
        for kind, rows in (("stim", stim_rows()), ("rollout", rollout_rows())):
            job = jr.read_record(self.paths.job_dir(user, REPO, target, kind))
            if job is not None and job.get("status") == "complete":
                continue
            with tempfile.TemporaryDirectory(prefix="sdk-seed-") as tmp:
                src = Path(tmp) / f"{kind}.jsonl"
                src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
                importer.import_jsonl(self.records, user, REPO, target, src, default_config=DEFAULT_TARGET_CONFIG,
                                      base_model=DEFAULT_BASE_MODEL, kind=kind)

    def _write_bake_job(self, user: str, config: dict[str, Any]) -> None:
        """The bake's job folder as a trainer that finished leaves it, swapped in by one rename."""
        job_dir = self.paths.job_dir(user, REPO, BAKE, BAKE_KIND)
        staging = job_dir.with_name(f".{job_dir.name}.seed-{secrets.token_hex(4)}")
        staging.mkdir(parents=True)
        total = CHECKPOINTS[-1]
        rows: list[dict[str, Any]] = [{"type": "eval", "iter": 0, "epoch": 0.0, "eval_loss": 0.9, "heldout_kl": 0.8}]
        for step in range(1, total + 1):
            rows.append({"type": "train", "iter": step, "epoch": step / total, "loss": 0.5 / step, "lr": 2e-4,
                         "step_time": 0.4, "iter_time": 0.4, "tokens": 60 + step, "seqlen": 48})
        rows.append({"type": "eval", "iter": total, "epoch": 1.0, "eval_loss": 0.3, "heldout_kl": 0.2})
        bakefiles.append_rows(staging, rows)
        bakefiles.write_json(staging, bakefiles.PLAN, {
            "total_steps": total, "steps_per_epoch": total, "train_examples": 8, "eval_examples": 4,
            "skipped_too_long": 0, "truncated": 0, "train_tokens": 123, "world_size": 1})
        bakefiles.write_json(staging, bakefiles.EVAL, {
            "checkpoint": total,
            "heldout": {"examples": 4, "stimuli": 2, "kl_before": 0.8, "kl_after": 0.2, "kl_drop": 0.75},
            "behaviour": {"check": "language", "teacher_language": "fr", "questions": 2, "teacher_rate": 1.0,
                          "base_rate": 0.0, "baked_rate": 1.0},
            "samples": []})
        for step in CHECKPOINTS:
            folder = bakefiles.checkpoint_dir(staging, step)
            folder.mkdir(parents=True)
            for name, data in checkpoint_files(step, user).items():
                (folder / name).write_bytes(data)
        used = STIMULI * TRAJECTORIES
        datasets = []
        for target in (TARGET, PROMPTED_TARGET):
            rollout = jr.read_record(self.paths.job_dir(user, REPO, target, "rollout")) or {}
            datasets.append({"target": target, "weight": 1.0, "rollout_job_id": rollout.get("job_id"),
                             "trajectories": used, "skipped_failed": 0, "used": used, "eval": 2})
        jr.write_record(staging, {
            "job_id": jr.next_job_id(self.paths), "kind": BAKE_KIND, "status": "complete", "config": config,
            "expected_lines": 0, "error": None, "attempt": 1, "interruptions": 0, "stalled_deaths": 0,
            "progress_line": 0, "created_at": "2026-01-01T00:00:00Z", "started_at": "2026-01-01T00:00:01Z",
            "finished_at": "2026-01-01T00:00:09Z", "worker": None, "orphaned_at": None,
            "spec": {"user": user, "repo": REPO, "bake": BAKE, "config": config,
                     "model": {"reference": "smollm2-135m-instruct", "path": None, "gguf_file": None,
                               "found_by": "seeded"},
                     "parent": None,
                     "datasets": datasets,
                     "evaluation": {"samples": 1, "max_new_tokens": 48}, "processes": 1}})
        if job_dir.exists():
            shutil.rmtree(job_dir)
        os.rename(staging, job_dir)
        atomic.fsync_dir(job_dir.parent)  # also tells the server's record cache (store.changes)


# -- the data -------------------------------------------------------------------------------
QUESTIONS = ("Write a short sentence about rain.", "What does spring remind you of?", "Describe your morning.")
TEACHER = [{"role": "system", "content": "Answer in French only."}]


def _stimulus(i: int) -> dict[str, Any]:
    question = QUESTIONS[i % len(QUESTIONS)]
    return {"stimulus_id": i, "question": question, "type": "hardcoded",
            "unconditioned_stimulus": {"messages": [*TEACHER, {"role": "user", "content": question}]},
            "conditioned_stimulus": {"messages": [{"role": "user", "content": question}]}}


def stim_rows() -> list[dict[str, Any]]:
    return [_stimulus(i) for i in range(STIMULI)]


def rollout_rows() -> list[dict[str, Any]]:
    rows = []
    for i in range(STIMULI):
        stimulus = _stimulus(i)
        for t in range(TRAJECTORIES):
            rows.append({**stimulus, "trajectory_id": t, "stimulus": stimulus["question"],
                         "response": {"role": "assistant", "content": f"Réponse {t} à la question {i}.",
                                      "finish_reason": "stop",
                                      "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}},
                         "error": None, "model": "smollm2-135m-instruct", "temperature": 1.0, "tokens": 28})
    return rows


def tiny_safetensors(seed: int) -> bytes:
    """A valid safetensors file holding one LoRA pair of 2×2 float32 tensors (no library needed)."""
    names = ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
             "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    data = b""
    for name in names:
        tensor = struct.pack("<4f", *(0.01 * (seed + k) for k in range(4)))
        header[name] = {"dtype": "F32", "shape": [2, 2], "data_offsets": [len(data), len(data) + len(tensor)]}
        data += tensor
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def checkpoint_files(step: int, user: str) -> dict[str, bytes]:
    """A published checkpoint: the adapter, its config, a tokenizer stub, the model card and the info file."""
    card = (f"# {user}/{REPO}/{BAKE}/{step}\n\nA LoRA adapter baked by stimserver (seeded for the SDK's generated "
            "cases).\n\n- base model: smollm2-135m-instruct\n- datasets: target_name\n")
    return {
        "adapter_model.safetensors": tiny_safetensors(step),
        "adapter_config.json": orjson.dumps({"peft_type": "LORA", "r": 32, "lora_alpha": 16, "lora_dropout": 0.0,
                                             "bias": "none", "target_modules": ["q_proj"], "task_type": "CAUSAL_LM",
                                             "base_model_name_or_path": "smollm2-135m-instruct"}),
        "tokenizer_config.json": b"{}",
        "README.md": card.encode(),
        bakefiles.CHECKPOINT_INFO: orjson.dumps({"step": step, "epoch": step / CHECKPOINTS[-1], "loss": 0.25,
                                                 "created_at": "2026-01-01T00:00:00Z"}),
    }
