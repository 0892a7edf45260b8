"""Which device a job runs on. `auto` (the default everywhere) takes CUDA when there is one, then Apple's MPS when
it can run the job's dtype, else the CPU; the choice is said in one line, so a 14B model never trains on a CPU
unannounced."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger("follow_your_motion")

AUTO = "auto"


def mps_works(dtype: str = "float32") -> bool:
    """Whether Apple's MPS is there and multiplies matrices in `dtype` (bfloat16 needs macOS 14)."""
    if not torch.backends.mps.is_available():
        return False
    try:
        x = torch.ones(8, 8, device="mps", dtype=getattr(torch, dtype))
        return bool((x @ x).sum().item() == 8 * 64)
    except (RuntimeError, TypeError):
        return False


def pick_device(requested: str = AUTO, dtype: str = "float32") -> str:
    """`requested` itself, or for `auto`: "cuda", "mps" or "cpu", with one line saying which and why."""
    if requested != AUTO:
        return requested
    if torch.cuda.is_available():
        device, why = "cuda", f"CUDA is available ({torch.cuda.get_device_name(0)})"
    elif mps_works(dtype):
        device, why = "mps", f"Apple MPS runs {dtype}"
    else:
        device, why = "cpu", "no CUDA or Apple MPS device found"
    log.info(f"device: {device} (--device auto: {why}; --device chooses)")
    return device
