"""The metrics shown under a result: ground-truth trajectory fidelity and colour leak when the clip is a
ShapesWorld one (the toy model, both prompts naming a colour), motion fidelity with the offline KLT tracker
otherwise. A metric that cannot be computed says why instead of failing the job."""

from __future__ import annotations

import math

import numpy as np

from ..bench.score import score_pair
from ..config import TransferConfig
from ..errors import InputError
from ..toyworld.metrics import colour_of, transfer_metrics

# key -> (label, how to read it), in the order they are shown
LABELS = {
    "centred_error": ("Trajectory error", "centred path distance / frame size; 0 = the reference's path"),
    "static_baseline_error": ("Static baseline error", "the same for an object that never moves"),
    "displacement_cosine": ("Direction agreement", "mean cosine of per-frame steps; 1 = same directions"),
    "target_found_frames": ("Target found in frames", "frames where the target colour is seen"),
    "reference_colour_leaked": ("Reference colour leaked", "the reference's colour appears in the result"),
    "motion_fidelity_det": ("Motion fidelity (DeT)", "KLT tracks of result vs reference; 1 = same motion"),
    "motion_fidelity_dmt": ("Motion fidelity (DMT)", "KLT tracks, pixel units; 1 = same motion"),
}


def _finite(value: object) -> object:
    """NaN as None, so the metrics are strict JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def shapesworld_colours(cfg: TransferConfig, prompt: str) -> tuple[str, str] | None:
    """(reference colour, target colour) when the run is a ShapesWorld transfer on the toy model, else None."""
    if cfg.model.source is not None:
        return None
    try:
        return colour_of(cfg.prompt), colour_of(prompt)
    except InputError:
        return None


def result_metrics(cfg: TransferConfig, reference: np.ndarray, result: np.ndarray, prompt: str) -> dict:
    """{"kind": "shapesworld" | "tracker", metric: value, ..., "errors": {metric: why}}."""
    colours = shapesworld_colours(cfg, prompt)
    if colours is not None:
        found = transfer_metrics(reference, colours[0], result, colours[1])
        metrics = {k: _finite(v) for k, v in found.items() if k in LABELS}
        return {"kind": "shapesworld", "reference_colour": colours[0], "target_colour": colours[1], **metrics,
                "errors": {}}
    try:
        scored = score_pair(reference, result, "klt", record_errors=True)
    except (ValueError, RuntimeError) as err:
        return {"kind": "tracker", "errors": {"motion_fidelity": str(err)}}
    out: dict = {"kind": "tracker", "errors": {}}
    for key in ("motion_fidelity_det", "motion_fidelity_dmt"):
        out[key] = _finite(scored[key]["score"])
        if scored[key].get("error"):
            out["errors"][key] = scored[key]["error"]
    return out


def metrics_markdown(metrics: dict) -> str:
    """The metrics as a small Markdown table for the page."""
    if not metrics:
        return ""
    title = ("ShapesWorld ground truth (trajectory of the target-coloured object)" if metrics["kind"] == "shapesworld"
             else "Motion fidelity with the offline KLT tracker")
    rows = ["| metric | value | meaning |", "|---|---|---|"]
    for key, (label, meaning) in LABELS.items():
        if key not in metrics:
            continue
        value = metrics[key]
        shown = ("yes" if value else "no") if isinstance(value, bool) else (
            "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value))
        rows.append(f"| {label} | {shown} | {meaning} |")
    notes = [f"- {key}: {why}" for key, why in metrics.get("errors", {}).items()]
    return "\n".join([f"**{title}**", "", *rows, *([""] + notes if notes else [])])
