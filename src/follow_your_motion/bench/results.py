"""Result records of a benchmark run: one JSON per work item, checked on resume and merged at the end.

``out/results/<case>__<method>__p<k>__s<seed>.json`` (``result_path``, written atomically) holds one result;
``out/results.jsonl`` (``merge_results``) every result of the suite, one per line, in suite order.

Result JSON (``SCHEMA``; NaN is written as null)::

    schema            "fym-bench-result/1"
    case, category, tags, method, tuned (bool: the method trains LoRAs)
    tuning_from       null, or the method whose tuning of this case the result sampled from (``reuse``: it differs
                      only in sampling settings); its classify/spatial/motion timings are that tuning's
    prompt_index, prompt, source_prompt, seed
    metrics           flat, every value a number, bool or null:
      motion_fidelity_det, motion_fidelity_dmt    bench.score.score_pair on KLT tracks of the reference vs
                                                  the result (what ``fym metrics`` reports)
      result_tracks_complete                      fraction of the result's tracks followed through every
                                                  frame (near 0: no coherent motion found, scores say little)
      motion_fidelity_det_tracks, ..._dmt_tracks  only for cases with a ``tracks`` file: those reference
                                                  tracks vs KLT tracks of the result
      text_similarity, text_similarity_x100,      only when the run was given --clip (text similarity and
      temporal_consistency_clip                   CLIP temporal consistency) / --dino (DINO temporal
      temporal_consistency_dino                   consistency): bench.score.score_appearance of the result
      centred_error, static_baseline_error, displacement_cosine, colour_leak, target_found_frames,
      target_shape_ok                             ShapesWorld ground truth (toyworld.metrics), or for a video
                                                  case with an object_rgb its shade's (bench.shade_truth); null
                                                  otherwise;
                                                  means over the reference objects (colour_leak: any,
                                                  target_found_frames: min, target_shape_ok: all judged
                                                  objects drawn as the prompt's shape by fill ratio)
      background_leak, object_colour_leak         ShapesWorld: the reference's appearance the prompt leaves out
                                                  found in the result (toyworld.leakage); null where none can
                                                  leak (black background / every colour named) or otherwise
      frames                                      frame count of the result
    ground_truth      null, or {"objects": [per object: reference, reference_colour, target_colour and the
                      toyworld.metrics.transfer_metrics fields], "leakage": toyworld.leakage.leakage_metrics}
    metric_errors     {metric: message} for scores that could not be computed (value null in metrics)
    timings           seconds: classify, spatial, motion (null when not run: untuned method, stage off; a
                      reused tuning's own), generate (sampling alone), metrics
    memory            ru_maxrss_kib (process peak RSS so far), cuda_max_allocated_bytes (peak over the
                      tuning stages and this generation; null without CUDA)
    paths             relative to out: reference, result, side_by_side, run; reference_source: the
                      case's original video (absolute) or null for ShapesWorld
    video             result and reference shapes [T, H, W], fps
    constants         tracker, motion_fidelity_det, motion_fidelity_dmt (their constants as score_pair
                      records them), the appearance metrics computed (model, preprocessing, embedding),
                      ground_truth (ShapesWorld or object_rgb cases: tolerances, pairing), scored_frames
    config            the run's TransferConfig (generate.seed = seed)
    device, process {rank, world, pid}, created (unix time)
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TransferConfig
from ..errors import InputError
from ..run_settings import flatten
from ..runs import atomic_write_text
from .manifest import Case, load_tracks
from .methods import Method
from .references import CaseReference, write_seen_reference
from .result_metrics import (
    GROUND_TRUTH_CONSTANTS,
    AppearanceModels,
    flat_ground_truth,
    ground_truth_scores,
    motion_scores,
)
from .score import APPEARANCE_MODELS
from .shade_truth import CONSTANTS as SHADE_CONSTANTS
from .shade_truth import shade_ground_truth
from .sharding import Processes, WorkItem
from .transfer_call import Generated

SCHEMA = "fym-bench-result/1"
IGNORED_SETTINGS = ("reference", "prompt", "target_prompt", "model.device", "model.offload")
"""Settings a finished result may differ in from the current run (the data may move, the device change)."""


def result_path(out: Path, item: WorkItem) -> Path:
    return Path(out) / "results" / f"{item.key}.json"


def jsonable(value: Any) -> Any:
    """Plain JSON: NaN/inf -> null, numpy -> Python, tuples -> lists, paths -> strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating | float):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_result(out: Path, item: WorkItem, record: dict) -> Path:
    return atomic_write_text(result_path(out, item), json.dumps(jsonable(record), indent=1))


def check_finished(path: Path, cfg: TransferConfig, seed: int, appearance: Sequence[str] = ()) -> None:
    """Refuse to count a finished result made with other settings, or other `appearance` metrics (the ones this
    run computes), as part of this run."""

    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{path}: unreadable result ({err}); delete it to recompute") from err
    scored = [k for k in APPEARANCE_MODELS if k in (record.get("metrics") or {})]
    if scored != list(appearance):
        raise InputError(f"{path} was scored with appearance metrics: {', '.join(scored) or 'none'}; this run asks "
                         f"for: {', '.join(appearance) or 'none'} (--clip / --dino); use another --out or delete the "
                         "old results")
    old = flatten(record.get("config") or {})
    new = flatten(jsonable(cfg.model_dump(mode="json")))
    new["generate.seed"] = seed
    # a setting added since the result was made changes nothing at its default (what every run did before it)
    defaults = flatten(jsonable(type(cfg)().model_dump(mode="json")))
    diffs = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in new.items() if k not in IGNORED_SETTINGS and old.get(k) != v
             and not (k not in old and v == defaults.get(k))]
    if diffs:
        raise InputError(f"{path} was made with other settings ({'; '.join(diffs[:3])}); "
                         "use another --out or delete the old results")


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


def build_record(item: WorkItem, case: Case, method: Method, cfg: TransferConfig, gen: Generated,
                 ref: CaseReference, out: Path, procs: Processes, appearance: AppearanceModels,
                 tuning_from: str | None = None) -> dict:
    """Score one generated result and assemble its record (``SCHEMA``); `tuning_from`: the method whose tuning
    it reused, if any."""
    began = time.perf_counter()
    result = np.asarray(gen.frames)
    exact = ref.frames is not None and ref.frames.shape == np.asarray(gen.reference).shape
    reference = ref.frames if exact else np.asarray(gen.reference)
    given = load_tracks(case.tracks) if case.tracks else None
    scores, constants, errors = motion_scores(reference, result, given)
    app_scores, app_constants, app_errors = appearance.scores(result, item.prompt)
    scores, constants, errors = scores | app_scores, constants | app_constants, errors | app_errors
    gt = None
    shade = None if ref.scene is not None else case.object_rgb
    if ref.scene is not None or shade is not None:
        try:
            gt = (ground_truth_scores(ref.scene, reference, result, item.prompt) if shade is None
                  else shade_ground_truth(shade, case.caption, reference, result, item.prompt))
        except ValueError as err:
            errors["ground_truth"] = str(err)
        constants["ground_truth"] = dict(GROUND_TRUTH_CONSTANTS) if shade is None else dict(SHADE_CONSTANTS)
    constants["scored_frames"] = (
        "raw generated frames (before video encoding) vs the reference "
        + ("as rendered" if exact else "as the model saw it (decoded, fitted to the run's size)")
    )
    ref_video = ref.path if ref.scene is not None else write_seen_reference(out, case, gen.reference, gen.fps)
    config = cfg.model_dump(mode="json")
    config["generate"]["seed"] = item.seed
    return {
        "schema": SCHEMA,
        "case": case.id, "category": case.category, "tags": case.tags,
        "method": method.name, "tuned": method.tune, "tuning_from": tuning_from,
        "prompt_index": item.prompt_index, "prompt": item.prompt, "source_prompt": case.caption, "seed": item.seed,
        "metrics": scores | flat_ground_truth(gt) | {"frames": int(len(result))},
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
