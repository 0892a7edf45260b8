"""The scores of one benchmark result: motion fidelity and appearance (``bench.score``), ShapesWorld ground truth.

Each function returns flat values (a number, bool or None per metric) for the result's ``metrics``, with the
constants that shaped them and, per metric that could not be computed, the reason.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..toyworld import leakage
from ..toyworld import render as sw
from ..toyworld.metrics import FILL_RATIO, MIN_STEP, guess_shape, transfer_metrics
from .score import appearance_metrics, score_appearance, score_pair, score_tracks

TRACKER = "klt"
COLOUR_TOLERANCE, MIN_PIXELS = 40, 3  # toyworld.render.track_colour defaults, as transfer_metrics uses them
GROUND_TRUTH_CONSTANTS = {
    "colour_tolerance": COLOUR_TOLERANCE, "min_pixels": MIN_PIXELS, "min_step_px": MIN_STEP,
    "pairing": "i-th reference object with the i-th colour word of the target prompt",
    "translation_invariant": True,
    "shape_fill_ratio": FILL_RATIO,  # drawn shape = nearest fill ratio, median over frames (toyworld.metrics)
    "clean_background": leakage.CLEAN_BACKGROUND,  # what background_leak is measured against (toyworld.leakage)
}
GROUND_TRUTH_METRICS = (
    "centred_error", "static_baseline_error", "displacement_cosine", "colour_leak", "target_found_frames",
    "target_shape_ok", "background_leak", "object_colour_leak",
)
_DEFINITIONS = ("motion_fidelity_det", "motion_fidelity_dmt")


def _words(prompt: str) -> list[str]:
    return prompt.lower().replace(",", " ").split()


def colours_in(prompt: str) -> list[str]:
    """The colour words of a prompt, in order."""
    return [w for w in _words(prompt) if w in sw.COLOURS]


def shapes_after_colours(prompt: str) -> list[str | None]:
    """Per colour word of a prompt, the word after it if it is a shape the fill ratio can tell
    (``toyworld.metrics.FILL_RATIO``), else None (e.g. "figure")."""
    words = _words(prompt)
    return [(words[i + 1] if i + 1 < len(words) and words[i + 1] in FILL_RATIO else None)
            for i, w in enumerate(words) if w in sw.COLOURS]


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
    """Motion fidelity (DeT and DMT definitions) of `result` against `reference` with ``score_pair`` (what
    ``fym metrics`` reports), the fraction of the result's tracks that are complete, and, for `given`
    reference tracks (points, visibility), both definitions against those (``score_tracks``).

    Returns (scores, constants, errors): a definition that cannot be scored is None with its reason."""
    scores: dict[str, float | None] = dict.fromkeys((*_DEFINITIONS, "result_tracks_complete"))
    constants: dict[str, Any] = {"tracker": {"name": TRACKER, "via": "bench.score.score_pair"}}
    errors: dict[str, str] = {}
    try:
        pair = score_pair(reference, result, TRACKER, record_errors=True)
    except ValueError as err:  # unusable input: neither definition can be scored
        errors |= dict.fromkeys(_DEFINITIONS, str(err))
    else:
        for key in _DEFINITIONS:
            if "error" in pair[key]:
                errors[key] = pair[key]["error"]
                continue
            scores[key] = pair[key]["score"]
            constants[key] = pair[key]["constants"] | {"tracks_scored": pair[key]["tracks_scored"]}
        scores["result_tracks_complete"] = _complete_fraction(pair["motion_fidelity_det"]["constants"])
        constants["tracker"] |= {"size_hw": pair["size_hw"], "output_resize": pair["output_resize"],
                                 "dmt_frame_alignment": pair["dmt_frame_alignment"]}
    if given is None:
        return scores, constants, errors
    for key, entry in score_tracks(*given, result, TRACKER).items():
        key = f"{key}_tracks"
        scores[key] = entry["score"]
        if "error" in entry:
            errors[key] = entry["error"]
        else:
            constants[key] = entry["constants"] | {"reference_tracks": "the case's tracks file"}
    return scores, constants, errors


@dataclass(frozen=True)
class AppearanceModels:
    """The CLIP and DINO models (a directory or cached hub id; None: not given) a run scores appearance with."""

    clip: str | None = None
    dino: str | None = None
    device: str = "cpu"

    @property
    def metrics(self) -> list[str]:
        """The appearance metrics these models give (``score.APPEARANCE_MODELS``)."""
        return appearance_metrics(self.clip, self.dino)

    def load(self) -> None:
        """Load the given models now (they stay cached), so that a missing one fails before any work."""
        from .metrics.encoders import load_clip, load_dino

        if self.clip is not None:
            load_clip(self.clip, self.device)
        if self.dino is not None:
            load_dino(self.dino, self.device)

    def scores(self, result: np.ndarray, prompt: str) -> tuple[dict, dict, dict]:
        """The appearance metrics of `result` (``score_appearance``), flat: each metric of ``metrics`` (and
        ``text_similarity_x100`` with CLIP), None with its reason where it cannot be computed. Nothing at all
        without models, so results scored without them stay as they were.

        Returns (scores, constants, errors) like ``motion_scores``."""
        scores: dict[str, float | None] = {}
        constants: dict[str, Any] = {}
        errors: dict[str, str] = {}
        entries = score_appearance(result, prompt, self.clip, self.dino, self.device, record_errors=True)
        for key in self.metrics:
            entry = entries[key]
            scores[key] = None if entry is None else entry["score"]
            if key == "text_similarity":
                scores["text_similarity_x100"] = None if entry is None else entry["score_x100"]
            if entry is None:
                errors[key] = entries[f"{key}_note"]
            else:
                constants[key] = entry["constants"]
        return scores, constants, errors


def ground_truth_scores(scene: sw.SceneSpec, reference: np.ndarray, result: np.ndarray, prompt: str) -> dict:
    """ShapesWorld trajectory metrics per reference object, the i-th object paired with the i-th colour named
    in `prompt`, and the leakage of the reference's appearance the prompt leaves out (``toyworld.leakage``).
    Raises ValueError when they cannot be computed."""
    targets = colours_in(prompt)
    if not targets:
        raise InputError(f"target prompt {prompt!r} names no colour (known: {', '.join(sw.COLOURS)})")
    if len(reference) != len(result):
        raise InputError(f"reference has {len(reference)} frames, result {len(result)}: paths not comparable")
    objects = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of a track that is never found
        for obj, colour, shape in zip(scene.objects, targets, shapes_after_colours(prompt), strict=False):
            scores = transfer_metrics(reference, obj.colours, result, colour)
            drawn = guess_shape(result, colour)[0]
            shape_ok = None if shape is None or drawn is None else drawn == shape
            objects.append({"reference": obj.name, "reference_colour": obj.colour, "target_colour": colour, **scores,
                            "target_shape": shape, "drawn_shape": drawn, "target_shape_ok": shape_ok})
    return {"objects": objects, "leakage": leakage.leakage_metrics(scene, reference, result, targets)}


def _mean(values: list) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else None


def flat_ground_truth(gt: dict | None) -> dict:
    """The result's ground-truth metrics (``GROUND_TRUTH_METRICS``; None each without ground truth): means over
    the reference objects, ``colour_leak`` if any object leaked, ``target_found_frames`` the least found,
    ``target_shape_ok`` whether every object whose shape can be judged was drawn as the prompt names it, and the
    two leakage scores (None where they do not apply: a black reference background, no colour left unnamed)."""
    if gt is None:
        return dict.fromkeys(GROUND_TRUTH_METRICS)
    objs = gt["objects"]
    return {
        "centred_error": _mean([o["centred_error"] for o in objs]),
        "static_baseline_error": _mean([o["static_baseline_error"] for o in objs]),
        "displacement_cosine": _mean([o["displacement_cosine"] for o in objs]),
        "colour_leak": any(o["reference_colour_leaked"] for o in objs),
        "target_found_frames": min(o["target_found_frames"] for o in objs),
        "target_shape_ok": None if all(o["target_shape_ok"] is None for o in objs)
        else all(o["target_shape_ok"] is not False for o in objs),
        "background_leak": gt["leakage"]["background_leak"],
        "object_colour_leak": gt["leakage"]["object_colour_leak"],
    }
