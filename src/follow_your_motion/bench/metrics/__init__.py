"""Benchmark metrics; ``motion`` holds the track-based motion-fidelity scores (DMT and DeT definitions)."""

from __future__ import annotations

from .motion import (
    DET_GRID,
    DMT_GRID,
    MotionFidelity,
    displacement_similarity,
    motion_fidelity_det,
    motion_fidelity_dmt,
    trajectory_distance_matrix,
)

__all__ = [
    "DET_GRID",
    "DMT_GRID",
    "MotionFidelity",
    "displacement_similarity",
    "motion_fidelity_det",
    "motion_fidelity_dmt",
    "trajectory_distance_matrix",
]
