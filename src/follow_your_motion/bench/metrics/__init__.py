"""Benchmark metrics: ``motion`` and ``motion_det`` hold the track-based motion-fidelity scores (DMT and DeT
definitions), ``appearance`` text similarity and temporal consistency from the embeddings ``encoders``
computes (CLIP, DINO; import ``encoders`` itself, it loads torch)."""

from __future__ import annotations

from .appearance import (
    TEXT_SIMILARITY_SCALE,
    AppearanceScore,
    consecutive_cosines,
    first_previous_cosines,
    temporal_consistency_clip,
    temporal_consistency_dino,
    text_cosines,
    text_similarity,
)
from .motion import DMT_GRID, MotionFidelity, displacement_similarity, motion_fidelity_dmt
from .motion_det import DET_GRID, motion_fidelity_det, trajectory_distance_matrix

__all__ = [
    "DET_GRID",
    "DMT_GRID",
    "TEXT_SIMILARITY_SCALE",
    "AppearanceScore",
    "MotionFidelity",
    "consecutive_cosines",
    "displacement_similarity",
    "first_previous_cosines",
    "motion_fidelity_det",
    "motion_fidelity_dmt",
    "temporal_consistency_clip",
    "temporal_consistency_dino",
    "text_cosines",
    "text_similarity",
    "trajectory_distance_matrix",
]
