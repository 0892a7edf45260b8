"""Training-free motion transfer while sampling: DiTFlow's attention motion flow guidance and flow-guided sampling
(after FlowMotion), each a `StepHook` the backbone's own sampler calls between its steps (`Backbone.guided_steps`),
so they run on every family through the contract and combine with a tuned motion LoRA like any sampling does.

- DiTFlow: the reference's attention motion flow (method/motion_flow.py) at one layer, from a pass over its
  latents (clean by default) with an empty prompt; in the first denoising steps, a few Adam steps on the latent
  minimise the distance of its own AMF (target prompt, the step's timestep) to the reference's. The pass stops at
  that layer: the layers after it cannot change its q and k.
- Flow guidance: the reference noised to each guided step's level gives its predicted clean latents x0 (no
  inversion); a few Adam steps on the latent align the frame-to-frame differences of its predicted x0 (and, if
  weighted, x0 itself) with the reference's. The model's output is held fixed within a step, so gradients reach
  only the latent (no backward pass through the transformer). The velocity's component orthogonal to its running
  average over the guided steps is shrunk.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import torch

from ..backbones.base import Backbone, StepHook
from ..backbones.experts import Expert
from ..backbones.inputs import Conditioning
from ..config import DiTFlowSettings, FlowGuidanceSettings, GuidanceSettings
from ..errors import InputError
from .motion_flow import amf_distance, attention_motion_flow
from .objective import noised_at, predicted_x0, timestep_for_sigma, timestep_sigma

log = logging.getLogger("follow_your_motion")


class _Captured(Exception):
    """Ends a forward pass once the guided layer's q and k are taken."""


def guided_steps(settings: GuidanceSettings, steps: int) -> int:
    """How many denoising steps the guidance acts on, N = round(guided_fraction * steps): steps 1..N. Step 0
    starts from the drawn noise, which the family's sampler has read before a hook first runs (the hook moves the
    latents each step starts from, between steps), so at most steps - 1. Raises InputError for a guidance that
    would guide no step, or more than there are."""
    fraction = (settings.ditflow if settings.method == "ditflow" else settings.flow).guided_fraction
    guided = round(fraction * steps)
    if not 1 <= guided <= steps - 1:
        raise InputError(f"guidance.{settings.method}.guided_fraction {fraction} of {steps} sampling steps guides "
                         f"{guided} steps; it must guide 1 to {steps - 1} (the first step starts from the drawn "
                         f"noise): change the fraction or generate.steps")
    return guided


@dataclass
class Guide:
    """What both guidances share: the backbone, the reference and prompts, how many steps they guide, and a record
    of each guided step's losses (the run's log keeps it)."""

    backbone: Backbone
    reference: torch.Tensor  # (1, C, F, h, w) clean reference latents
    reference_cond: Conditioning  # the prompt the reference is read with
    target_cond: Conditioning  # the prompt being sampled
    guided: int  # N: denoising steps 1..N are guided (`guided_steps`)
    history: list[dict] = field(default_factory=list)

    def guides(self, step: int) -> bool:
        """Whether denoising step `step` is guided."""
        return 1 <= step <= self.guided

    def _check(self, latents: torch.Tensor) -> None:
        if latents.shape[1:] != self.reference.shape[1:]:
            raise InputError(f"guidance compares the sample with the reference latent by latent: the sample's "
                             f"latents {tuple(latents.shape[1:])} differ from the reference's "
                             f"{tuple(self.reference.shape[1:])}; generate at the reference's frame count and size")

    def _predict(self, expert: Expert, latents: torch.Tensor, timestep: torch.Tensor, cond: Conditioning
                 ) -> torch.Tensor:
        return self.backbone.predict(expert, latents, timestep.reshape(1).expand(len(latents)), cond)

    def _optimise(self, step: int, timestep: torch.Tensor, latents: torch.Tensor, lr: float, inner_steps: int,
                  loss_of) -> torch.Tensor:
        """`inner_steps` Adam steps on the latents minimising `loss_of(latents)`; the moved latents."""
        self._check(latents)
        moved = latents.detach().float().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([moved], lr=lr)
        losses = []
        with torch.enable_grad():
            for _ in range(inner_steps):
                optimiser.zero_grad(set_to_none=True)
                loss = loss_of(moved)
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
        record = {"step": step, "timestep": float(timestep), "lr": lr, "losses": losses}
        self.history.append(record)
        log.info("guided step %d/%d (t=%.1f): loss %.4g -> %.4g", step, self.guided, float(timestep), losses[0],
                 losses[-1])
        return moved.detach().to(latents.dtype)


@dataclass
class DiTFlowGuide(Guide):
    """DiTFlow as a StepHook (see the module's docstring)."""

    settings: DiTFlowSettings = field(default_factory=DiTFlowSettings)
    noise: torch.Tensor | None = None  # the reference's noise, when it is read at a noise level above 0
    _reference_flow: dict[str, torch.Tensor] = field(default_factory=dict)

    def block(self, expert: Expert) -> int:
        layers = len(expert.sites)
        block = layers // 2 if self.settings.block is None else self.settings.block
        if block >= layers:
            raise InputError(f"guidance.ditflow.block is {block}; this model has layers 0..{layers - 1}")
        return block

    def flow(self, expert: Expert, latents: torch.Tensor, timestep: torch.Tensor, cond: Conditioning,
             hard: bool = False) -> torch.Tensor:
        """The AMF of `latents` at `timestep` under `cond`, at the guided layer (differentiable unless `hard`)."""
        block, taken = self.block(expert), {}

        def take(layer: int, q: torch.Tensor, k: torch.Tensor) -> None:
            if layer == block:
                taken["qk"] = (q, k)
                raise _Captured

        with self.backbone.capture_qk(expert, take, grad=torch.is_grad_enabled()), contextlib.suppress(_Captured):
            self._predict(expert, latents, timestep, cond)
        q, k = taken["qk"]
        s = self.settings
        return attention_motion_flow(q, k, self.backbone.token_grid(latents), s.temperature, s.query_chunk, hard)

    def reference_flow(self, expert: Expert) -> torch.Tensor:
        """The reference's AMF through `expert` (computed once per expert)."""
        if expert.name not in self._reference_flow:
            sigma = self.settings.reference_sigma
            timestep = self._timestep_of(sigma)
            latents = self.reference if sigma == 0 else noised_at(self.backbone, self.reference, self.noise, timestep)
            with torch.no_grad():
                self._reference_flow[expert.name] = self.flow(expert, latents, timestep, self.reference_cond,
                                                              hard=self.settings.hard_reference)
        return self._reference_flow[expert.name]

    def _timestep_of(self, sigma: float) -> torch.Tensor:
        """The model timestep of noise level `sigma` (rectified flow: sigma T; v-prediction: the nearest step)."""
        if self.backbone.objective == "v_prediction":
            return torch.tensor(float(timestep_for_sigma(self.backbone.alphas_cumprod, sigma)))
        return torch.tensor(sigma * self.backbone.num_train_timesteps)

    def velocity(self, step: int, timestep: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return output

    def latents(self, step: int, timestep: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        if not self.guides(step):
            return latents
        expert = self.backbone.expert_for(timestep_sigma(self.backbone, timestep))
        first, last = self.settings.lr
        lr = first + (last - first) * ((step - 1) / max(self.guided - 1, 1))
        reference = self.reference_flow(expert)

        def loss_of(moved: torch.Tensor) -> torch.Tensor:
            return amf_distance(self.flow(expert, moved, timestep, self.target_cond), reference)

        return self._optimise(step, timestep, latents, lr, self.settings.inner_steps, loss_of)


@dataclass
class FlowGuide(Guide):
    """Flow-guided sampling as a StepHook (see the module's docstring)."""

    settings: FlowGuidanceSettings = field(default_factory=FlowGuidanceSettings)
    noise: torch.Tensor | None = None  # the reference's noise at every guided step (no inversion)
    average: torch.Tensor | None = None  # the running average of the velocity over the guided steps

    def velocity(self, step: int, timestep: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        if not self.guides(step):
            return output
        s = self.settings
        v = output.float()
        self.average = v if self.average is None else s.momentum * self.average + (1 - s.momentum) * v
        along = self.average.flatten(1)
        coefficient = (v.flatten(1) * along).sum(1, keepdim=True) / along.square().sum(1, keepdim=True).clamp_min(1e-12)
        parallel = (coefficient * along).view_as(v)
        return (parallel + s.orthogonal_scale * (v - parallel)).to(output.dtype)

    def loss(self, x0: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """The weighted distance of predicted clean latents to the reference's: frame differences and x0 itself."""
        s = self.settings
        loss = s.difference_weight * (x0.diff(dim=2) - reference.diff(dim=2)).square().mean()
        if s.x0_weight:
            loss = loss + s.x0_weight * (x0 - reference).square().mean()
        return loss

    def reference_x0(self, expert: Expert, timestep: torch.Tensor) -> torch.Tensor:
        """The reference's predicted clean latents at `timestep`: noised to it, read under its prompt."""
        noisy = noised_at(self.backbone, self.reference, self.noise, timestep)
        with torch.no_grad():
            return predicted_x0(self.backbone, noisy, timestep, self._predict(expert, noisy, timestep,
                                                                              self.reference_cond))

    def latents(self, step: int, timestep: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        if not self.guides(step):
            return latents
        expert = self.backbone.expert_for(timestep_sigma(self.backbone, timestep))
        reference = self.reference_x0(expert, timestep)

        def loss_of(moved: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():  # the model's output held fixed: the gradient reaches only the latent
                output = self._predict(expert, moved.detach(), timestep, self.target_cond)
            return self.loss(predicted_x0(self.backbone, moved, timestep, output), reference)

        return self._optimise(step, timestep, latents, self.settings.lr, self.settings.inner_steps, loss_of)


def make_guide(backbone: Backbone, settings: GuidanceSettings, reference: torch.Tensor, target_prompt: str,
               steps: int, seed: int, image_given: bool = False, reference_prompt: str = "") -> StepHook | None:
    """The StepHook of `settings.method` for sampling `target_prompt` in `steps` steps with the motion of the clean
    `reference` latents (1, C, F, h, w); None for "none". The prompts are encoded here (encoders must be ready)."""
    if settings.method == "none":
        return None
    if image_given:
        raise InputError(f"guidance.method {settings.method} runs text-to-video only: give no image, or no guidance")
    guided = guided_steps(settings, steps)
    noise = backbone.draw_noise(tuple(reference.shape), torch.Generator().manual_seed(seed)).to(reference)
    common = {"backbone": backbone, "reference": reference, "reference_cond": backbone.encode_prompt(reference_prompt),
              "target_cond": backbone.encode_prompt(target_prompt), "noise": noise, "guided": guided}
    if settings.method == "ditflow":
        return DiTFlowGuide(settings=settings.ditflow, **common)
    return FlowGuide(settings=settings.flow, **common)
