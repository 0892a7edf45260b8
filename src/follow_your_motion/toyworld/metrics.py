"""Ground-truth trajectory metrics for ShapesWorld clips.

Wan has no absolute position embedding, so where a generated object sits is decided by the noise; only
the shape of its path can be compared. Both metrics are therefore translation-invariant:
  centred_error - mean distance between the two tracks after each is centred on its own mean, as a
                  fraction of the frame size (0 = identical paths);
  displacement_cosine - mean cosine similarity of frame-to-frame displacements, over the steps where
                  the reference moves (1 = same directions; -1 = reversed).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .render import COLOURS, segment_colour, track_colour

MIN_STEP = 0.25  # pixels: a reference step shorter than this counts as "not moving" for the cosine


def centred_error(reference: np.ndarray, generated: np.ndarray, size: float) -> float:
    """Mean distance of centred (T, 2) tracks over frames where both are found, / `size`; NaN if none."""
    both = ~(np.isnan(reference).any(1) | np.isnan(generated).any(1))
    if not both.any():
        return float("nan")
    r, g = reference[both], generated[both]
    return float(np.linalg.norm((g - g.mean(0)) - (r - r.mean(0)), axis=1).mean() / size)


def displacement_cosine(reference: np.ndarray, generated: np.ndarray) -> float:
    """Mean cosine of per-step displacements where the reference moves; NaN if it never does."""
    dr, dg = np.diff(reference, axis=0), np.diff(generated, axis=0)
    moving = np.linalg.norm(dr, axis=1) >= MIN_STEP
    valid = moving & ~(np.isnan(dr).any(1) | np.isnan(dg).any(1))
    if not valid.any():
        return float("nan")
    norm_g = np.linalg.norm(dg[valid], axis=1)
    cos = (dr[valid] * dg[valid]).sum(1) / (np.linalg.norm(dr[valid], axis=1) * np.maximum(norm_g, 1e-8))
    return float(np.where(norm_g > 0, cos, 0.0).mean())


def transfer_metrics(
    reference: np.ndarray, reference_colour: str | tuple[str, ...], result: np.ndarray, target_colour: str
) -> dict[str, float | bool]:
    """Trajectory fidelity of the target-coloured object in `result` against the reference's object,
    and whether the reference's colour leaked into the result. A striped reference object passes all its
    colours (``ObjectSpec.colours``): its track is their union's, and any of them but the target colour leaks."""
    colours = (reference_colour,) if isinstance(reference_colour, str) else tuple(reference_colour)
    ref_track = track_colour(reference, colours)
    gen_track = track_colour(result, target_colour)
    size = float(max(reference.shape[1:3]))
    static = np.repeat(np.nanmean(ref_track, axis=0, keepdims=True), len(ref_track), axis=0)
    others = tuple(c for c in colours if c != target_colour)
    leaked = bool(others) and bool((~np.isnan(track_colour(result, others)).any(1)).any())
    return {
        "centred_error": centred_error(ref_track, gen_track, size),
        "static_baseline_error": centred_error(ref_track, static, size),
        "displacement_cosine": displacement_cosine(ref_track, gen_track),
        "target_found_frames": int((~np.isnan(gen_track).any(1)).sum()),
        "frames": len(result),
        "reference_colour_leaked": leaked,
    }


FILL_RATIO = {"square": 1.0, "circle": 0.81, "triangle": 0.62}  # rendered: circle 0.76-0.89, triangle 0.58-0.67


def guess_shape(frames: np.ndarray, colour: str) -> tuple[str | None, float]:
    """(shape, fill): the shape whose fill ratio (object pixels / bounding-box area, median over the frames
    where the colour has >= 3 pixels) is nearest to the measured one; (None, NaN) if never found."""
    fills = []
    for frame_mask in segment_colour(frames, colour):
        ys, xs = np.nonzero(frame_mask)
        if len(xs) >= 3:
            fills.append(len(xs) / ((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)))
    if not fills:
        return None, float("nan")
    fill = float(np.median(fills))
    return min(FILL_RATIO, key=lambda s: abs(FILL_RATIO[s] - fill)), fill


def size_track(frames: np.ndarray, colour: str, min_pixels: int = 3) -> np.ndarray:
    """(T,) linear size (square root of the pixel count) of `colour` per frame; NaN below `min_pixels`."""
    area = segment_colour(frames, colour).sum(axis=(1, 2)).astype(float)
    return np.where(area >= min_pixels, np.sqrt(area), np.nan)


def relative_size_error(reference: np.ndarray, generated: np.ndarray) -> float:
    """Mean |r_t - g_t| of (T,) size tracks each divided by its own mean, over frames where both are found.

    Scale-invariant (a prompt does not fix an object's size), for programs whose centroid never moves
    (grow-shrink); 0 = the same growth curve. NaN if no frame has both."""
    both = ~(np.isnan(reference) | np.isnan(generated))
    if not both.any():
        return float("nan")
    r, g = reference[both], generated[both]
    return float(np.abs(g / g.mean() - r / r.mean()).mean())


def colour_of(prompt: str) -> str:
    """The first colour word of a prompt."""
    for word in prompt.split():
        if word in COLOURS:
            return word
    raise InputError(f"prompt {prompt!r} names no colour (known: {', '.join(COLOURS)})")
