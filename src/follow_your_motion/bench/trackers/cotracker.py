"""Optional CoTracker grid tracking, the tracker the published motion-fidelity numbers were made with.

Nothing here downloads anything. The ``cotracker`` package (https://github.com/facebookresearch/co-tracker)
and a checkpoint file must already be on this machine; the package is imported only when called, so the
rest of the benchmark works without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import InputError
from .klt import Tracks

CHECKPOINT_ENV = "FYM_COTRACKER_CHECKPOINT"
"""Environment variable naming the checkpoint file when ``checkpoint`` is not passed."""

_INSTALL_HINT = (
    "CoTracker is optional and not installed. Install it into this environment with\n"
    "    pip install 'git+https://github.com/facebookresearch/co-tracker.git'\n"
    "then download a checkpoint yourself (DeT/MTBench used CoTracker3 'scaled_offline.pth', DMT used "
    "'cotracker_stride_4_wind_8.pth') and pass its path as checkpoint=... or set "
    f"{CHECKPOINT_ENV}. Or use the built-in tracker: get_tracker('klt')."
)


def _resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    if checkpoint is None:
        env = os.environ.get(CHECKPOINT_ENV)
        if not env:
            raise InputError(
                "No CoTracker checkpoint given. Weights are never downloaded: put a checkpoint file (e.g. "
                f"CoTracker3 'scaled_offline.pth') on disk and pass checkpoint=PATH or set {CHECKPOINT_ENV}=PATH."
            )
        checkpoint = env
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise InputError(
            f"CoTracker checkpoint not found at {path}. Weights are never downloaded: place the file there "
            f"(e.g. CoTracker3 'scaled_offline.pth') or point checkpoint=/{CHECKPOINT_ENV} at it."
        )
    return path


def track_grid_cotracker(
    frames: np.ndarray,
    grid: int = 55,
    checkpoint: str | Path | None = None,
    device: str | None = None,
) -> Tracks:
    """Track a ``grid`` x ``grid`` lattice from frame 0 of (T, H, W, 3) uint8 RGB ``frames`` with CoTracker.

    Raises RuntimeError, saying what to install and where the weights go, when the package or the local
    checkpoint is missing.
    """
    try:
        from cotracker.predictor import CoTrackerPredictor
    except ImportError as exc:
        raise InputError(_INSTALL_HINT) from exc
    path = _resolve_checkpoint(checkpoint)

    import torch

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise InputError(f"frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = CoTrackerPredictor(checkpoint=str(path)).to(device).eval()
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)[None].float().to(device)
    with torch.no_grad():
        tracks, visible = model(video, grid_size=grid)
    points = tracks[0].permute(1, 0, 2).float().cpu().numpy()  # (T, N, 2) -> (N, T, 2)
    vis = visible[0]
    if vis.ndim == 3:  # some versions keep a trailing singleton axis
        vis = vis[..., 0]
    return Tracks(
        points=points.astype(np.float32),
        visible=vis.permute(1, 0).cpu().numpy().astype(bool),
        grid=grid,
        tracker="cotracker",
        constants={"grid": grid, "checkpoint": path.name, "grid_query_frame": 0, "backward_tracking": False},
    )
