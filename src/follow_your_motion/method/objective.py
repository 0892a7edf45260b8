"""The training objective: rectified flow matching (noise levels, noising, the velocity target).

It belongs to the method, not to a model family: a family only gives its sampler shift (`flow_shift`), its
timestep scale (`num_train_timesteps`) and its noise prior (`draw_noise`); an expert gives the noise levels it
serves.
"""

from __future__ import annotations

import torch

from ..errors import InputError


def shift_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """The sampler's shift towards noise, s' = shift s / (1 + (shift - 1) s)."""
    return shift * u / (1 + (shift - 1) * u)


def unshift_sigma(sigma: float, shift: float) -> float:
    """The inverse of `shift_sigmas`: the u that the shift maps to `sigma`."""
    return sigma / (shift - (shift - 1) * sigma)


def sample_sigmas(n: int, generator: torch.Generator, weighting: str, shift: float,
                  sigma_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """Noise levels for training: u "uniform" or "logit_normal" in (0, 1), laid onto the part of (0, 1) that the
    shift maps into `sigma_range` (an expert's levels; for "uniform" this is exactly the shifted distribution
    cut to the range), then shifted. The full range leaves u as drawn."""
    if weighting == "uniform":
        u = torch.rand(n, generator=generator)
    elif weighting == "logit_normal":
        u = torch.sigmoid(torch.randn(n, generator=generator))
    else:
        raise InputError(f"unknown timestep weighting {weighting!r} (uniform, logit_normal)")
    lo, hi = sigma_range
    if (lo, hi) != (0.0, 1.0):
        u_lo, u_hi = unshift_sigma(lo, shift), unshift_sigma(hi, shift)
        u = u_lo + (u_hi - u_lo) * u
    return shift_sigmas(u, shift).clamp(1e-4, 1.0)


def noisy_sample(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor, num_train_timesteps: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rectified flow: x_t = (1 - s) x0 + s n, target velocity n - x0, timestep s * T."""
    s = sigmas.view(-1, *([1] * (latents.ndim - 1))).to(latents)
    noisy = (1 - s) * latents + s * noise
    return noisy, sigmas * num_train_timesteps, noise - latents
