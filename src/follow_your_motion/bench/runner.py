"""Run a benchmark suite: every (case, target prompt, method, seed) transferred, scored and recorded.

Layout of ``out``::

    suite.json                          the resolved manifest, methods, settings (written by the main process)
    references/<case>-<T>x<H>x<W>.mp4   the reference as the model sees it (ShapesWorld: rendered here)
    cases/<case>/<method>/              one Transfer run directory per case x method (resumable stages);
                                        samples/p<k>_s<seed>.mp4 per target prompt k and seed; a method that
                                        differs from an earlier one only in sampling settings has that one's
                                        tuning linked in (``reuse``) and trains nothing
    results/<case>__<method>__p<k>__s<seed>.json   one result per work item (written atomically)
    results.jsonl                       every result of the suite, one per line, merged at the end

A result whose JSON exists is never recomputed (it must have been made with the same settings, apart from
``results.IGNORED_SETTINGS``, or the run stops with an error); a killed run is simply started again (Transfer
resumes its own stages from their checkpoints). Generation seeds are the given ``seeds``; training seeds
come from the config, so everything is deterministic.

The parts: ``sharding`` (work items, and how the processes of a torchrun / accelerate launch share them),
``reuse`` (one tuning per case for the methods that differ only in how they sample),
``references`` (reference videos), ``transfer_call`` (tuning and generating one sample), ``result_metrics``
(its scores) and ``results`` (its JSON record, the resume check, results.jsonl).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from ..config import TransferConfig
from ..errors import InputError
from ..precedence import resolve_config
from ..recipes import merge, model_family
from ..runs import atomic_write_text
from .manifest import Case, Manifest
from .manifest_sources import resolve_manifest
from .methods import Method, get_methods
from .references import case_reference
from .result_metrics import AppearanceModels
from .results import build_record, check_finished, jsonable, merge_results, result_path, write_result
from .reuse import reuse_tuning, tuning_sources
from .sharding import Processes, WorkItem, shard, work_items
from .transfer_call import close_jobs, run_transfer

SUITE_SCHEMA = "fym-bench-suite/1"


def base_settings(model: str | None, device: str | None, overrides: dict | None) -> tuple[dict, str]:
    """The run's settings (``precedence.resolve_config``: the family's recipe < `overrides` < the model and device
    given) and the model family."""
    flags = {k: v for k, v in (("source", model), ("device", device)) if v is not None}
    cfg = resolve_config({"model": flags} if flags else {}, settings=overrides)  # bad overrides fail here
    return cfg.model_dump(), model_family(cfg.model.model_dump())


def _unit_config(settings: dict, method: Method, case: Case, reference: Path) -> TransferConfig:
    data = merge(method.config(settings).model_dump(), {"reference": str(reference), "prompt": case.caption,
                                                        "target_prompt": None})
    return TransferConfig.model_validate(data)


def run_suite(
    manifest: Manifest | str | Path,
    methods: str | Sequence[str | Method],
    out: str | Path,
    model: str | None = None,
    device: str | None = None,
    overrides: dict | None = None,
    seeds: Sequence[int] = (0,),
    clip: str | None = None,
    dino: str | None = None,
) -> Path:
    """Run every (case, target prompt, method, seed) not already done; return the path of results.jsonl.

    `manifest`: a Manifest, a YAML path, a folder (see ``manifest_sources.resolve_manifest``) or "shapesworld".
    `overrides`: TransferConfig settings applied on the model family's recipe, under each method's own.
    `clip`, `dino`: models (directory or cached hub id) for the appearance metrics of every result
    (``score.score_appearance``); loaded before any work, so a missing one stops the run at once."""
    manifest = resolve_manifest(manifest)
    methods = get_methods(methods)
    seeds = tuple(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise InputError("no seeds given")
    out = Path(out)
    procs = Processes.from_env()
    settings, family = base_settings(model, device, overrides)
    device = settings["model"]["device"] = procs.device(settings["model"]["device"])
    appearance = AppearanceModels(clip, dino, device)
    appearance.load()
    items = work_items(manifest, methods, seeds)
    sources = tuning_sources(methods, settings)
    if procs.rank == 0:
        suite = {
            "schema": SUITE_SCHEMA, "manifest": manifest.model_dump(mode="json"),
            "methods": [m.to_json() for m in methods], "seeds": list(seeds), "model": settings["model"]["source"],
            "family": family, "device": device, "overrides": overrides or {}, "processes": procs.world,
            "appearance_models": {"clip": clip, "dino": dino},
            "configs": {m.name: m.config(settings).model_dump(mode="json") for m in methods},
            "tuning_from": sources,
            "items": [i.key for i in items],
        }
        atomic_write_text(out / "suite.json", json.dumps(jsonable(suite), indent=1))
    with procs.single_process_env():
        _run_items(shard(items, procs.rank, procs.world, sources), manifest, {m.name: m for m in methods}, settings,
                   out, procs, appearance, sources)
    procs.barrier()
    if procs.rank == 0:
        merge_results(out, items)
    return out / "results.jsonl"


def _run_items(items: list[WorkItem], manifest: Manifest, methods: dict[str, Method], settings: dict, out: Path,
               procs: Processes, appearance: AppearanceModels, sources: dict[str, str]) -> None:
    """Run `items` unit by unit ((case, method): one run directory); `sources`: method -> the earlier method
    whose tuning it reuses (``reuse.tuning_sources``), whose unit ``shard`` keeps on this process, before it."""
    bar = tqdm(total=len(items), desc=f"bench {procs.rank + 1}/{procs.world}" if procs.world > 1 else "bench",
               unit="result", position=procs.rank if procs.world > 1 else None)
    references: dict = {}
    try:
        for unit in dict.fromkeys((i.case, i.method) for i in items):
            unit_items = [i for i in items if (i.case, i.method) == unit]
            pending = [i for i in unit_items if not result_path(out, i).exists()]
            case, method = manifest.case(unit[0]), methods[unit[1]]
            for item in unit_items:
                if item not in pending:
                    check_finished(result_path(out, item), method.config(settings), item.seed, appearance.metrics)
            bar.update(len(unit_items) - len(pending))
            if not pending:
                continue
            ref = case_reference(out, case, method.config(settings), references)
            cfg = _unit_config(settings, method, case, ref.path)
            run_dir = out / "cases" / case.id / method.name
            source = sources.get(method.name)
            if source is not None and not reuse_tuning(out / "cases" / case.id / source, run_dir, source, cfg):
                source = None
            for item in pending:
                bar.set_postfix_str(item.key)
                generated = run_transfer(cfg, run_dir, method.tune, item.prompt, item.seed, item.sample)
                record = build_record(item, case, method, cfg, generated, ref, out, procs, appearance, source)
                write_result(out, item, record)
                bar.update(1)
    finally:
        close_jobs()
        bar.close()
