"""Score any pair of videos (a reference and an output from any tool) with both motion-fidelity definitions.

This is what ``fym metrics REF OUT --prompt ...`` runs. The output is first fitted to the reference's frame
size (``video.resize_center_crop``) so both videos are tracked on the same grid in the same pixel units;
each video is then tracked once per definition with that definition's grid (DeT: ``DET_GRID``, DMT:
``DMT_GRID``) by the chosen tracker, and the DeT and DMT scores are computed from those tracks. Frame
counts may differ: DeT aligns them itself (its release does), and for DMT - which compares step t with
step t - the longer track set keeps frames ``floor(linspace(0, T_long - 1, T_short))`` first, the same rule.

Text alignment (CLIP similarity between the output and the prompt) is not computed: it needs CLIP weights
this project does not ship. The result says so (``text_similarity: None`` with a note) rather than
leaving the field out, so a table built from it cannot silently mix in numbers from elsewhere.
"""

from __future__ import annotations

import numpy as np

from .metrics import DET_GRID, DMT_GRID, MotionFidelity, motion_fidelity_det, motion_fidelity_dmt
from .trackers import Tracks, get_tracker

TEXT_SIMILARITY_NOTE = (
    "CLIP text similarity is not computed by this project (no CLIP weights are shipped); "
    "score text alignment with your own CLIP model"
)


def _fidelity_json(result: MotionFidelity, grid: int, tracker: Tracks) -> dict:
    """The JSON-ready part of a score: the number, its definition and every constant that shaped it."""
    return {
        "score": result.score,
        "definition": result.definition,
        "tracks": int(result.per_track.size),
        "constants": {**result.constants, "grid_used": grid, "tracker_used": tracker.tracker,
                      "tracker_constants": tracker.constants},
    }


def _align_frames(a: Tracks, b: Tracks) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Points and visibility of both track sets on a common frame count (DeT's rule for the longer one)."""
    n = min(a.points.shape[1], b.points.shape[1])

    def pick(tracks: Tracks) -> tuple[np.ndarray, np.ndarray]:
        idx = np.linspace(0, tracks.points.shape[1] - 1, n).astype(np.int64)
        return tracks.points[:, idx], tracks.visible[:, idx]

    return pick(a), pick(b)


def score_pair(ref_frames: np.ndarray, out_frames: np.ndarray, tracker: str = "klt") -> dict:
    """Motion fidelity of ``out_frames`` against ``ref_frames`` (both uint8 (T, H, W, 3) RGB).

    Returns a JSON-ready dict with ``motion_fidelity_det`` and ``motion_fidelity_dmt`` (each: score,
    definition, number of scored tracks, constants), the sizes and frame counts used, and
    ``text_similarity: None`` with a note. Raises ValueError for unusable input (fewer than 2 frames,
    wrong shapes, an unknown tracker) and RuntimeError when the tracker cannot run (e.g. no CoTracker).
    """
    from ..video import resize_center_crop

    track = get_tracker(tracker)
    ref, out = np.asarray(ref_frames), np.asarray(out_frames)
    for name, frames in (("reference", ref), ("output", out)):
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError(f"{name} frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        if frames.shape[0] < 2:
            raise ValueError(f"{name} has {frames.shape[0]} frame(s); motion needs at least 2")
    height, width = ref.shape[1:3]
    out_size = tuple(int(v) for v in out.shape[1:3])
    resized = out_size != (height, width)
    if resized:
        out = resize_center_crop(out, height, width)

    ref_det, out_det = track(ref, grid=DET_GRID), track(out, grid=DET_GRID)
    det = motion_fidelity_det(ref_det.points, out_det.points, size=(height, width),
                              ref_visible=ref_det.visible, gen_visible=out_det.visible)
    ref_dmt, out_dmt = track(ref, grid=DMT_GRID), track(out, grid=DMT_GRID)
    (ref_pts, ref_vis), (out_pts, out_vis) = _align_frames(ref_dmt, out_dmt)
    dmt = motion_fidelity_dmt(ref_pts, out_pts, ref_visible=ref_vis, gen_visible=out_vis)
    return {
        "motion_fidelity_det": _fidelity_json(det, DET_GRID, ref_det),
        "motion_fidelity_dmt": _fidelity_json(dmt, DMT_GRID, ref_dmt),
        "tracker": tracker,
        "size_hw": [int(height), int(width)],
        "output_size_hw": list(out_size),
        "output_resized": resized,
        "output_resize": "resize_center_crop to the reference size" if resized else None,
        "frames": {"reference": int(ref.shape[0]), "output": int(out.shape[0])},
        "dmt_frame_alignment": (
            "floor(linspace(0, T_long - 1, T_short))" if ref.shape[0] != out.shape[0] else None
        ),
        "text_similarity": None,
        "text_similarity_note": TEXT_SIMILARITY_NOTE,
    }
