"""Appearance metrics of a generated video: CLIP text similarity and temporal consistency (CLIP and DINO).

Motion fidelity says nothing about whether the result shows what the prompt asks for, or whether it flickers;
papers print these next to it. Three scores, each a pure function of the frames (uint8 (T, H, W, 3) RGB),
the prompt and a loaded encoder (``encoders.load_clip`` / ``load_dino``), with the formula on embeddings
exposed separately so it can be checked by hand:

* ``text_similarity`` - per frame, the cosine of CLIP's image embedding and the prompt's text embedding,
  averaged over frames. Papers print ``TEXT_SIMILARITY_SCALE`` x this (DeT reports CLIP's
  ``logits_per_image``, i.e. ``exp(logit_scale)`` x cosine: 100.0 x cosine for OpenAI's CLIP).
* ``temporal_consistency_clip`` - the mean cosine of the CLIP image embeddings of consecutive frames.
* ``temporal_consistency_dino`` - DeT's definition: per frame, the mean of its cosine to the first frame and
  its cosine to the previous frame, averaged over frames. DeT's release counts frame 0 too (as its own
  first and previous frame, so it adds a 1); ``count_first_frame=False`` averages over frames 1..T-1 only.

Every score comes back as an ``AppearanceScore`` with the encoder's constants (model, preprocessing, which
embedding) and the definition's own. Full definitions and how they differ from the releases:
``docs/benchmark.md`` ("Appearance metrics").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...errors import InputError

if TYPE_CHECKING:
    from .encoders import ClipEncoder, DinoEncoder

TEXT_SIMILARITY_SCALE = 100.0
"""Factor papers print CLIP text similarity with (``score_x100`` = this x the mean cosine)."""


@dataclass(frozen=True, eq=False)
class AppearanceScore:
    """An appearance score with what shaped it; ``per_frame`` (read-only) holds the values it averages."""

    score: float
    definition: str
    constants: dict
    per_frame: np.ndarray


def check_frames(frames: np.ndarray, min_frames: int) -> np.ndarray:
    """The frames as a uint8 (T, H, W, 3) array with at least `min_frames` frames, or a ValueError."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
        raise InputError(f"frames must be uint8 (T, H, W, 3), got {arr.dtype} {arr.shape}")
    if arr.shape[0] < min_frames:
        raise InputError(f"{arr.shape[0]} frame(s) given; this metric needs at least {min_frames}")
    return arr


def _unit(embeddings: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float64); a zero or non-finite embedding has no direction: ValueError."""
    arr = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(arr, axis=-1, keepdims=True)
    if not np.isfinite(arr).all() or (norms == 0).any():
        raise InputError("an embedding is zero or not finite: its cosine is undefined")
    return arr / norms


def _score(per_frame: np.ndarray, definition: str, constants: dict) -> AppearanceScore:
    per_frame = np.array(per_frame, dtype=np.float64)
    per_frame.setflags(write=False)
    return AppearanceScore(float(per_frame.mean()), definition, constants, per_frame)


def _check_sequence(embeddings: np.ndarray) -> np.ndarray:
    arr = _unit(embeddings)
    if arr.ndim != 2 or len(arr) < 2:
        raise InputError(f"temporal consistency needs (T >= 2, D) embeddings, got shape {arr.shape}")
    return arr


def text_cosines(image_embeddings: np.ndarray, text_embedding: np.ndarray) -> np.ndarray:
    """(T,) cosine of each frame's embedding with the text embedding."""
    return _unit(image_embeddings) @ _unit(text_embedding)


def consecutive_cosines(embeddings: np.ndarray) -> np.ndarray:
    """(T - 1,) cosine of frame t with frame t + 1."""
    unit = _check_sequence(embeddings)
    return np.sum(unit[1:] * unit[:-1], axis=1)


def first_previous_cosines(embeddings: np.ndarray, count_first_frame: bool = True) -> np.ndarray:
    """Per frame t, (cos(e_t, e_0) + cos(e_t, e_max(t-1, 0))) / 2: (T,) with frame 0, else (T - 1,) from t = 1."""
    unit = _check_sequence(embeddings)
    previous = np.maximum(np.arange(len(unit)) - 1, 0)
    per_frame = 0.5 * (unit @ unit[0] + np.sum(unit * unit[previous], axis=1))
    return per_frame if count_first_frame else per_frame[1:]


def _clip_images(frames: np.ndarray, clip: ClipEncoder, images: np.ndarray | None, min_frames: int) -> np.ndarray:
    """The CLIP image embeddings of `frames`: `images` when the caller computed them already (both CLIP metrics
    use the same ones), else one pass of the encoder."""
    checked = check_frames(frames, min_frames)
    return clip.embed_images(checked) if images is None else images


def text_similarity(frames: np.ndarray, prompt: str, clip: ClipEncoder, images: np.ndarray | None = None
                    ) -> AppearanceScore:
    """Mean over frames of cos(CLIP image embedding, CLIP text embedding of `prompt`); raw cosine in [-1, 1].
    `images`: the frames' CLIP image embeddings, if already computed."""
    image = _clip_images(frames, clip, images, 1)
    text, tokens = clip.embed_text(prompt)
    constants = clip.constants | tokens | {
        "per_frame": "cos(image embedding, text embedding)", "frame_mean": "all frames",
        "scale_printed": TEXT_SIMILARITY_SCALE,
    }
    return _score(text_cosines(image, text), "clip_text_similarity", constants)


def temporal_consistency_clip(frames: np.ndarray, clip: ClipEncoder, images: np.ndarray | None = None
                              ) -> AppearanceScore:
    """Mean cosine of the CLIP image embeddings of consecutive frames (`images`, if already computed)."""
    constants = clip.constants | {"per_pair": "cos(e_t, e_t+1), t = 0 .. T-2"}
    per_pair = consecutive_cosines(_clip_images(frames, clip, images, 2))
    return _score(per_pair, "clip_consecutive_frames", constants)


def temporal_consistency_dino(frames: np.ndarray, dino: DinoEncoder, count_first_frame: bool = True
                              ) -> AppearanceScore:
    """DeT's temporal consistency: mean over frames of (cos to the first frame + cos to the previous) / 2."""
    constants = dino.constants | {
        "per_frame": "(cos(e_t, e_0) + cos(e_t, e_max(t-1, 0))) / 2",
        "first_frame_counted": count_first_frame,
        "frame_mean": "t = 0 .. T-1 (release: frame 0 adds 1)" if count_first_frame else "t = 1 .. T-1",
    }
    per_frame = first_previous_cosines(dino.embed_images(check_frames(frames, 2)), count_first_frame)
    return _score(per_frame, "det_dino_first_previous", constants)
