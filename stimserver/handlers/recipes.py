"""Recipes (API.md §14): a bake's lineage, and the steps that make it again; and the repo's bake tree.

    GET {R}/recipe/{bake}/dependency-graph   {base_model, bakes, targets, prompts, edges}
    GET {R}/recipe/{bake}/recreation-plan    {base_model, total_steps, steps, resources}
    GET {R}/tree                             (handlers/repos.py calls ``repo_tree``)

The lineage is read from the records, breadth first from the bake: a bake depends on the
targets its ``datasets`` name and on its parent bake (``model.parent_model_name`` naming
``user/repo/bake/step`` of this repo); a target on the prompts it names and on its template
target (when it was made from one); edges point from the dependent to the dependency
(``["bake", "b", "target", "t"]``). What no longer exists is left out.

A plan's steps are in dependency order: prompts, targets (templates first), each dataset
target's stim and rollout, then bakes (parents first) with their runs. The config of a
``create_*`` step is what to send again: a prompt's ``{messages, tools}``; a target's or a
bake's whole config, to be sent as ``overrides`` with ``template: "default"`` (the merge of the
default with a whole config is that config). A generator that names a template file by path
alone gets the file's content as ``template_content``, so the plan stands on its own.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..api.jsonio import json_response
from ..jobs import JobRef, JobStatus
from ..schemas.bakes import dataset_targets, model_name, parent_bake
from ..schemas.targets import DEFAULT_TEMPLATE, prompt_refs, public_config
from ..store.bakes import BakeStore
from ..store.errors import StoreError
from ..store.paths import BAKE_KIND, name_problem
from .bakes import bake_context, observed_job
from .context import RepoContext

__all__ = ["routes", "Lineage", "lineage", "recreation_plan", "repo_tree"]

routes = web.RouteTableDef()

RECIPE = "/v1/repo/{repo_name}/recipe/{bake_name}"
Record = dict[str, Any]


@dataclass
class Lineage:
    """The records a bake depends on, each in the order it was reached, and the edges between them."""

    bakes: dict[str, Record] = field(default_factory=dict)
    targets: dict[str, Record] = field(default_factory=dict)
    prompts: dict[str, Record] = field(default_factory=dict)
    edges: list[list[str]] = field(default_factory=list)


def lineage(ctx: RepoContext, store: BakeStore, bake: str, record: Record) -> Lineage:
    found = Lineage(bakes={bake: record})
    bakes, targets = [bake], []
    while bakes:
        name = bakes.pop(0)
        config = found.bakes[name].get("config")
        for target in dict.fromkeys(dataset_targets(config)):
            target_record = found.targets.get(target) or ctx.records.target(ctx.user, ctx.repo, target)
            if target_record is None:
                continue
            found.edges.append(["bake", name, "target", target])
            if target not in found.targets:
                found.targets[target] = target_record
                targets.append(target)
        parent = parent_bake(config, ctx.user, ctx.repo)
        if parent == name:
            parent = None
        parent_record = None if parent is None else found.bakes.get(parent) or store.bake(ctx.user, ctx.repo, parent)
        if parent is not None and parent_record is not None:
            found.edges.append(["bake", name, "bake", parent])
            if parent not in found.bakes:
                found.bakes[parent] = parent_record
                bakes.append(parent)
    while targets:
        name = targets.pop(0)
        target_record = found.targets[name]
        for prompt in dict.fromkeys(prompt_refs(public_config(target_record.get("config"))).values()):
            prompt_record = found.prompts.get(prompt) or ctx.records.prompt(ctx.user, ctx.repo, prompt)
            if prompt_record is not None:
                found.edges.append(["target", name, "prompt", prompt])
                found.prompts.setdefault(prompt, prompt_record)
        template = target_record.get("template")
        if not isinstance(template, str) or template == DEFAULT_TEMPLATE or name_problem(template) is not None:
            continue
        template_record = found.targets.get(template) or ctx.records.target(ctx.user, ctx.repo, template)
        if template_record is not None:
            found.edges.append(["target", name, "target", template])
            if template not in found.targets:
                found.targets[template] = template_record
                targets.append(template)
    return found


def _ordered(names: list[str], depends: dict[str, list[str]]) -> list[str]:
    """``names`` with each after what it depends on (among ``names``); ties by name; a cycle broken by name."""
    left = sorted(names)
    done: list[str] = []
    while left:
        ready = next((n for n in left if all(d in done or d not in left for d in depends.get(n, []))), left[0])
        left.remove(ready)
        done.append(ready)
    return done


def _base_model(ctx: RepoContext) -> str:
    repo = ctx.records.repo(ctx.user, ctx.repo) or {}
    return str(repo.get("base_model", ""))


def _model_names(ctx: RepoContext, store: BakeStore, bake: str) -> list[str] | None:
    steps = store.checkpoints(ctx.user, ctx.repo, bake) if store.job(ctx.user, ctx.repo, bake) is not None else []
    return [model_name(ctx.user, ctx.repo, bake, s) for s in reversed(steps)] or None


def _target_config(ctx: RepoContext, record: Record) -> dict[str, Any]:
    """A target's config to send again: template files a generator names by path alone put inline."""
    config = public_config(record.get("config"))
    generators = []
    for gen in config.get("generators") or []:
        gen = copy.deepcopy(gen)
        if isinstance(gen, dict) and gen.get("template_path") and gen.get("template_content") is None:
            try:
                text = ctx.records.template(ctx.user, ctx.repo, gen["template_path"])
            except StoreError:  # a path that is no valid file name (a record edited by hand)
                text = None
            if text is not None:
                gen["template_content"] = text
        generators.append(gen)
    config["generators"] = generators
    return config


def dependency_graph(ctx: RepoContext, found: Lineage) -> dict[str, Any]:
    return {"base_model": _base_model(ctx),
            "bakes": {name: r.get("config") or {} for name, r in found.bakes.items()},
            "targets": {name: public_config(r.get("config")) for name, r in found.targets.items()},
            "prompts": {name: None for name in found.prompts},
            "edges": found.edges}


def recreation_plan(ctx: RepoContext, store: BakeStore, found: Lineage) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []

    def add(action: str, kind: str, name: str, dependencies: list[str], config: dict[str, Any]) -> None:
        steps.append({"step": len(steps) + 1, "action": action, "resource_type": kind, "resource_name": name,
                      "dependencies": dependencies, "config": config})

    depends: dict[tuple[str, str], list[str]] = {}
    for src_type, src, dst_type, dst in found.edges:
        depends.setdefault((src_type, src), []).append(f"{dst_type}:{dst}")
    prompts = sorted(found.prompts)
    for name in prompts:
        record = found.prompts[name]
        config: dict[str, Any] = {"messages": copy.deepcopy(record.get("messages", []))}
        if record.get("tools") is not None:
            config["tools"] = copy.deepcopy(record["tools"])
        add("create_prompt", "prompt", name, [], config)
    target_deps = {t: [d.split(":", 1)[1] for d in depends.get(("target", t), []) if d.startswith("target:")]
                   for t in found.targets}
    targets = _ordered(list(found.targets), target_deps)
    for name in targets:
        add("create_target", "target", name, depends.get(("target", name), []),
            _target_config(ctx, found.targets[name]))
    trained = list(dict.fromkeys(t for b in found.bakes.values() for t in dataset_targets(b.get("config"))
                                 if t in found.targets))
    for name in sorted(trained, key=targets.index):
        add("run_stim", "target", name, [f"target:{name}"], {})
        add("run_rollout", "target", name, [f"target:{name}:stim_complete"], {})
    bake_deps = {b: [d.split(":", 1)[1] for d in depends.get(("bake", b), []) if d.startswith("bake:")]
                 for b in found.bakes}
    bakes = _ordered(list(found.bakes), bake_deps)
    for name in bakes:
        record = found.bakes[name]
        add("create_bake", "bake", name, depends.get(("bake", name), []), copy.deepcopy(record.get("config") or {}))
        needs = [f"bake:{name}"]
        needs += [f"target:{t}:rollout_complete" for t in dict.fromkeys(dataset_targets(record.get("config")))
                  if t in found.targets]
        needs += [f"bake:{p}:complete" for p in bake_deps[name]]
        add("run_bake", "bake", name, needs, {})
    return {"base_model": _base_model(ctx), "total_steps": len(steps), "steps": steps,
            "resources": {"prompts": prompts, "targets": targets,
                          "bakes": [{"bake_name": b, "model_names": _model_names(ctx, store, b)} for b in bakes]}}


async def repo_tree(request: web.Request, ctx: RepoContext, base_model: str) -> dict[str, Any]:
    """Every bake of the repo with its status, config and checkpoints, and the parent edges between them."""
    store = BakeStore(ctx.records)
    bakes: dict[str, Any] = {}
    edges: list[list[str]] = []
    names = store.names(ctx.user, ctx.repo)
    for name in names:
        record = store.bake(ctx.user, ctx.repo, name)
        if record is None:  # deleted since the listing
            continue
        job = await observed_job(request, JobRef(ctx.user, ctx.repo, name, BAKE_KIND),
                                 store.job(ctx.user, ctx.repo, name))
        steps = store.checkpoints(ctx.user, ctx.repo, name) if job is not None else []
        bakes[name] = {"status": JobStatus.NOT_STARTED.value if job is None else job.get("status", "failed"),
                       "config": record.get("config") or {}, "checkpoints": steps,
                       "model_name": [model_name(ctx.user, ctx.repo, name, s) for s in reversed(steps)] or None}
        parent = parent_bake(record.get("config"), ctx.user, ctx.repo)
        if parent is not None and parent != name and parent in names:
            edges.append(["bake", name, "bake", parent])
    return {"base_model": base_model, "bakes": bakes, "edges": edges}


@routes.get(RECIPE + "/dependency-graph")
async def get_dependency_graph(request: web.Request) -> web.Response:
    ctx, store, name, record = bake_context(request)
    return json_response(dependency_graph(ctx, lineage(ctx, store, name, record)))


@routes.get(RECIPE + "/recreation-plan")
async def get_recreation_plan(request: web.Request) -> web.Response:
    ctx, store, name, record = bake_context(request)
    return json_response(recreation_plan(ctx, store, lineage(ctx, store, name, record)))
