"""Score any pair of videos (a reference and an output from any tool) with both motion-fidelity definitions.

This is what ``fym metrics REF OUT --prompt ...`` runs. Each video is tracked once per definition with that
definition's grid (DeT: ``DET_GRID``, DMT: ``DMT_GRID``) by the chosen tracker, and the DeT and DMT scores are
computed from those tracks. For DeT both videos are tracked at their own frame size and each is normalised by
its own width and height, as DeT's release does (no resizing: a resize and centre crop would change the
normalised tracks whenever the aspect ratios differ). DMT works in pixels and compares the two videos in the
same pixel units, so for DMT only the output is first fitted to the reference's frame size
(``video.resize_center_crop``). Frame counts may differ: DeT aligns them itself (its release does), and for
DMT - which compares step t with step t - the longer track set keeps frames
``metrics.motion_det.det_frame_indices(T_long, T_short)`` first, the same rule.

Only tracks with a known position in every frame are scored (``TRACK_FILTER``). The metrics compare two
tracks over the steps valid in both, so a KLT track lost after frame 0 or 1 is compared over one or two
entries only; with DeT's start-position entry such a short reference track scores about 1 against any
generated track starting nearby, whatever either of them does next, and a time-reversed video would score
as well as the original. Masking partial tracks out entirely (all frames invisible) keeps the track
indices, so DMT's identity quirk still pairs the tracks that started at the same grid point. The tracker's
occlusion flag is otherwise not used, as in both releases (CoTracker estimates occluded positions). If no
track of a video is complete, all its tracks are used and the result says so.

``score_tracks`` scores given reference tracks (a benchmark case's ``tracks`` file) against an output with
the same track filter. The benchmark runner records both, calling ``score_pair`` with ``record_errors`` so
that a definition that cannot be scored does not cost the other one.

``score_appearance`` adds the appearance metrics of the output (``metrics.appearance``: CLIP text similarity,
temporal consistency by CLIP and by DINO) for the models the user gives (``--clip`` / ``--dino``; no weights
are shipped or downloaded). A metric without its model is ``None`` with a note saying why, rather than
left out, so a table built from the JSON cannot silently mix in numbers from elsewhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import InputError
from .metrics import DET_GRID, DMT_GRID, MotionFidelity, motion_fidelity_det, motion_fidelity_dmt
from .metrics.motion_det import det_frame_indices
from .trackers import Tracks, get_tracker

TRACK_FILTER = "tracks with a finite position in every frame (partial tracks masked out)"
APPEARANCE_MODELS = {
    "text_similarity": "clip", "temporal_consistency_clip": "clip", "temporal_consistency_dino": "dino",
}
"""Each appearance metric and the model (option) it needs."""
NOT_COMPUTED = "not computed: no {model} model given (--{option} PATH; no weights are shipped or downloaded)"


def complete_tracks(tracks: Tracks) -> tuple[np.ndarray, int | None]:
    """(N, T) usable mask keeping only tracks known in every frame, and how many; (all finite, None) if none."""
    known = np.isfinite(tracks.points).all(axis=2)
    complete = known.all(axis=1)
    if not complete.any():
        return known, None
    return known & complete[:, None], int(complete.sum())


def _fidelity_json(
    compute: Callable[[], MotionFidelity], grid: int, ref: Tracks, kept: dict, record_errors: bool
) -> dict:
    """The JSON-ready part of a score: the number, its definition and every constant that shaped it; with
    `record_errors`, a definition that cannot be computed gives ``{"score": None, "error": ..., "constants"}``
    (the tracking constants only) instead of raising its ValueError."""
    constants = {
        "grid_used": grid,
        "tracker_used": ref.tracker,
        "tracker_constants": ref.constants,
        "track_filter": TRACK_FILTER,
        "complete_tracks": kept,
    }
    try:
        result = compute()
    except ValueError as err:
        if not record_errors:
            raise
        return {"score": None, "error": str(err), "constants": constants}
    return {
        "score": result.score,
        "definition": result.definition,
        "tracks_scored": int(result.per_track.size),
        "constants": {**result.constants, **constants},
    }


def _kept(ref_n: int | None, out_n: int | None, total: int) -> dict:
    note = "no complete track in {}: all its tracks used"
    return {
        "reference": ref_n if ref_n is not None else note.format("the reference"),
        "output": out_n if out_n is not None else note.format("the output"),
        "of": total,
    }


def _align_frames(points: np.ndarray, usable: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep frames ``det_frame_indices(T, n_frames)`` (DeT's rule for the longer video)."""
    idx = det_frame_indices(points.shape[1], n_frames)
    return points[:, idx], usable[:, idx]


def score_pair(
    ref_frames: np.ndarray, out_frames: np.ndarray, tracker: str = "klt", record_errors: bool = False
) -> dict:
    """Motion fidelity of ``out_frames`` against ``ref_frames`` (both uint8 (T, H, W, 3) RGB).

    Returns a JSON-ready dict with ``motion_fidelity_det`` and ``motion_fidelity_dmt`` (each: score,
    definition, number of scored tracks, constants) and the sizes and frame counts used (``output_resized``:
    whether the output was fitted to the reference size for DMT; DeT always uses it as given). Raises ValueError
    for unusable input (fewer than 2 frames, wrong shapes, an unknown tracker) and RuntimeError when the
    tracker cannot run (e.g. no CoTracker). A definition that cannot be scored (e.g. no track of the output
    survives a step, so DMT has nothing to compare) raises its ValueError too, or with `record_errors` gets
    ``score: None`` and an ``error``.
    """
    from ..video import resize_center_crop

    track = get_tracker(tracker)
    ref, out = np.asarray(ref_frames), np.asarray(out_frames)
    for name, frames in (("reference", ref), ("output", out)):
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise InputError(f"{name} frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        if frames.shape[0] < 2:
            raise InputError(f"{name} has {frames.shape[0]} frame(s); motion needs at least 2")
    height, width = (int(v) for v in ref.shape[1:3])
    out_size = tuple(int(v) for v in out.shape[1:3])
    resized = out_size != (height, width)

    # DeT: each video at its own size, normalised by its own (W, H) inside motion_fidelity_det
    ref_det, out_det = track(ref, grid=DET_GRID), track(out, grid=DET_GRID)
    (ref_use, ref_n), (out_use, out_n) = complete_tracks(ref_det), complete_tracks(out_det)
    det = _fidelity_json(
        lambda: motion_fidelity_det(ref_det.points, out_det.points, ref_size=(height, width), gen_size=out_size,
                                    ref_visible=ref_use, gen_visible=out_use),
        DET_GRID, ref_det, _kept(ref_n, out_n, ref_det.points.shape[0]), record_errors,
    )

    # DMT: pixel units, so the output is fitted to the reference's frame size first
    out_dmt_frames = resize_center_crop(out, height, width) if resized else out
    ref_dmt, out_dmt = track(ref, grid=DMT_GRID), track(out_dmt_frames, grid=DMT_GRID)
    (ref_use, ref_n), (out_use, out_n) = complete_tracks(ref_dmt), complete_tracks(out_dmt)
    n_frames = min(ref_dmt.points.shape[1], out_dmt.points.shape[1])
    ref_pts, ref_use = _align_frames(ref_dmt.points, ref_use, n_frames)
    out_pts, out_use = _align_frames(out_dmt.points, out_use, n_frames)
    dmt = _fidelity_json(
        lambda: motion_fidelity_dmt(ref_pts, out_pts, ref_visible=ref_use, gen_visible=out_use),
        DMT_GRID, ref_dmt, _kept(ref_n, out_n, ref_dmt.points.shape[0]), record_errors,
    )
    return {
        "motion_fidelity_det": det,
        "motion_fidelity_dmt": dmt,
        "tracker": tracker,
        "size_hw": [int(height), int(width)],
        "output_size_hw": list(out_size),
        "output_resized": resized,
        "output_resize": "resize_center_crop to the reference size, for DMT only" if resized else None,
        "frames": {"reference": int(ref.shape[0]), "output": int(out.shape[0])},
        "dmt_frame_alignment": (
            "int32(float32 torch.linspace(0, T_long - 1, T_short)), DeT's rule" if ref.shape[0] != out.shape[0]
            else None
        ),
    }


def appearance_metrics(clip: object | None, dino: object | None) -> list[str]:
    """The appearance metrics that these models (None: not given) make computable, in APPEARANCE_MODELS order."""
    given = {"clip": clip is not None, "dino": dino is not None}
    return [name for name, model in APPEARANCE_MODELS.items() if given[model]]


def score_appearance(frames: np.ndarray, prompt: str, clip: str | Path | None = None,
                     dino: str | Path | None = None, device: str = "cpu", record_errors: bool = False) -> dict:
    """Appearance metrics of `frames` (the output, uint8 (T, H, W, 3) RGB) with the CLIP and DINO models given
    (a directory or a cached hub id each; ``metrics.encoders``).

    Returns, per metric of ``APPEARANCE_MODELS``, ``{"score", "definition", "constants"}`` (text similarity also
    ``score_x100``) or None, and ``<metric>_note``: None, or why the metric is missing. A model that cannot be
    loaded raises ValueError, naming it and its option; so does a metric that cannot be computed (e.g. temporal
    consistency of one frame), or with `record_errors` it gets None and the reason as its note."""
    from .metrics.appearance import (
        TEXT_SIMILARITY_SCALE,
        check_frames,
        temporal_consistency_clip,
        temporal_consistency_dino,
        text_similarity,
    )
    from .metrics.encoders import load_clip, load_dino

    encoders = {"clip": None if clip is None else load_clip(clip, device),
                "dino": None if dino is None else load_dino(dino, device)}
    # one CLIP pass over the frames for both CLIP metrics (not cached on failure, so each records its error)
    clip_images = functools.cache(lambda: encoders["clip"].embed_images(check_frames(frames, 1)))
    compute = {
        "text_similarity": lambda: text_similarity(frames, prompt, encoders["clip"], clip_images()),
        "temporal_consistency_clip": lambda: temporal_consistency_clip(frames, encoders["clip"], clip_images()),
        "temporal_consistency_dino": lambda: temporal_consistency_dino(frames, encoders["dino"]),
    }
    computable = appearance_metrics(clip, dino)
    scores: dict = {}
    for name, model in APPEARANCE_MODELS.items():
        scores[name], scores[f"{name}_note"] = None, NOT_COMPUTED.format(model=model.upper(), option=model)
        if name not in computable:
            continue
        try:
            result = compute[name]()
        except ValueError as err:
            if not record_errors:
                raise
            scores[f"{name}_note"] = f"not computed: {err}"
            continue
        scaled = {"score_x100": TEXT_SIMILARITY_SCALE * result.score} if name == "text_similarity" else {}
        scores[name] = {"score": result.score, **scaled, "definition": result.definition,
                        "constants": result.constants}
        scores[f"{name}_note"] = None
    return scores


def score_tracks(ref_points: np.ndarray, ref_visible: np.ndarray | None, out_frames: np.ndarray,
                 tracker: str = "klt") -> dict:
    """Both definitions for given reference tracks (a case's ``tracks`` file: (N, T, 2) pixel positions measured
    on the reference at the output's size) against ``out_frames``, tracked here (complete tracks only). DMT
    runs without its identity quirk (the two track sets are not index-aligned) and without frame alignment.

    Returns {"motion_fidelity_det" | "motion_fidelity_dmt": {"score", "constants"}}, or {"score": None,
    "error"} for a definition that cannot be scored."""
    track = get_tracker(tracker)
    height, width = np.asarray(out_frames).shape[1:3]
    scores = {}
    for name, grid in (("det", DET_GRID), ("dmt", DMT_GRID)):
        out = track(out_frames, grid=grid)
        out_use = complete_tracks(out)[0]
        try:
            if name == "det":
                mf = motion_fidelity_det(ref_points, out.points, size=(height, width), ref_visible=ref_visible,
                                         gen_visible=out_use)
            else:
                mf = motion_fidelity_dmt(ref_points, out.points, ref_visible=ref_visible, gen_visible=out_use,
                                         identity_quirk=False)
        except ValueError as err:
            scores[f"motion_fidelity_{name}"] = {"score": None, "error": str(err)}
            continue
        scores[f"motion_fidelity_{name}"] = {"score": mf.score, "constants": mf.constants | {"grid_used": grid}}
    return scores
