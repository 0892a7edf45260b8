"""Appearance leakage: how much of a ShapesWorld reference's look that the target prompt leaves out reaches a result.

Follow-Your-Motion's claim is that the motion LoRA carries the reference's motion and not its appearance. No
prompt names a background, and a prompt names only its own objects' colours, so a clean result of the target
prompt has the black background and only the colours the prompt names. Both scores are 1 for a copy of the
reference and 0 for such a clean render, whatever the motion:

background_leak     of the result's background pixels (those matching none of the 8 object colours within
                    ``tol`` and touching no pixel that does), the share that matches the reference's background:
                    within ``tol`` (Chebyshev, 0..255) of a colour the reference's background pixels show, and
                    strictly nearer to it than to black.
object_colour_leak  the mean, over the reference's colours the prompt does not name (object colours, stripe
                    colours, a static distractor's colour), of the frames in which the result shows the colour
                    (>= ``min_pixels`` pixels within ``tol``) per frame in which the reference shows it, capped at 1.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .render import COLOURS, SceneSpec, segment_colour

TOLERANCE, MIN_PIXELS = 40, 3  # segment_colour / track_colour defaults: what finds objects everywhere else
CLEAN_BACKGROUND = (0, 0, 0)  # what a render of any prompt has behind its objects


def background_mask(frames: np.ndarray, tol: int = TOLERANCE) -> np.ndarray:
    """(T, H, W) background pixels: those matching none of the object colours and touching no pixel that does
    (8-neighbourhood), so the soft edge of a generated object is not taken for its background."""
    objects = segment_colour(frames, tuple(COLOURS), tol)
    padded = np.pad(objects, ((0, 0), (1, 1), (1, 1)))
    h, w = objects.shape[1:]
    near = np.zeros_like(objects)
    for dy in range(3):
        for dx in range(3):
            near |= padded[:, dy : dy + h, dx : dx + w]
    return ~near


def background_palette(frames: np.ndarray, tol: int = TOLERANCE) -> np.ndarray:
    """(K, 3) distinct colours of the frames' background pixels: a rendered background's exact statistics."""
    frames = np.asarray(frames)
    return np.unique(frames[background_mask(frames, tol)].astype(np.float64), axis=0)


def _distance(colours: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Chebyshev distance of each of (N, 3) colours to the nearest of (K, 3) palette colours (one K at a time)."""
    out = np.full(len(colours), np.inf)
    for colour in palette:
        out = np.minimum(out, np.abs(colours - colour).max(axis=1))
    return out


def background_leak(reference: np.ndarray, result: np.ndarray, tol: int = TOLERANCE) -> float:
    """The share of `result`'s background pixels that show `reference`'s background (module docstring); NaN if
    the result has no background pixel. Raises InputError when the reference's background is all black."""
    palette = background_palette(reference, tol)
    if not palette.any():
        raise InputError("the reference's background is black, like a clean result's: it has nothing to leak "
                         "(use a textured or dim-<colour> background)")
    result = np.asarray(result)
    pixels = result[background_mask(result, tol)].astype(np.float64)
    if not len(pixels):
        return float("nan")
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    to_reference = _distance(colours, palette)
    to_clean = _distance(colours, np.asarray([CLEAN_BACKGROUND], dtype=np.float64))
    leaked = (to_reference <= tol) & (to_reference < to_clean)
    return float(counts[leaked].sum() / counts.sum())


def leakable_colours(scene: SceneSpec, named: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The colours the scene's objects are drawn in (stripes included) that `named` (the prompt's) leaves out."""
    drawn = dict.fromkeys(c for o in scene.objects for c in o.colours)
    return tuple(c for c in drawn if c not in set(named))


def frames_showing(frames: np.ndarray, colour: str, tol: int = TOLERANCE, min_pixels: int = MIN_PIXELS) -> int:
    """Frames with at least `min_pixels` pixels of the colour (``track_colour``'s rule for finding it)."""
    return int((segment_colour(frames, colour, tol).sum(axis=(1, 2)) >= max(min_pixels, 1)).sum())


def colour_leaks(
    reference: np.ndarray, result: np.ndarray, colours: tuple[str, ...], tol: int = TOLERANCE,
    min_pixels: int = MIN_PIXELS,
) -> dict[str, float]:
    """Per colour, the frames `result` shows it in per frame `reference` shows it in, capped at 1; colours the
    reference never shows are left out (they cannot leak)."""
    leaks = {}
    for colour in colours:
        shown = frames_showing(reference, colour, tol, min_pixels)
        if shown:
            leaks[colour] = min(1.0, frames_showing(result, colour, tol, min_pixels) / shown)
    return leaks


def leakage_metrics(scene: SceneSpec, reference: np.ndarray, result: np.ndarray, named: list[str]) -> dict:
    """Both leakage scores of `result` for the reference `scene` (rendered as `reference`) and the colours its
    target prompt names: ``background_leak`` (None for a black background: nothing to leak),
    ``object_colour_leak`` (None when every colour is named) and the per-colour values it averages."""
    leaks = colour_leaks(reference, result, leakable_colours(scene, named))
    return {
        "background": scene.background,
        "background_leak": None if scene.background == "black" else background_leak(reference, result),
        "object_colours": leaks,
        "object_colour_leak": float(np.mean(list(leaks.values()))) if leaks else None,
    }
