"""Training objectives: flow-matching MSE and the motion (velocity-difference) loss."""

from __future__ import annotations

from typing import get_args

import torch
import torch.nn.functional as F

from ..config import MotionLossForm

MOTION_FORMS: tuple[str, ...] = get_args(MotionLossForm)


def flow_matching_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred.float(), target.float())


def motion_loss(pred: torch.Tensor, target: torch.Tensor, form: str = "paper") -> torch.Tensor:
    """1 - cos between frame-to-frame velocity differences of prediction and target, (B, C, F, h, w).

    paper: dv_i = v_i - v_(i-1), cosine over channels at each position and frame pair;
    release: |dv|, cosine along the time axis at each channel and position (the authors' code)."""
    if form not in MOTION_FORMS:
        raise ValueError(f"unknown motion loss form {form!r} (choose from {', '.join(MOTION_FORMS)})")
    if pred.shape[2] < 2:
        return pred.new_zeros(())
    dv_pred = pred.float().diff(dim=2)
    dv_target = target.float().diff(dim=2)
    if form == "paper":
        cos = F.cosine_similarity(dv_pred, dv_target, dim=1, eps=1e-8)
    else:
        cos = F.cosine_similarity(dv_pred.abs(), dv_target.abs(), dim=2, eps=1e-8)
    return (1 - cos).mean()
