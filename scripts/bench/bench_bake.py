#!/usr/bin/env python3
"""Does a bake work, and what does stimserver's trainer cost: the bake issue's four measures, in one run.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench/bench_bake.py [--mode server|direct]
        [--model var/models/smollm2-135m-instruct] [--limit STIMULI] [--overrides JSON]
        [--throughput-steps 16] [--rounds 2] [--new-questions 48] [--keep DIR]

What runs: a bake of the shipped demo's French target (data/users/demo, repo ``demo``: 240
trajectories of 120 everyday questions; teacher = the rollout's ``unconditioned_stimulus``
messages, with the system prompt "Answer in French only.", student = its ``conditioned_stimulus``,
the bare question) on SmolLM2-135M-Instruct, with the config ``DEFAULT_OVERRIDES`` (merged over
the default template; ``--overrides`` merges more over it). ``--mode server`` (the default when
``stimserver.jobs.bake`` exists) copies data/ to a temporary directory, starts ``stimserver
serve`` on it and drives the official client: ``bakes.create`` → ``bakes.run(poll=False)`` →
``bakes.get`` every second until the bake is complete → ``bakes.get_metrics``. ``--mode direct``
freezes the job folder itself (the same trajectory selection) and runs ``python -m
stimserver.train JOB_DIR``. ``--limit N`` bakes only N stimuli (``total_trajectories`` 2N), for a
quick dry run of the script, not for the figures.

The measures, printed as markdown tables:

1. Wall time of the whole bake, from the run request to the status ``complete`` (server mode;
   in direct mode the trainer process's life): loading, the held-out evaluation before and after,
   training and the checkpoint. Goal: at most 10 minutes.
2. Held-out KL(teacher ‖ student) per response token on the stimuli the bake did not train on
   (``eval.json``: the base model before, the baked model after) and its drop,
   ``1 - after / before``. Goal: at least 70 %.
3. How often the answers are French (``stimserver.train.language.detect``), greedy, with no
   system prompt (the student's messages: the bare question; SmolLM2's chat template then adds
   its own default system line, as it did for the student in training): the bake's own held-out
   questions (``eval.json``) plus ``--new-questions`` questions made from the dataset's four
   templates on subjects it never had (answered here from the published checkpoint). Counted,
   base model vs baked model. A base model that never answers in French would make any ratio
   infinite, so the ratio is add-one smoothed, ``(baked + 1) / (base + 1)``, which can only
   understate the gain; the counts are printed beside it. Goal: at least 5.
4. Trained tokens per second (the response tokens the loss runs over) of the trainer vs a bare
   PyTorch loop computing the same loss (``train/loss.py``: the teacher pass with the adapter
   disabled and no gradients, the student pass, ``generalized_jsd`` over the response tokens,
   AdamW, the same gradient clipping and linear decay) on the same model and LoRA settings
   (``train.trainer.load_model``, seeded alike) and the same micro-batches (``train/data.py``'s
   examples and collator, ``--throughput-steps`` steps of the bake's training lines, each loop
   shuffling them with the seed), each round a fresh process, in ABAB order for
   ``--rounds`` rounds each. A round's rate skips its first step (warm-up) and divides the
   tokens of the others by their wall time: the trainer's own ``iter_time`` rows (from the end of
   one step to the end of the next: data loading, callbacks and rows included), the bare loop's
   clock around the same work. Medians, and their ratio. Goal: at least 0.9.

The machine has 2 cores: run it alone. Nothing is downloaded (HF_HUB_OFFLINE=1).
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from livebench import KEY, ROOT, print_table, serving  # noqa: E402

from stimserver.schemas.bakes import DEFAULT_BAKE_CONFIG, merge  # noqa: E402
from stimserver.store import bakefiles  # noqa: E402

USER = REPO = "demo"
TARGET = "french"
DEFAULT_MODEL = ROOT / "var" / "models" / "smollm2-135m-instruct"
ROLLOUT = ROOT / "data" / "users" / USER / "repos" / REPO / "targets" / TARGET / "rollout" / "output.jsonl"
NOT_DONE = ("not_started", "preparing", "pending", "running", "incomplete")
TIME_LIMIT = 3600.0
# The bake measured: the default template with these changes, for a 135M model, 216 training
# trajectories and the 10-minute budget of a 2-core CPU (~7,800 response tokens an epoch: two
# epochs, 108 steps, so a high rate for a fresh LoRA of r 16 on every linear layer; the model
# named in a models directory). --overrides changes any of it.
DEFAULT_OVERRIDES: dict[str, Any] = {
    "datasets": [{"target": TARGET, "weight": 1.0}],
    "epochs": 2,
    "micro_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "model": {"parent_model_name": DEFAULT_MODEL.name,
              "baked_adapter_config": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "bias": "none",
                                       "target_modules": "all-linear"}},
    "data": {"max_length": 512, "train_eval_split": [0.9, 0.1]},
    "optimizer": {"learning_rate": 1e-3},
}
# The dataset's four question templates, on subjects data/datasets/everyday.jsonl does not have.
TEMPLATES = ("Describe {} in one sentence.", "What do you like about {}?", "Write a short sentence about {}.",
             "What does {} remind you of?")
NEW_SUBJECTS = ("a kitchen", "a clock", "a candle", "a waterfall", "a piano", "the sun", "a park", "a cloud",
                "a village", "a boat", "summer", "a song", "a teacher", "a window", "an island", "winter")


@dataclass
class BakeRun:
    """The measured bake: its job folder, wall seconds, metrics rows and (server mode) its last status."""

    job_dir: Path
    seconds: float
    rows: list[dict[str, Any]]
    status: dict[str, Any] = field(default_factory=dict)


@dataclass
class Round:
    loop: str            # "trainer" or "bare"
    steps: int           # steps timed (the first left out)
    tokens: int
    seconds: float
    loss: float          # the mean loss of the round's steps: both loops optimise the same thing

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def trainer_env() -> dict[str, str]:
    """What the job runner gives a trainer process (offline, unbuffered), for every process started here."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def bake_overrides(args: argparse.Namespace) -> dict[str, Any]:
    out = merge(DEFAULT_OVERRIDES, {"model": {"parent_model_name": args.model.name}})
    if args.limit:
        out["total_trajectories"] = 2 * args.limit
    return merge(out, json.loads(args.overrides)) if args.overrides else out


# -- 1. the bake -------------------------------------------------------------------------------
async def bake_through_server(args: argparse.Namespace, root: Path, overrides: dict[str, Any]) -> BakeRun:
    """The official client against ``stimserver serve`` on a copy of data/."""
    import aibread

    data = root / "data"
    shutil.copytree(ROOT / "data", data)
    name = "bench-french"
    async with serving(data, "http://127.0.0.1:9", STIMSERVER_MODELS_DIR=str(args.model.parent),
                       STIMSERVER_BAKE_EVAL_SAMPLES="64") as url:
        client = aibread.AsyncBread(api_key=KEY, base_url=url, max_retries=0, timeout=60.0)
        for _ in range(300):
            try:
                await client.health.check()
                break
            except aibread.APIError:
                await asyncio.sleep(0.1)
        await client.bakes.create(REPO, bake_name=name, template="default", overrides=cast(Any, overrides),
                                  user_id=USER)
        start = time.perf_counter()
        status = await client.bakes.run(name, repo_name=REPO, user_id=USER, poll=False)
        while status.status in NOT_DONE:
            await asyncio.sleep(1.0)
            status = await client.bakes.get(name, repo_name=REPO, user_id=USER)
        seconds = time.perf_counter() - start
        rows = list(await client.bakes.get_metrics(name, repo_name=REPO, user_id=USER))
        job_dir = data / "users" / USER / "repos" / REPO / "bakes" / name / "bake"
        if status.status != "complete":
            raise SystemExit(f"the bake ended {status.status}: {status.error}\n{tail(job_dir / bakefiles.LOG)}")
        return BakeRun(job_dir, seconds, rows, status.model_dump())


def rollout_lines() -> list[dict[str, Any]]:
    with ROLLOUT.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def spec_for(model: Path, config: dict[str, Any], datasets: list[dict[str, Any]], bake: str) -> dict[str, Any]:
    return {"user": USER, "repo": REPO, "bake": bake, "config": config,
            "model": {"reference": model.name, "path": str(model.resolve()), "gguf_file": None,
                      "found_by": "bench_bake.py --model"},
            "parent": None, "datasets": datasets, "evaluation": {"samples": 64, "max_new_tokens": 48},
            "processes": 1}


def write_job(job_dir: Path, spec: dict[str, Any], lines: list[dict[str, Any]]) -> Path:
    job_dir.mkdir(parents=True)
    (job_dir / "job.json").write_text(json.dumps({"id": 1, "kind": "bake", "status": "running", "spec": spec}))
    (job_dir / bakefiles.TRAIN_DATA).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return job_dir


def run_trainer(job_dir: Path) -> float:
    """``python -m stimserver.train JOB_DIR`` to its end (its output in trainer.log); its wall seconds."""
    start = time.perf_counter()
    with open(job_dir / bakefiles.LOG, "ab") as log:
        code = subprocess.run([sys.executable, "-m", "stimserver.train", str(job_dir)], stdout=log,
                              stderr=subprocess.STDOUT, env=trainer_env(), cwd=ROOT, timeout=TIME_LIMIT).returncode
    if code != 0:
        raise SystemExit(f"the trainer exited {code}: {bakefiles.read_failure(job_dir)}\n"
                         f"{tail(job_dir / bakefiles.LOG)}")
    return time.perf_counter() - start


def bake_directly(args: argparse.Namespace, root: Path, overrides: dict[str, Any]) -> BakeRun:
    """The job folder frozen here as the server would, then the trainer process."""
    from stimserver.jobs.bake import select_trajectories

    config = merge(DEFAULT_BAKE_CONFIG, overrides)
    selection = select_trajectories(config, {TARGET: rollout_lines()})
    datasets = [{**d, "rollout_job_id": 0} for d in selection.datasets]
    job_dir = write_job(root / "bake", spec_for(args.model, config, datasets, "bench-french"), selection.lines)
    seconds = run_trainer(job_dir)
    return BakeRun(job_dir, seconds, bakefiles.read_rows(job_dir))


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- 4. trainer vs a bare loop -------------------------------------------------------------------
def throughput_job(root: Path, bake: BakeRun, steps: int, index: int) -> Path:
    """A job of the bake's first training lines, enough for ``steps`` steps, one epoch, no eval, a row a step."""
    record = json.loads((bake.job_dir / "job.json").read_text())
    spec = record["spec"]
    config = merge(spec["config"], {"epochs": 1, "train_log_iter_interval": 1, "eval_interval": 0,
                                    "data": {"train_eval_split": [1, 0]}})
    per_step = int(config.get("micro_batch_size") or 2) * int(config.get("gradient_accumulation_steps") or 1)
    lines = [line for line in bakefiles_lines(bake.job_dir) if line.get("split") == "train"][:steps * per_step]
    return write_job(root / f"throughput-{index}", {**spec, "config": config}, lines)


def bakefiles_lines(job_dir: Path) -> list[dict[str, Any]]:
    with (job_dir / bakefiles.TRAIN_DATA).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def trainer_round(job_dir: Path) -> Round:
    run_trainer(job_dir)
    rows = [r for r in bakefiles.read_rows(job_dir) if r.get("type") == "train"]
    timed = rows[1:]
    return Round("trainer", len(timed), sum(int(r["tokens"]) for r in timed), sum(float(r["iter_time"]) for r in timed),
                 statistics.mean(float(r["loss"]) for r in rows))


def bare_round(job_dir: Path) -> Round:
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--bare-loop", str(job_dir)],
                          capture_output=True, text=True, env=trainer_env(), cwd=ROOT, timeout=TIME_LIMIT)
    if done.returncode != 0:
        raise SystemExit(f"the bare loop failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return Round("bare", result["steps"], result["tokens"], result["seconds"], result["loss"])


def bare_loop(job_dir: Path) -> dict[str, Any]:
    """The same training as the trainer's, written out in PyTorch: returns the timed steps (the first left out)."""
    import torch
    from transformers import set_seed

    from stimserver.store import jobrecords
    from stimserver.train import data as bake_data
    from stimserver.train import options
    from stimserver.train.loss import generalized_jsd, output_head, response_logits
    from stimserver.train.trainer import load_model, load_tokenizer

    spec = (jobrecords.read_record(job_dir) or {})["spec"]
    config = spec["config"]
    s = options.settings(config)
    tokenizer = load_tokenizer(spec)
    found = bake_data.load(job_dir, tokenizer, s.max_length)
    set_seed(s.seed)
    model = load_model(spec)
    model.train()
    head = output_head(model)
    collate = bake_data.BakeCollator(bake_data.pad_id(tokenizer))
    args = options.training_arguments(config, output_dir=str(job_dir / "work"), steps_per_epoch=1)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args["learning_rate"], betas=(args["adam_beta1"], args["adam_beta2"]),
                                  weight_decay=args["weight_decay"])
    order = torch.randperm(len(found.train), generator=torch.Generator().manual_seed(s.seed)).tolist()
    batches = [[found.train[i] for i in order[k:k + s.micro_batch_size]]
               for k in range(0, len(order), s.micro_batch_size)]
    accumulate = s.gradient_accumulation_steps
    steps = [batches[k:k + accumulate] for k in range(0, len(batches), accumulate)]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: max(0.0, 1 - i / len(steps)))
    times, tokens, losses = [], [], []
    for step in steps:
        start = time.perf_counter()
        inputs = [collate(b) for b in step]
        count = sum(int(b["student_completion_mask"].sum()) for b in inputs)
        total = 0.0
        for batch in inputs:
            with torch.no_grad(), model.disable_adapter():
                model.eval()
                teacher = response_logits(model, head, batch["teacher_input_ids"], batch["teacher_attention_mask"],
                                          batch["teacher_completion_mask"])
                model.train()
            student = response_logits(model, head, batch["student_input_ids"], batch["student_attention_mask"],
                                      batch["student_completion_mask"])
            loss = generalized_jsd(student, teacher, beta=s.beta, temperature=s.temperature).sum() / count
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, float(args.get("max_grad_norm", 1.0)))  # as the Trainer does
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        tokens.append(count)
        losses.append(total)
    return {"steps": len(times) - 1, "tokens": sum(tokens[1:]), "seconds": sum(times[1:]),
            "loss": statistics.mean(losses)}


# -- 3. French on new questions ---------------------------------------------------------------
def new_questions(n: int) -> list[str]:
    questions = [t.format(s) for s in NEW_SUBJECTS for t in TEMPLATES]
    return questions[:n]


def french_counts(model_path: Path, checkpoint: Path, questions: list[str], max_new_tokens: int) -> dict[str, int]:
    """How many of ``questions`` the teacher, the base and the baked model answer in French (greedy)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from stimserver.train.evaluate import generate_answers
    from stimserver.train.language import detect

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, checkpoint)
    system = [{"role": "system", "content": "Answer in French only."}]
    student = [[{"role": "user", "content": q}] for q in questions]
    answers = {
        "teacher": generate_answers(model, tokenizer, [system + m for m in student], adapter=False,
                                    max_new_tokens=max_new_tokens),
        "base": generate_answers(model, tokenizer, student, adapter=False, max_new_tokens=max_new_tokens),
        "baked": generate_answers(model, tokenizer, student, adapter=True, max_new_tokens=max_new_tokens),
    }
    return {side: sum(detect(a) == "fr" for a in texts) for side, texts in answers.items()}


# -- the report --------------------------------------------------------------------------------
def train_rate(rows: list[dict[str, Any]]) -> float:
    train = [r for r in rows if r.get("type") == "train"][1:]
    seconds = sum(float(r["iter_time"]) for r in train)
    return sum(int(r["tokens"]) for r in train) / seconds if seconds else 0.0


def smoothed(baked: int, base: int) -> float:
    return (baked + 1) / (base + 1)


def report(args: argparse.Namespace, bake: BakeRun, rounds: list[Round], new: dict[str, int] | None,
           n_new: int) -> None:
    ev = bakefiles.read_json(bake.job_dir, bakefiles.EVAL) or {}
    plan = bakefiles.read_json(bake.job_dir, bakefiles.PLAN) or {}
    spec = json.loads((bake.job_dir / "job.json").read_text())["spec"]
    heldout, behaviour = ev.get("heldout") or {}, ev.get("behaviour") or {}
    samples = ev.get("samples") or []
    split = {side: sum(1 for s in samples if (s.get(side) or {}).get("language") == "fr")
             for side in ("teacher", "base", "baked")}
    eval_rows = [r for r in bake.rows if r.get("type") == "eval"]
    train_rows = [r for r in bake.rows if r.get("type") == "train"]

    print("## The bake\n")
    print(f"config: `{json.dumps(spec['config'], sort_keys=True)}`\n")
    print("| step | epoch | loss | lr | tokens | iter_time s |\n|---:|---:|---:|---:|---:|---:|")
    for row in train_rows:
        print(f"| {row['iter']} | {row['epoch']:.2f} | {row['loss']:.4f} | {row['lr']:.2e} | {row['tokens']} | "
              f"{row['iter_time']:.2f} |")
    print()
    if samples:
        print("## Held-out answers (greedy, no system prompt for base and baked)\n")
        print("| question | teacher | base | baked |\n|---|---|---|---|")
        for s in samples:
            cells = [str(s.get("question"))] + [
                f"{(s.get(side) or {}).get('language')}: {cell(str((s.get(side) or {}).get('answer', '')))}"
                for side in ("teacher", "base", "baked")]
            print("| " + " | ".join(cells) + " |")
        print()
    if rounds:
        print(f"## Trainer vs bare PyTorch loop (ABAB, {args.throughput_steps} steps a round, first step untimed)\n")
        print("| round | loop | steps timed | tokens | seconds | tokens/s | mean loss |\n"
              "|---:|---|---:|---:|---:|---:|---:|")
        for i, rnd in enumerate(rounds, 1):
            print(f"| {i} | {rnd.loop} | {rnd.steps} | {rnd.tokens} | {rnd.seconds:.2f} | {rnd.rate:.1f} | "
                  f"{rnd.loss:.4f} |")
        print()

    summary: list[tuple[str, str]] = [
        ("mode", args.mode),
        ("model", str(args.model)),
        ("training lines / held-out lines / steps", f"{plan.get('train_examples')} / {plan.get('eval_examples')} / "
                                                    f"{plan.get('total_steps')}"),
        ("whole bake wall time (goal <= 600 s)", f"{bake.seconds:.1f} s"),
        ("of which training steps (sum of iter_time)", f"{sum(float(r['iter_time']) for r in train_rows):.1f} s"),
        ("trainer tokens/s in the bake (steps 2..)", f"{train_rate(bake.rows):.1f}"),
        ("held-out KL before (base model)", fmt(heldout.get("kl_before"))),
        ("held-out KL after (baked model)", fmt(heldout.get("kl_after"))),
        ("held-out KL drop (goal >= 0.70)", fmt(heldout.get("kl_drop"))),
        ("held-out KL eval rows, first / last", " / ".join(fmt(r.get("heldout_kl")) for r in eval_rows[:1] +
                                                           eval_rows[-1:]) or "none"),
        ("eval.json teacher language / rates teacher, base, baked",
         f"{behaviour.get('teacher_language')} / {fmt(behaviour.get('teacher_rate'))}, "
         f"{fmt(behaviour.get('base_rate'))}, {fmt(behaviour.get('baked_rate'))}"),
        ("French answers, held-out split (teacher / base / baked of n)",
         f"{split['teacher']} / {split['base']} / {split['baked']} of {len(samples)}"),
    ]
    base_fr, baked_fr, asked = split["base"], split["baked"], len(samples)
    if new is not None:
        summary.append(("French answers, new questions (teacher / base / baked of n)",
                     f"{new['teacher']} / {new['base']} / {new['baked']} of {n_new}"))
        base_fr, baked_fr, asked = base_fr + new["base"], baked_fr + new["baked"], asked + n_new
    summary += [
        ("French answers, all held-out questions (base / baked of n)", f"{base_fr} / {baked_fr} of {asked}"),
        ("French ratio baked / base, (baked+1)/(base+1) (goal >= 5)", f"{smoothed(baked_fr, base_fr):.2f}"),
        ("French ratio baked / base, raw", f"{baked_fr / base_fr:.2f}" if base_fr else "base has none"),
    ]
    if rounds:
        trainer = statistics.median(r.rate for r in rounds if r.loop == "trainer")
        bare = statistics.median(r.rate for r in rounds if r.loop == "bare")
        summary += [("median trainer tokens/s", f"{trainer:.1f}"), ("median bare loop tokens/s", f"{bare:.1f}"),
                 ("ratio trainer / bare (goal >= 0.9)", f"{trainer / bare:.3f}" if bare else "n/a")]
    print("## Summary\n")
    print_table(summary)


def fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def cell(text: str, width: int = 80) -> str:
    flat = " ".join(text.split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def bench(args: argparse.Namespace) -> None:
    overrides = bake_overrides(args)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-bake-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        if args.mode == "server":
            bake = asyncio.run(bake_through_server(args, root, overrides))
        else:
            bake = bake_directly(args, root, overrides)
        print(f"bake complete in {bake.seconds:.1f} s ({bake.job_dir})", file=sys.stderr)
        rounds: list[Round] = []
        for i in range(args.rounds):  # A B A B …
            rounds.append(trainer_round(throughput_job(root, bake, args.throughput_steps, i)))
            rounds.append(bare_round(root / f"throughput-{i}"))
            print(f"round {i + 1}: trainer {rounds[-2].rate:.1f}, bare {rounds[-1].rate:.1f} tokens/s",
                  file=sys.stderr)
        new = None
        n_new = min(args.new_questions, len(TEMPLATES) * len(NEW_SUBJECTS))
        steps = bakefiles.checkpoint_steps(bake.job_dir)
        if n_new and steps:
            spec = json.loads((bake.job_dir / "job.json").read_text())["spec"]
            new = french_counts(Path(spec["model"]["path"]), bakefiles.checkpoint_dir(bake.job_dir, steps[-1]),
                                new_questions(n_new), spec["evaluation"]["max_new_tokens"])
        report(args, bake, rounds, new, n_new)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    server = importlib.util.find_spec("stimserver.jobs.bake") is not None
    ap.add_argument("--mode", choices=("server", "direct"), default="server" if server else "direct",
                    help="through stimserver serve and the official client, or the trainer process alone")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a Hugging Face model directory")
    ap.add_argument("--limit", type=int, default=0, help="bake only this many stimuli (a dry run)")
    ap.add_argument("--overrides", help="JSON merged over the bake's overrides")
    ap.add_argument("--throughput-steps", type=int, default=16, help="steps per trainer / bare-loop round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of each loop (0: skip measure 4)")
    ap.add_argument("--new-questions", type=int, default=48, help="new questions for measure 3 (0: none)")
    ap.add_argument("--keep", help="work in this directory and keep it")
    ap.add_argument("--bare-loop", type=Path, help=argparse.SUPPRESS)  # internal: one bare-loop round
    args = ap.parse_args()
    if args.bare_loop:
        print(json.dumps(bare_loop(args.bare_loop)))
        return
    if not (args.model / "config.json").is_file():
        ap.error(f"--model {args.model} is not a Hugging Face model directory "
                 "(python -m stimserver.train.models convert var/models/smollm2-135m-instruct)")
    for name in ("limit", "throughput_steps", "rounds", "new_questions"):
        if not 0 <= getattr(args, name) <= 10_000:
            ap.error(f"--{name.replace('_', '-')} must be between 0 and 10000")
    if args.throughput_steps < 2 and args.rounds:
        ap.error("--throughput-steps must be at least 2 (the first step is not timed)")
    started = time.perf_counter()
    bench(args)
    print(f"\n(bench total {math.ceil(time.perf_counter() - started)} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
