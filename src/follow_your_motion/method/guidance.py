"""Training-free motion transfer while sampling: DiTFlow's attention motion flow guidance and flow-guided sampling
(after FlowMotion), each a `StepHook` the backbone's own sampler calls between its steps (`Backbone.guided_steps`),
so they run on every family through the contract and combine with a tuned motion LoRA like any sampling does.

- DiTFlow: the reference's attention motion flow (method/motion_flow.py) at one layer, from a pass over its
  latents (clean by default) with an empty prompt; in the first denoising steps, a few Adam steps on the latent
  minimise the distance of its own AMF (target prompt, the step's timestep) to the reference's. The pass stops at
  that layer: the layers after it cannot change its q and k. Or (`optimise: positions`, the release's embedding
  mode) the same Adam steps move float32 deltas added to the video tokens' rotary tables instead of the latent
  (`Backbone.rotary_transform`), each guided step starting from the last one's; the step's own denoising passes use
  the moved tables, the later steps the stock ones. The deltas of every guided step go to a file
  (method/positions.py) that `positions_from` injects into a sampling with another prompt, nothing optimised.
- Flow guidance: the reference noised to each guided step's level gives its predicted clean latents x0 (no
  inversion); a few Adam steps on the latent align the frame-to-frame differences of its predicted x0 (and, if
  weighted, x0 itself) with the reference's. The model's output is held fixed within a step, so gradients reach
  only the latent (no backward pass through the transformer). The velocity's component orthogonal to its running
  average over the guided steps is shrunk.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..backbones.base import Backbone
from ..backbones.experts import Expert
from ..backbones.inputs import Conditioning
from ..backbones.rotary import RotaryTransform
from ..config import DiTFlowSettings, FlowGuidanceSettings, GuidanceSettings
from ..errors import InputError
from .motion_flow import amf_distance, attention_motion_flow
from .objective import noised_at, predicted_x0, timestep_for_sigma, timestep_sigma
from .positions import Positions, check_shapes, read_positions, save_positions

log = logging.getLogger("follow_your_motion")


class _Captured(Exception):
    """Ends a forward pass once the guided layer's q and k (or the rotary tables) are taken."""


def adding(deltas: list[torch.Tensor]) -> RotaryTransform:
    """The rotary transform that adds `deltas` (float32, broadcast over a batch) to the stock tables, in float32 or
    the tables' wider dtype (float64), the result in the tables' own dtype: zero deltas give the stock tables bit for
    bit."""
    def transform(tables: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple((t.to(torch.promote_types(t.dtype, torch.float32)) + d.to(t.device)).to(t.dtype)
                     for t, d in zip(tables, deltas, strict=True))

    return transform


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

    def end(self) -> None:
        """Nothing of the model to put back (see `StepHook.end`)."""

    def outputs(self, folder: Path, name: str) -> dict[str, Path]:
        """Files the guidance made besides the sample `name`, written under `folder`, by kind: none by default."""
        return {}

    def _optimise(self, step: int, timestep: torch.Tensor, parameters: list[torch.Tensor], lr: float,
                  inner_steps: int, loss: Callable[[], torch.Tensor]) -> None:
        """`inner_steps` Adam steps on `parameters` (float32 leaves) minimising `loss()`; the losses go to
        `history`."""
        optimiser = torch.optim.Adam(parameters, lr=lr)
        losses = []
        with torch.enable_grad():
            for _ in range(inner_steps):
                optimiser.zero_grad(set_to_none=True)
                value = loss()
                value.backward()
                optimiser.step()
                losses.append(value.item())
        record = {"step": step, "timestep": float(timestep), "lr": lr, "losses": losses}
        self.history.append(record)
        log.info("guided step %d/%d (t=%.1f): loss %.4g -> %.4g", step, self.guided, float(timestep), losses[0],
                 losses[-1])

    def _moved(self, step: int, timestep: torch.Tensor, latents: torch.Tensor, lr: float, inner_steps: int,
               loss_of: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The latents after `_optimise` moved them to minimise `loss_of(latents)`."""
        self._check(latents)
        moved = latents.detach().float().clone().requires_grad_(True)
        self._optimise(step, timestep, [moved], lr, inner_steps, lambda: loss_of(moved))
        return moved.detach().to(latents.dtype)


@dataclass
class DiTFlowGuide(Guide):
    """DiTFlow as a StepHook (see the module's docstring)."""

    settings: DiTFlowSettings = field(default_factory=DiTFlowSettings)
    noise: torch.Tensor | None = None  # the reference's noise, when it is read at a noise level above 0
    model: str = ""  # the model sampled with and its variant, which a positions file records
    variant: str = ""
    steps: int = 0  # the sampling's steps, which a positions file records
    # optimise: positions: the stock tables' shapes (`prepare_positions`); per guided step so far, the deltas
    # optimised (on the CPU); or those injected from a file
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    positions: list[list[torch.Tensor]] = field(default_factory=list)
    injected: Positions | None = None
    _reference_flow: dict[str, torch.Tensor] = field(default_factory=dict)
    _installed: contextlib.ExitStack | None = None  # the rotary transforms on while a guided step denoises

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
        self.end()  # the step's denoising passes are done: the stock tables again
        return output

    def latents(self, step: int, timestep: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        if not self.guides(step):
            return latents
        if self.injected is not None:
            self._check(latents)
            self._install(self.injected.deltas[step - 1])
            return latents
        expert = self.backbone.expert_for(timestep_sigma(self.backbone, timestep))
        first, last = self.settings.lr
        lr = first + (last - first) * ((step - 1) / max(self.guided - 1, 1))
        reference = self.reference_flow(expert)

        def loss_of(moved: torch.Tensor) -> torch.Tensor:
            return amf_distance(self.flow(expert, moved, timestep, self.target_cond), reference)

        if self.settings.optimise == "latent":
            return self._moved(step, timestep, latents, lr, self.settings.inner_steps, loss_of)
        self._check(latents)
        start = self.positions[-1] if self.positions else [torch.zeros(shape) for shape in self.shapes]
        deltas = [d.to(latents.device, torch.float32).clone().requires_grad_(True) for d in start]
        fixed = latents.detach().float()
        with self.backbone.rotary_transform(expert, adding(deltas)):
            self._optimise(step, timestep, deltas, lr, self.settings.inner_steps, lambda: loss_of(fixed))
        self.positions.append([d.detach().to("cpu", copy=True) for d in deltas])
        self._install([d.detach() for d in deltas])
        return latents

    def stock_tables(self, expert: Expert, latents: torch.Tensor, timestep: torch.Tensor
                     ) -> tuple[torch.Tensor, ...]:
        """The video tokens' stock rotary tables for `latents`: a pass stopped once its rotary embedding has run."""
        seen: list[torch.Tensor] = []

        def stop(tables: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            seen.extend(tables)
            raise _Captured

        with self.backbone.rotary_transform(expert, stop), contextlib.suppress(_Captured), torch.no_grad():
            self._predict(expert, latents, timestep, self.target_cond)
        if not seen:
            raise InputError(f"{type(self.backbone).__name__}'s forward pass ran no rotary embedding: no positions "
                             "to optimise; set guidance.ditflow.optimise: latent")
        return tuple(t.detach() for t in seen)

    def prepare_positions(self) -> None:
        """`optimise: positions`, before sampling starts: the stock tables' shapes from a pass over the reference
        (whose size the sample has), which refuses a model without rotary tables; the `positions_from` file read and
        refused (InputError) if made for another sampling (guided or sampling steps), family, variant or table
        shapes."""
        stock = self.stock_tables(self.backbone.experts[0], self.reference, torch.tensor(0.0))
        self.shapes = [tuple(t.shape) for t in stock]
        if self.settings.positions_from is not None:
            path = Path(self.settings.positions_from)
            positions = read_positions(path, self.guided, self.steps, self.backbone.name, self.variant)
            check_shapes(path, positions, self.shapes, tuple(self.reference.shape[1:]), self.transformers())
            self.injected = positions

    def transformers(self) -> list[list[int]]:
        """Each transformer's layers, heads and head width, which a positions file records and is checked against."""
        return [[len(e.sites), e.sites[0].heads, e.sites[0].head_dim] for e in self.backbone.experts]

    def _install(self, deltas: list[torch.Tensor]) -> None:
        """`deltas` added to every expert's tables until `end` (moved to the device once, not at every pass)."""
        self.end()
        deltas = [d.to(self.reference.device) for d in deltas]
        with contextlib.ExitStack() as stack:
            for expert in self.backbone.experts:
                stack.enter_context(self.backbone.rotary_transform(expert, adding(deltas)))
            self._installed = stack.pop_all()

    def end(self) -> None:
        if self._installed is not None:
            self._installed.close()
            self._installed = None

    def outputs(self, folder: Path, name: str) -> dict[str, Path]:
        """`optimise: positions` (not injected): every guided step's deltas in `<name>_positions.safetensors`."""
        if self.injected is not None or not self.positions:
            return {}
        positions = Positions(self.positions, self.backbone.name, self.model, self.variant,
                              tuple(self.reference.shape[1:]), self.steps, self.transformers())
        path = save_positions(Path(folder) / f"{name}_positions.safetensors", positions)
        log.info("DiTFlow's optimised positions of %d guided steps: %s", len(self.positions), path)
        return {"positions": path}


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

        return self._moved(step, timestep, latents, self.settings.lr, self.settings.inner_steps, loss_of)


def make_guide(backbone: Backbone, settings: GuidanceSettings, reference: torch.Tensor, target_prompt: str,
               steps: int, seed: int, image_given: bool = False, reference_prompt: str = "", model: str = "",
               variant: str = "") -> Guide | None:
    """The StepHook of `settings.method` for sampling `target_prompt` in `steps` steps with the motion of the clean
    `reference` latents (1, C, F, h, w); None for "none". The prompts are encoded here (encoders must be ready).
    `model`, `variant`: what a positions file records as the model sampled with."""
    if settings.method == "none":
        return None
    if image_given:
        raise InputError(f"guidance.method {settings.method} runs text-to-video only: give no image, or no guidance")
    guided = guided_steps(settings, steps)
    noise = backbone.draw_noise(tuple(reference.shape), torch.Generator().manual_seed(seed)).to(reference)
    common = {"backbone": backbone, "reference": reference, "reference_cond": backbone.encode_prompt(reference_prompt),
              "target_cond": backbone.encode_prompt(target_prompt), "noise": noise, "guided": guided}
    if settings.method == "ditflow":
        guide = DiTFlowGuide(settings=settings.ditflow, model=model, variant=variant, steps=steps, **common)
        if settings.ditflow.optimise == "positions":
            guide.prepare_positions()
        return guide
    return FlowGuide(settings=settings.flow, **common)
