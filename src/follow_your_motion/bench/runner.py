"""Run a benchmark suite: every (case, target prompt, method, seed) transferred, scored and recorded.

Layout of ``out``::

    suite.json                          the resolved manifest, methods, settings (written by the main process)
    references/<case>-<T>x<H>x<W>.mp4   the reference as the model sees it (ShapesWorld: rendered here)
    cases/<case>/<method>/              one Transfer run directory per case x method (resumable stages);
                                        samples/p<k>_s<seed>.mp4 per target prompt k and seed
    results/<case>__<method>__p<k>__s<seed>.json   one result per work item (written atomically)
    results.jsonl                       every result of the suite, one per line, merged at the end

A result whose JSON exists is never recomputed (it must have been made with the same settings, apart from
IGNORED_SETTINGS, or the run stops with an error); a killed run is simply started again (Transfer resumes its
own stages from their checkpoints). Generation seeds are the given ``seeds``; training seeds come from the
config, so everything is deterministic.

Result JSON (``SCHEMA``; NaN is written as null)::

    schema            "fym-bench-result/1"
    case, category, tags, method, tuned (bool: the method trains LoRAs)
    prompt_index, prompt, source_prompt, seed
    metrics           flat, every value a number, bool or null:
      motion_fidelity_det, motion_fidelity_dmt    bench.score.score_pair on KLT tracks of the reference vs
                                                  the result (what ``fym metrics`` reports)
      result_tracks_complete                      fraction of the result's tracks followed through every
                                                  frame (near 0: no coherent motion found, scores say little)
      motion_fidelity_det_tracks, ..._dmt_tracks  only for cases with a ``tracks`` file: those reference
                                                  tracks vs KLT tracks of the result
      centred_error, static_baseline_error, displacement_cosine, colour_leak, target_found_frames
                                                  ShapesWorld ground truth (toyworld.metrics), null otherwise;
                                                  means over the reference objects (colour_leak: any,
                                                  target_found_frames: min)
      frames                                      frame count of the result
    ground_truth      null, or {"objects": [per object: reference, reference_colour, target_colour and the
                      toyworld.metrics.transfer_metrics fields]}
    metric_errors     {metric: message} for scores that could not be computed (value null in metrics)
    timings           seconds: classify, spatial, motion (null when not run: untuned method, stage off),
                      generate, metrics
    memory            ru_maxrss_kib (process peak RSS so far), cuda_max_allocated_bytes (peak over the
                      tuning stages and this generation; null without CUDA)
    paths             relative to out: reference, result, side_by_side, run; reference_source: the
                      case's original video (absolute) or null for ShapesWorld
    video             result and reference shapes [T, H, W], fps
    constants         tracker, motion_fidelity_det, motion_fidelity_dmt (their constants as score_pair
                      records them), ground_truth (ShapesWorld only: tolerances, pairing), scored_frames
    config            the run's TransferConfig (generate.seed = seed)
    device, process {rank, world, pid}, created (unix time)

Sharding: under torchrun / accelerate launch with N processes, the (case, method) run directories are
dealt out by process index, method by method (see ``shard``), so each work item runs exactly once and no
run directory is shared. Each process then runs its Transfers as a single process: ``Transfer`` trains with
DDP whenever accelerate sees several processes, which would deadlock when processes work on different
items, so the launcher's RANK/WORLD_SIZE/LOCAL_RANK variables are hidden from accelerate while items run
(``device="cuda"`` becomes ``cuda:<local rank>``). At the end a gloo barrier waits for every process and
the main process merges the per-result JSONs into results.jsonl.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..config import RECIPES, TransferConfig, merge
from ..runs import atomic_write_text
from ..toyworld import render as sw
from ..toyworld.metrics import MIN_STEP, transfer_metrics
from ..video import write_video
from .manifest import Case, Manifest, load_tracks, resolve_manifest
from .methods import Method, get_methods
from .metrics.motion import DET_GRID, DMT_GRID, motion_fidelity_det, motion_fidelity_dmt
from .trackers import Tracks, get_tracker

SCHEMA = "fym-bench-result/1"
SUITE_SCHEMA = "fym-bench-suite/1"
REFERENCE_FPS = 8.0  # rendered ShapesWorld references (as toyworld.examples)
TRACKER = "klt"
COLOUR_TOLERANCE, MIN_PIXELS = 40, 3  # toyworld.render.track_colour defaults, as transfer_metrics uses them
STAGE_STATS = "bench_stages.json"  # per run directory: seconds and CUDA peak of each tuning stage
DIST_ENV = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
    "ROLE_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE",
)


# ------------------------------------------------------------------------------------------- work items


@dataclass(frozen=True)
class WorkItem:
    case: str
    method: str
    prompt_index: int
    prompt: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.case}__{self.method}__p{self.prompt_index}__s{self.seed}"

    @property
    def sample(self) -> str:
        """The sample name in the run directory (samples/<sample>.mp4)."""
        return f"p{self.prompt_index}_s{self.seed}"


def work_items(manifest: Manifest, methods: Sequence[Method], seeds: Sequence[int]) -> list[WorkItem]:
    """Every item of the suite, grouped by (case, method) in manifest and method order."""
    return [
        WorkItem(case.id, method.name, k, prompt, seed)
        for case in manifest.cases
        for method in methods
        for k, prompt in enumerate(case.targets)
        for seed in seeds
    ]


def result_path(out: Path, item: WorkItem) -> Path:
    return Path(out) / "results" / f"{item.key}.json"


def shard(items: Sequence[WorkItem], rank: int, world: int) -> list[WorkItem]:
    """This process's items: whole (case, method) units (a run directory is never shared), dealt out round
    robin method by method, so each process gets its share of every method's (differently costly) units."""
    methods = list(dict.fromkeys(i.method for i in items))
    units = sorted(dict.fromkeys((i.case, i.method) for i in items), key=lambda u: methods.index(u[1]))
    mine = {u for n, u in enumerate(units) if n % world == rank}
    return [i for i in items if (i.case, i.method) in mine]


# ------------------------------------------------------------------------------------- the transfer call


@dataclass
class Generated:
    """What one generation gives the runner (the seam tests replace with a fake)."""

    frames: np.ndarray  # (T, H, W, 3) uint8, the result
    reference: np.ndarray  # (T, H, W, 3) uint8, the reference as the model saw it
    fps: float
    paths: dict[str, Path]  # "video" (required), "side_by_side", ...
    timings: dict[str, float | None] = field(default_factory=dict)  # classify, spatial, motion, generate
    cuda_peak_bytes: int | None = None


_OPEN: dict[str, Any] = {}  # the one open Transfer (its backbone stays loaded between items of a unit)


def close_jobs() -> None:
    """Drop the open Transfer and free its memory."""
    if _OPEN:
        _OPEN.clear()
        gc.collect()
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()


def _cuda_reset() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak() -> int | None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    return None


def _tune(job: Any, tune: bool) -> dict:
    """Run the tuning stages that are not complete yet, adding their time to the run's stage record.

    A stage cut short by a kill is not recorded; its resumed run records only what it still had to do."""
    path = job.run.path(STAGE_STATS)
    stats = json.loads(path.read_text()) if path.exists() else {}
    if not tune:
        return stats
    cfg = job.cfg
    stages = []
    if cfg.heads.select == "classified":
        stages.append(("classify", job.run.heads, job.classify))
    if cfg.spatial.steps:
        stages.append(("spatial", job.run.lora("spatial"), job.tune_spatial))
    stages.append(("motion", job.run.lora("motion"), job.tune_motion))
    for name, artifact, stage in stages:
        if artifact.exists():
            continue
        _cuda_reset()
        began = time.perf_counter()
        stage()
        old = stats.get(name, {})
        peaks = [p for p in (old.get("cuda_peak_bytes"), _cuda_peak()) if p is not None]
        stats[name] = {
            "seconds": old.get("seconds", 0.0) + time.perf_counter() - began,
            "cuda_peak_bytes": max(peaks) if peaks else None,
            "attempts": old.get("attempts", 0) + 1,
        }
        atomic_write_text(path, json.dumps(stats, indent=1))
    return stats


def run_transfer(cfg: TransferConfig, run_dir: Path, tune: bool, prompt: str, seed: int, name: str) -> Generated:
    """Tune (when `tune`; resuming or reusing the stages in `run_dir`) and generate `prompt` with `seed` as
    samples/<name>.mp4. The Transfer stays open for the next call with the same run directory."""
    key = (str(Path(run_dir).resolve()), cfg.model_dump_json())
    if _OPEN.get("key") != key:
        close_jobs()
        from ..transfer import Transfer

        job = Transfer(cfg, Path(run_dir))
        _OPEN.update(key=key, job=job, stats=_tune(job, tune))
    job, stats = _OPEN["job"], _OPEN["stats"]
    settings = cfg.generate.model_copy(update={"seed": seed})
    _cuda_reset()
    began = time.perf_counter()
    sample = job.generate(prompt, settings, name)
    seconds = time.perf_counter() - began
    ref = job.reference()
    peaks = [s.get("cuda_peak_bytes") for s in stats.values()] + [_cuda_peak()]
    peaks = [p for p in peaks if p is not None]
    timings = {s: stats[s]["seconds"] if s in stats else None for s in ("classify", "spatial", "motion")}
    return Generated(
        frames=sample.frames, reference=ref.frames, fps=ref.fps, paths=dict(sample.paths),
        timings=timings | {"generate": seconds}, cuda_peak_bytes=max(peaks) if peaks else None,
    )


# ------------------------------------------------------------------------------------------------ metrics


def colours_in(prompt: str) -> list[str]:
    """The colour words of a prompt, in order."""
    return [w for w in prompt.lower().replace(",", " ").split() if w in sw.COLOURS]


def _complete_only(tracks: Tracks) -> np.ndarray:
    """Visibility keeping only tracks known in every frame (all known positions when none is complete), the
    filter ``bench.score`` applies."""
    known = np.isfinite(tracks.points).all(axis=2)
    complete = known.all(axis=1)
    return known & complete[:, None] if complete.any() else known


def _one_definition(reference: np.ndarray, result: np.ndarray, name: str) -> tuple[float, dict]:
    """One motion-fidelity definition computed the way ``bench.score.score_pair`` computes it (result fitted to
    the reference's size, complete tracks only, DeT's frame alignment for DMT), for when the other
    definition cannot be computed and score_pair, which computes both, raises."""
    from ..video import resize_center_crop

    height, width = reference.shape[1:3]
    if result.shape[1:3] != (height, width):
        result = resize_center_crop(result, height, width)
    grid = DET_GRID if name == "det" else DMT_GRID
    track = get_tracker(TRACKER)
    ref, gen = track(reference, grid=grid), track(result, grid=grid)
    ref_points, ref_use, gen_points, gen_use = ref.points, _complete_only(ref), gen.points, _complete_only(gen)
    if name == "det":
        mf = motion_fidelity_det(ref_points, gen_points, size=(height, width), ref_visible=ref_use,
                                 gen_visible=gen_use)
    else:
        n = min(ref_points.shape[1], gen_points.shape[1])
        ref_idx = np.linspace(0, ref_points.shape[1] - 1, n).astype(np.int64)
        gen_idx = np.linspace(0, gen_points.shape[1] - 1, n).astype(np.int64)
        mf = motion_fidelity_dmt(ref_points[:, ref_idx], gen_points[:, gen_idx], ref_visible=ref_use[:, ref_idx],
                                 gen_visible=gen_use[:, gen_idx])
    constants = mf.constants | {"grid_used": grid, "tracker_used": ref.tracker, "tracker_constants": ref.constants,
                                "tracks_scored": int(mf.per_track.size)}
    return mf.score, constants


def _complete_fraction(tracks: dict) -> float | None:
    """Fraction of the result's tracks known in every frame, from score_pair's ``complete_tracks`` record."""
    kept = tracks.get("complete_tracks") or {}
    found, total = kept.get("output"), kept.get("of")
    if not isinstance(total, int) or not total:
        return None
    return found / total if isinstance(found, int) else 0.0


def motion_scores(
    reference: np.ndarray, result: np.ndarray, given: tuple[np.ndarray, np.ndarray | None] | None = None
) -> tuple[dict, dict, dict]:
    """Motion fidelity (DeT and DMT definitions) of `result` against `reference`: ``bench.score.score_pair``
    on KLT tracks of both, exactly what ``fym metrics`` reports (when one definition is undefined, e.g. DMT
    for a result whose tracks are all lost after the first frame, the other is still computed). Also
    ``result_tracks_complete``: the fraction of the result's DeT-grid tracks followed through every frame
    (near 0: the tracker found no coherent motion and the scores say little). With `given` reference tracks
    (a case's ``tracks`` file) also ``motion_fidelity_det_tracks`` / ``motion_fidelity_dmt_tracks``: those
    tracks against KLT tracks of the result (DMT without the identity quirk: the sets are not index-aligned).

    Returns (scores, constants, errors); a score that cannot be computed is None, its reason in errors."""
    from .score import score_pair

    keys = ("motion_fidelity_det", "motion_fidelity_dmt")
    scores: dict[str, float | None] = dict.fromkeys((*keys, "result_tracks_complete"))
    constants: dict[str, Any] = {"tracker": {"name": TRACKER, "via": "bench.score.score_pair"}}
    errors: dict[str, str] = {}
    try:
        pair = score_pair(reference, result, TRACKER)
    except ValueError:
        for key in keys:
            try:
                scores[key], constants[key] = _one_definition(reference, result, key.rsplit("_", 1)[1])
            except ValueError as err:
                errors[key] = str(err)
        gen = get_tracker(TRACKER)(result, grid=DET_GRID)
        scores["result_tracks_complete"] = float(np.isfinite(gen.points).all(axis=(1, 2)).mean())
    else:
        for key in keys:
            scores[key] = pair[key]["score"]
            constants[key] = pair[key]["constants"] | {"tracks_scored": pair[key]["tracks_scored"]}
        scores["result_tracks_complete"] = _complete_fraction(pair["motion_fidelity_det"]["constants"])
        constants["tracker"] |= {"size_hw": pair["size_hw"], "output_resize": pair["output_resize"],
                                 "dmt_frame_alignment": pair["dmt_frame_alignment"]}
    if given is None:
        return scores, constants, errors
    ref_points, ref_visible = given
    height, width = result.shape[1:3]
    for name, grid in (("det", DET_GRID), ("dmt", DMT_GRID)):
        key = f"motion_fidelity_{name}_tracks"
        gen = get_tracker(TRACKER)(result, grid=grid)
        try:
            if name == "det":
                mf = motion_fidelity_det(ref_points, gen.points, size=(height, width), ref_visible=ref_visible,
                                         gen_visible=_complete_only(gen))
            else:
                mf = motion_fidelity_dmt(ref_points, gen.points, ref_visible=ref_visible,
                                         gen_visible=_complete_only(gen), identity_quirk=False)
        except ValueError as err:
            scores[key], errors[key] = None, str(err)
            continue
        scores[key] = mf.score
        constants[key] = mf.constants | {"grid_used": grid, "reference_tracks": "the case's tracks file"}
    return scores, constants, errors


def ground_truth_scores(scene: sw.SceneSpec, reference: np.ndarray, result: np.ndarray, prompt: str) -> dict:
    """ShapesWorld trajectory metrics per reference object, the i-th object paired with the i-th colour named
    in `prompt`. Raises ValueError when they cannot be computed."""
    targets = colours_in(prompt)
    if not targets:
        raise ValueError(f"target prompt {prompt!r} names no colour (known: {', '.join(sw.COLOURS)})")
    if len(reference) != len(result):
        raise ValueError(f"reference has {len(reference)} frames, result {len(result)}: paths not comparable")
    objects = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of a track that is never found
        for obj, colour in zip(scene.objects, targets, strict=False):
            scores = transfer_metrics(reference, obj.colour, result, colour)
            objects.append({"reference": obj.name, "reference_colour": obj.colour, "target_colour": colour, **scores})
    return {"objects": objects}


def _mean(values: list) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else None


def _flat_ground_truth(gt: dict | None) -> dict:
    if gt is None:
        return dict.fromkeys(("centred_error", "static_baseline_error", "displacement_cosine", "colour_leak",
                              "target_found_frames"))
    objs = gt["objects"]
    return {
        "centred_error": _mean([o["centred_error"] for o in objs]),
        "static_baseline_error": _mean([o["static_baseline_error"] for o in objs]),
        "displacement_cosine": _mean([o["displacement_cosine"] for o in objs]),
        "colour_leak": any(o["reference_colour_leaked"] for o in objs),
        "target_found_frames": min(o["target_found_frames"] for o in objs),
    }


# ---------------------------------------------------------------------------------------------- records


def _jsonable(value: Any) -> Any:
    """Plain JSON: NaN/inf -> null, numpy -> Python, tuples -> lists, paths -> strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _relative(path: Path | None, out: Path) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        return str(Path(path).resolve())


def _memory(cuda_peak: int | None) -> dict:
    try:
        import resource

        rss = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    except ImportError:  # pragma: no cover - not on Linux/macOS
        rss = None
    return {"ru_maxrss_kib": rss, "cuda_max_allocated_bytes": cuda_peak}


def _shape(frames: np.ndarray) -> list[int]:
    return [int(x) for x in frames.shape[:3]]


# --------------------------------------------------------------------------------------------- settings


def base_settings(model: str | None, device: str, overrides: dict | None) -> tuple[dict, str]:
    """Recipe of the model's family, the user's overrides, then model source and device: (settings, family)."""
    overrides = dict(overrides or {})
    source = model if model is not None else (overrides.get("model") or {}).get("source")
    if source is None:
        family = "toy"
    else:
        from ..backbones import detect_family

        family = detect_family(source)
    settings = merge(merge(RECIPES.get(family, {}), overrides), {"model": {"source": source, "device": device}})
    TransferConfig.model_validate(settings)  # bad overrides fail before any work
    return settings, family


def _unit_config(settings: dict, method: Method, case: Case, reference: Path) -> TransferConfig:
    data = merge(method.config(settings).model_dump(), {"reference": str(reference), "prompt": case.caption,
                                                        "target_prompt": None})
    return TransferConfig.model_validate(data)


@dataclass
class _Reference:
    path: Path  # what Transfer reads
    scene: sw.SceneSpec | None = None  # ShapesWorld: the scene at the run's size
    frames: np.ndarray | None = None  # ShapesWorld: exact rendered frames


def _reference(out: Path, case: Case, cfg: TransferConfig, cache: dict) -> _Reference:
    """The case's reference video; ShapesWorld cases are rendered at the run's video settings (once)."""
    spec = case.shapesworld
    if spec is None:
        return _Reference(Path(str(case.reference)))
    v = cfg.video
    scene = spec.scene(v.frames, v.height, v.width)
    key = (case.id, scene)
    if key not in cache:
        try:
            clip = sw.render(scene)
        except ValueError as err:
            raise ValueError(f"case {case.id!r}: cannot render its ShapesWorld reference ({err})") from err
        path = out / "references" / f"{case.id}-{scene.num_frames}x{scene.height}x{scene.width}.mp4"
        if not path.exists():
            write_video(path, clip.frames, REFERENCE_FPS)
        cache[key] = _Reference(path, scene, clip.frames)
    return cache[key]


# ----------------------------------------------------------------------------------------- distribution


@dataclass(frozen=True)
class _Processes:
    rank: int
    world: int
    local_rank: int

    @classmethod
    def from_env(cls) -> _Processes:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        return cls(rank, world, int(os.environ.get("LOCAL_RANK", str(rank))))

    @contextlib.contextmanager
    def single_process_env(self) -> Iterator[None]:
        """Hide the launcher's variables from accelerate while this process runs its own items."""
        if self.world == 1:
            yield
            return
        from accelerate.state import PartialState

        if PartialState._shared_state and PartialState._shared_state.get("num_processes", 1) > 1:
            raise RuntimeError(
                "run_suite shards work items over processes itself, but accelerate's distributed state is already "
                "initialised in this process (Transfer would train with DDP across processes that run different "
                "items); call run_suite before anything creates PartialState/Accelerator"
            )
        saved = {k: os.environ.pop(k) for k in DIST_ENV if k in os.environ}
        try:
            yield
        finally:
            os.environ.update(saved)

    def barrier(self) -> None:
        """Wait for every process (gloo), e.g. before the main process merges the results."""
        if self.world == 1:
            return
        import torch.distributed as dist

        created = not dist.is_initialized()
        if created:  # processes may finish hours apart: the rendezvous has to wait that long
            dist.init_process_group("gloo", timeout=timedelta(days=7))
        try:
            dist.barrier()
        finally:
            if created:
                dist.destroy_process_group()


def _device(device: str, procs: _Processes) -> str:
    if procs.world > 1 and device == "cuda":
        import torch

        torch.cuda.set_device(procs.local_rank)
        return f"cuda:{procs.local_rank}"
    return device


# -------------------------------------------------------------------------------------------- the suite


def merge_results(out: Path, items: Sequence[WorkItem]) -> Path:
    """Write results.jsonl from the items' result JSONs (in suite order); missing ones are left out."""
    out = Path(out)
    lines, missing = [], []
    for item in items:
        path = result_path(out, item)
        if path.exists():
            lines.append(json.dumps(json.loads(path.read_text())))
        else:
            missing.append(item.key)
    if missing:
        warnings.warn(f"{len(missing)} result(s) missing from {out / 'results.jsonl'}: {', '.join(missing[:5])}",
                      stacklevel=2)
    return atomic_write_text(out / "results.jsonl", "".join(line + "\n" for line in lines))


def run_suite(
    manifest: Manifest | str | Path,
    methods: str | Sequence[str | Method],
    out: str | Path,
    model: str | None = None,
    device: str = "cpu",
    overrides: dict | None = None,
    seeds: Sequence[int] = (0,),
) -> Path:
    """Run every (case, target prompt, method, seed) not already done; return the path of results.jsonl.

    `manifest`: a Manifest, a YAML path, a folder (see ``manifest.resolve_manifest``) or "shapesworld".
    `overrides`: TransferConfig settings applied on the model family's recipe, under each method's own."""
    manifest = resolve_manifest(manifest)
    methods = get_methods(methods)
    seeds = tuple(dict.fromkeys(int(s) for s in seeds))
    if not seeds:
        raise ValueError("no seeds given")
    out = Path(out)
    procs = _Processes.from_env()
    device = _device(device, procs)
    settings, family = base_settings(model, device, overrides)
    items = work_items(manifest, methods, seeds)
    if procs.rank == 0:
        suite = {
            "schema": SUITE_SCHEMA, "manifest": manifest.model_dump(mode="json"),
            "methods": [m.to_json() for m in methods], "seeds": list(seeds), "model": settings["model"]["source"],
            "family": family, "device": device, "overrides": overrides or {}, "processes": procs.world,
            "configs": {m.name: m.config(settings).model_dump(mode="json") for m in methods},
            "items": [i.key for i in items],
        }
        atomic_write_text(out / "suite.json", json.dumps(_jsonable(suite), indent=1))
    with procs.single_process_env():
        _run_items(shard(items, procs.rank, procs.world), manifest, {m.name: m for m in methods}, settings, out,
                   procs)
    procs.barrier()
    if procs.rank == 0:
        merge_results(out, items)
    return out / "results.jsonl"


def _run_items(items: list[WorkItem], manifest: Manifest, methods: dict[str, Method], settings: dict, out: Path,
               procs: _Processes) -> None:
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
                    _check_finished(result_path(out, item), method.config(settings), item.seed)
            bar.update(len(unit_items) - len(pending))
            if not pending:
                continue
            ref = _reference(out, case, method.config(settings), references)
            cfg = _unit_config(settings, method, case, ref.path)
            run_dir = out / "cases" / case.id / method.name
            for item in pending:
                bar.set_postfix_str(item.key)
                generated = run_transfer(cfg, run_dir, method.tune, item.prompt, item.seed, item.sample)
                record = _record(item, case, method, cfg, generated, ref, out, procs)
                atomic_write_text(result_path(out, item), json.dumps(_jsonable(record), indent=1))
                bar.update(1)
    finally:
        close_jobs()
        bar.close()


IGNORED_SETTINGS = ("reference", "prompt", "target_prompt", "model.device", "model.offload")
"""Settings a finished result may differ in from the current run (the data may move, the device change)."""


def _flat(data: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _check_finished(path: Path, cfg: TransferConfig, seed: int) -> None:
    """Refuse to count a finished result made with other settings as part of this run."""
    try:
        old = _flat(json.loads(path.read_text()).get("config") or {})
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable result ({err}); delete it to recompute") from err
    new = _flat(_jsonable(cfg.model_dump(mode="json")))
    new["generate.seed"] = seed
    diffs = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in new.items() if k not in IGNORED_SETTINGS and old.get(k) != v]
    if diffs:
        raise ValueError(f"{path} was made with other settings ({'; '.join(diffs[:3])}); "
                         "use another --out or delete the old results")


def _record(item: WorkItem, case: Case, method: Method, cfg: TransferConfig, gen: Generated, ref: _Reference,
            out: Path, procs: _Processes) -> dict:
    began = time.perf_counter()
    result = np.asarray(gen.frames)
    exact = ref.frames is not None and ref.frames.shape == np.asarray(gen.reference).shape
    reference = ref.frames if exact else np.asarray(gen.reference)
    given = load_tracks(case.tracks) if case.tracks else None
    scores, constants, errors = motion_scores(reference, result, given)
    gt = None
    if ref.scene is not None:
        try:
            gt = ground_truth_scores(ref.scene, reference, result, item.prompt)
        except ValueError as err:
            errors["ground_truth"] = str(err)
        constants["ground_truth"] = {
            "colour_tolerance": COLOUR_TOLERANCE, "min_pixels": MIN_PIXELS, "min_step_px": MIN_STEP,
            "pairing": "i-th reference object with the i-th colour word of the target prompt",
            "translation_invariant": True,
        }
    constants["scored_frames"] = (
        "raw generated frames (before video encoding) vs the reference "
        + ("as rendered" if exact else "as the model saw it (decoded, fitted to the run's size)")
    )
    ref_video = ref.path if ref.scene is not None else _write_reference(out, case, gen)
    config = cfg.model_dump(mode="json")
    config["generate"]["seed"] = item.seed
    return {
        "schema": SCHEMA,
        "case": case.id, "category": case.category, "tags": case.tags,
        "method": method.name, "tuned": method.tune,
        "prompt_index": item.prompt_index, "prompt": item.prompt, "source_prompt": case.caption, "seed": item.seed,
        "metrics": scores | _flat_ground_truth(gt) | {"frames": int(len(result))},
        "ground_truth": gt,
        "metric_errors": errors,
        "timings": {k: gen.timings.get(k) for k in ("classify", "spatial", "motion", "generate")}
        | {"metrics": time.perf_counter() - began},
        "memory": _memory(gen.cuda_peak_bytes),
        "paths": {
            "reference": _relative(ref_video, out),
            "reference_source": None if ref.scene is not None else str(case.reference),
            "result": _relative(gen.paths["video"], out),
            "side_by_side": _relative(gen.paths.get("side_by_side"), out),
            "run": _relative(out / "cases" / case.id / method.name, out),
        },
        "video": {"result": _shape(result), "reference": _shape(reference), "fps": gen.fps},
        "constants": constants,
        "config": config,
        "device": cfg.model.device,
        "process": {"rank": procs.rank, "world": procs.world, "pid": os.getpid()},
        "created": time.time(),
    }


def _write_reference(out: Path, case: Case, gen: Generated) -> Path:
    """A video case's reference as the model saw it, once per case and size, for reports."""
    t, h, w = gen.reference.shape[:3]
    path = out / "references" / f"{case.id}-{t}x{h}x{w}.mp4"
    if not path.exists():
        write_video(path, np.asarray(gen.reference), gen.fps)
    return path
