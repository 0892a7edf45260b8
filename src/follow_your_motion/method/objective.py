"""The training objectives: rectified flow matching (Wan, LTX-Video, the toy model) and v-prediction on a DDPM
schedule (CogVideoX).

They belong to the method, not to a model family: a family only says which one it was trained with
(`Backbone.objective`), and gives its sampler shift (`flow_shift`), its timestep scale (`num_train_timesteps`), its
noise prior (`draw_noise`) and, for v-prediction, its schedule (`alphas_cumprod`); an expert gives the noise levels it
serves. The training loop and stage 1 call `training_sample` and `capture_sample`, which choose by that attribute, so
the method never asks which family it runs.

Noise levels are sigma in (0, 1] for both: the weight of the noise in the noisy sample (rectified flow: x_t =
(1 - sigma) x0 + sigma n; v-prediction: sigma_t = sqrt(1 - a_t)), so an expert's `sigma_range` and `heads.sigma` mean
the same thing for every family.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..errors import InputError

if TYPE_CHECKING:
    from ..backbones.base import Backbone


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


# -- v-prediction on a DDPM schedule (CogVideoX) ------------------------------------------------------------------
def schedule_sigmas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """sigma_t = sqrt(1 - a_t) of every timestep t: the noise's weight, increasing with t."""
    return (1 - alphas_cumprod.double()).sqrt()


def timestep_range(alphas_cumprod: torch.Tensor, sigma_range: tuple[float, float]) -> tuple[int, int]:
    """The timesteps [lo, hi) whose sigma_t lies in `sigma_range` (lo <= sigma_t < hi; hi = 1 takes the last one)."""
    sigmas = schedule_sigmas(alphas_cumprod)
    lo, hi = sigma_range
    first = int(torch.searchsorted(sigmas, torch.tensor(lo, dtype=torch.float64)))
    end = len(sigmas) if hi >= 1.0 else int(torch.searchsorted(sigmas, torch.tensor(hi, dtype=torch.float64)))
    if end <= first:
        raise InputError(f"no timestep of the schedule has a noise level in [{lo}, {hi})")
    return first, end


def timestep_for_sigma(alphas_cumprod: torch.Tensor, sigma: float) -> int:
    """The timestep whose sigma_t = sqrt(1 - a_t) is closest to `sigma` (stage 1's `heads.sigma`)."""
    return int((schedule_sigmas(alphas_cumprod) - sigma).abs().argmin())


def sample_timesteps(n: int, generator: torch.Generator, weighting: str, shift: float, steps: tuple[int, int],
                     num_train_timesteps: int) -> torch.Tensor:
    """Integer training timesteps in [lo, hi): the levels of `sample_sigmas` read on the timestep axis (t = level *
    T), so "uniform" with shift 1 over the whole schedule is uniform over 0..T-1, as CogVideoX's own fine-tuning
    draws them, and the same u is drawn from `generator` as for rectified flow."""
    lo, hi = steps
    levels = sample_sigmas(n, generator, weighting, shift, (lo / num_train_timesteps, hi / num_train_timesteps))
    return (levels.double() * num_train_timesteps).floor().long().clamp(lo, hi - 1)


def v_prediction_sample(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                        alphas_cumprod: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DDPM noising with a velocity target, as diffusers' schedulers compute them (`add_noise`, `get_velocity`):
    x_t = sqrt(a_t) x0 + sqrt(1 - a_t) n, v = sqrt(a_t) n - sqrt(1 - a_t) x0, with a_t = alphas_cumprod[t]. The MSE
    on v equals CogVideoX's own fine-tuning loss (the x0 error weighted by 1 / (1 - a_t))."""
    a = alphas_cumprod.to(latents.device, latents.dtype)[timesteps.to(latents.device)]
    a = a.view(-1, *([1] * (latents.ndim - 1)))
    sqrt_a, sqrt_one_minus_a = a**0.5, (1 - a) ** 0.5
    noisy = sqrt_a * latents + sqrt_one_minus_a * noise
    return noisy, timesteps, sqrt_a * noise - sqrt_one_minus_a * latents


# -- what the method calls ----------------------------------------------------------------------------------------
def _schedule(backbone: Backbone) -> torch.Tensor:
    if backbone.alphas_cumprod is None:
        raise InputError(f"{type(backbone).__name__} is a v-prediction model but gives no alphas_cumprod")
    return backbone.alphas_cumprod


def training_sample(backbone: Backbone, latents: torch.Tensor, noise: torch.Tensor, generator: torch.Generator,
                    weighting: str, shift: float, sigma_range: tuple[float, float] = (0.0, 1.0)
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training step's (noisy latents, model timesteps, target), by the backbone's objective: noise levels drawn
    with `weighting` and `shift` within the expert's `sigma_range` (v-prediction: the timesteps of that range)."""
    if backbone.objective == "v_prediction":
        schedule = _schedule(backbone)
        steps = timestep_range(schedule, sigma_range)
        timesteps = sample_timesteps(len(latents), generator, weighting, shift, steps, len(schedule))
        return v_prediction_sample(latents, noise, timesteps, schedule)
    sigmas = sample_sigmas(len(latents), generator, weighting, shift, sigma_range)
    return noisy_sample(latents, noise, sigmas, backbone.num_train_timesteps)


def capture_sample(backbone: Backbone, latents: torch.Tensor, noise: torch.Tensor, sigma: float
                   ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float | int]]:
    """Stage 1's noisy latents and timesteps at noise level `sigma`, and what to record about them: nothing for
    rectified flow (the level is exact); for v-prediction the timestep whose sigma_t is closest and that sigma_t."""
    batch = latents.shape[0]
    if backbone.objective == "v_prediction":
        schedule = _schedule(backbone)
        t = timestep_for_sigma(schedule, sigma)
        noisy, timesteps, _ = v_prediction_sample(latents, noise, torch.full((batch,), t), schedule)
        return noisy, timesteps, {"timestep_used": t, "sigma_of_timestep": float(schedule_sigmas(schedule)[t])}
    noisy, timesteps, _ = noisy_sample(latents, noise, torch.full((batch,), sigma), backbone.num_train_timesteps)
    return noisy, timesteps, {}


# -- sampling: what a guidance step needs of the objective ----------------------------------------------------------
def timestep_sigma(backbone: Backbone, timestep: torch.Tensor) -> float:
    """The noise level of a sampler timestep (as `predict` takes it): t / T for rectified flow, sqrt(1 - a_t) for
    v-prediction."""
    t = float(timestep.flatten()[0])
    if backbone.objective == "v_prediction":
        return float(schedule_sigmas(_schedule(backbone))[round(t)])
    return t / backbone.num_train_timesteps


def noised_at(backbone: Backbone, latents: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor
              ) -> torch.Tensor:
    """Clean latents noised to a sampler timestep by the backbone's objective (a reference seen at the level the
    sample being guided is at)."""
    batch = torch.full((latents.shape[0],), float(timestep.flatten()[0]))
    if backbone.objective == "v_prediction":
        return v_prediction_sample(latents, noise, batch.round().long(), _schedule(backbone))[0]
    return noisy_sample(latents, noise, batch / backbone.num_train_timesteps, backbone.num_train_timesteps)[0]


def predicted_x0(backbone: Backbone, noisy: torch.Tensor, timestep: torch.Tensor, output: torch.Tensor
                 ) -> torch.Tensor:
    """The clean latents a model output implies: x0 = x_t - sigma v (rectified flow), x0 = sqrt(a_t) x_t -
    sqrt(1 - a_t) v (v-prediction)."""
    if backbone.objective == "v_prediction":
        a = float(_schedule(backbone)[round(float(timestep.flatten()[0]))])
        return a**0.5 * noisy - (1 - a) ** 0.5 * output
    return noisy - timestep_sigma(backbone, timestep) * output
