"""The one narrow interface between the method and a model family.

The method (head classification, head-masked LoRA, sparse sampling, adaptive RoPE, losses, training,
generation) is written once against `Backbone`. Everything that differs between Wan, the toy model and
later families lives in a subclass: how to load and encode (to an opaque `Conditioning`), which transformers
(`Expert`s) serve which noise levels, where each one's self-attention projections are (`AttentionSite`), how
to run an expert on a subset of frames with chosen temporal positions, how to hand over the queries and keys
of the video tokens, and how LoRA files are named for the family's tools. The training objectives (rectified flow,
v-prediction) are the method's (`method/objective.py`); a backbone only says which one it was trained with.
"""

from __future__ import annotations

import contextlib
import itertools
import types
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..progress import announced_calls, bar_options
from .experts import Expert
from .inputs import Conditioning, VideoGeometry
from .rotary import RotaryTransform
from .speed import SpeedOptions

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

# Called once per self-attention layer during a capture pass with the queries and keys of the VIDEO tokens
# (frame-major order) after q/k norm and RoPE, both shaped (batch, video tokens, heads, head_dim).
QKCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


class StepHook(Protocol):
    """What a guidance method changes while a family's own sampler runs (`Backbone.generate(step_hook=...)`); all
    tensors in the method's latent layout (B, C, F, h, w), timesteps as the sampler gives them to `predict`."""

    def velocity(self, step: int, timestep: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """The (guided) model output the sampler is about to use at denoising step `step`."""

    def latents(self, step: int, timestep: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """The latents denoising step `step` (>= 1) starts from: the hook may move them (it returns `latents`
        itself where it leaves them)."""

    def end(self) -> None:
        """The sampling is over (also after an error or an interrupt): put back whatever the hook changed on the
        model between a `latents` and a `velocity` call."""


def forget_last_sample(scheduler) -> None:
    """Make a multistep scheduler's next step a plain predictor step from the sample it is given. A corrector
    (diffusers' UniPC, which Wan samples with, and SA-Solver) rebuilds its next sample from the sample it stepped to
    (`last_sample`), not the one it is given, so it would undo a guidance's move of the latents; without one it
    skips the correction. Schedulers that keep no such sample are left as they are."""
    if getattr(scheduler, "last_sample", None) is not None:
        scheduler.last_sample = None


@contextlib.contextmanager
def attention_pre_hooks(modules: list[nn.Module], hook_for: Callable[[int], Callable]) -> Iterator[None]:
    """`hook_for(layer)` as a forward pre-hook (with kwargs) on each self-attention module, for a `capture_qk`
    block: the families differ in what the hook recomputes, not in how it is put on and taken off. The block runs
    eager: a compiled transformer block (`model.compile`) would skip hooks put on after it was compiled."""
    handles = [m.register_forward_pre_hook(hook_for(i), with_kwargs=True) for i, m in enumerate(modules)]
    try:
        with torch.compiler.set_stance("force_eager"):
            yield
    finally:
        for handle in handles:
            handle.remove()


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """A pipeline's float frames in [0, 1] as uint8 (T, H, W, 3), as every `generate` returns them."""
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)


def pipeline_call(prompt: str, negative_prompt: str, num_frames: int, height: int, width: int, steps: int, seed: int,
                  output_type: str = "np") -> dict:
    """What every family's diffusers video pipeline is called with (`Backbone.sample`): a CPU generator seeded
    with `seed`, as its users sample."""
    return {"prompt": prompt, "negative_prompt": negative_prompt or None, "num_frames": num_frames, "height": height,
            "width": width, "num_inference_steps": steps, "generator": torch.Generator("cpu").manual_seed(seed),
            "output_type": output_type}


@contextlib.contextmanager
def second_adapter_allowed() -> Iterator[None]:
    """PEFT warns whenever a second adapter joins a model; two adapters (spatial, motion) is the method."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        yield


class Backbone(SpeedOptions, ABC):
    """A loaded video diffusion model, seen through what the method needs."""

    name: str
    pipe: DiffusionPipeline  # the family's own pipeline: `sample` calls it, `guided_steps` wraps its scheduler
    experts: list[Expert]
    geometry: VideoGeometry
    device: torch.device
    dtype: torch.dtype
    num_train_timesteps: int = 1000
    flow_shift: float = 1.0  # the family's sampler shift, the default shift of training noise levels
    # The objective the family was trained with (method/objective.py): rectified flow (Wan, the toy model), or
    # v-prediction on a DDPM schedule (CogVideoX), whose alphas_cumprod (num_train_timesteps,) the backbone gives.
    objective: Literal["flow", "v_prediction"] = "flow"
    alphas_cumprod: torch.Tensor | None = None
    # whether the model animates a given first frame: never (text-to-video), always (image-to-video), or when
    # given one (Wan2.2-TI2V)
    image_mode: Literal["none", "required", "optional"] = "none"

    # whether `predict` takes a spatial_stride > 1 (tokens spaced out: stage 3 on a shrunk clip)
    spaced_positions: bool = True

    def __init__(self) -> None:
        # Expert name -> the module `predict` calls instead of the expert's own (a DDP wrapper while training).
        self.denoisers: dict[str, nn.Module] = {}
        # Where the encoders wait while they are not needed (`park_encoders`); None: they stay on `device`.
        self.park_device: torch.device | None = None
        self.compiled = False

    @classmethod
    @abstractmethod
    def config_geometry(cls, vae: dict, transformer: dict) -> VideoGeometry:
        """The sizes a checkpoint takes, from its VAE's and transformer's config.json alone (as its pipeline reads
        them): what `geometry` is once loaded, known before any weight is, so a clip is checked first."""

    # -- encoding ---------------------------------------------------------------------------------
    @abstractmethod
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(3, T, H, W) in [-1, 1] -> normalised latents (1, C, F, h, w) on `device`."""

    @abstractmethod
    def encode_prompt(self, prompt: str) -> Conditioning:
        """Prompt -> the conditioning the transformers take (batch 1)."""

    def encode_image(self, image: np.ndarray, num_frames: int, height: int, width: int) -> Conditioning:
        """Image-to-video: the conditioning of a first frame (H, W, 3) uint8 for a clip of that size, to be
        merged with the prompt's (`Conditioning.merged`)."""
        self.check_image(True)
        raise NotImplementedError(f"{type(self).__name__} declares an image mode but cannot encode images")

    def check_generation(self, num_frames: int, height: int, width: int, guidance_2: float | None,
                         image: np.ndarray | None) -> None:
        """What every family's `generate` refuses alike: a size the model cannot take, an image where it has no
        image mode (or none where it needs one), a low-noise guidance for a model with one transformer."""
        self.geometry.check(num_frames, height, width)
        self.check_image(image is not None)
        if guidance_2 is not None and len(self.experts) < 2:
            raise InputError("generate.guidance_2 is the low-noise expert's guidance; this model has one transformer")

    def check_image(self, given: bool) -> None:
        """Refuse an image for a text-to-video model, and its absence for an image-to-video one."""
        if given and self.image_mode == "none":
            raise InputError("this model has no image mode: --image is for image-to-video models (Wan I2V)")
        if not given and self.image_mode == "required":
            raise InputError("this is an image-to-video model: give --image (the picture to animate)")

    def token_grid(self, latents: torch.Tensor) -> tuple[int, int, int]:
        """(frames, rows, cols) of the transformer's video-token grid for latents (B, C, F, h, w)."""
        pt, ph, pw = self.geometry.patch
        _, _, f, h, w = latents.shape
        return f // pt, h // ph, w // pw

    def clip_shift(self, frames: int, height: int, width: int) -> float:
        """The shift the family's sampler gives a clip of this size, which training noise levels follow by
        default: `flow_shift` where it is fixed (a family whose sampler shifts by token count computes it)."""
        return self.flow_shift

    # -- the transformers -----------------------------------------------------------------------
    def expert_for(self, sigma: float) -> Expert:
        """The expert that serves noise level `sigma`."""
        return next(e for e in self.experts if e.serves(sigma))

    @abstractmethod
    def predict(
        self,
        expert: Expert,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        cond: Conditioning,
        frame_positions: torch.Tensor | None = None,
        spatial_stride: int = 1,
    ) -> torch.Tensor:
        """`expert`'s output for noisy latents; `frame_positions` (one per latent frame, possibly fractional)
        replace the temporal positions 0..F-1, so a subset of frames keeps its place in time (a family with
        absolute positions refuses them with an InputError naming the setting). `spatial_stride` s puts token
        rows and columns s positions apart: latents of the clip shrunk s times then span the positions of the
        full-size grid (s = 1: the stock positions; a family that cannot space them refuses s > 1)."""

    @contextlib.contextmanager
    def on_fake_tensors(self) -> Iterator[None]:
        """While active, the backbone runs on fake tensors (`fym plan` traces it at real size, where no values
        exist): a family whose model branches on tensor values (a shape that depends on a mask's values) runs, in
        its place, code that computes the same values with shapes known beforehand. Most have nothing to swap."""
        yield

    @abstractmethod
    def capture_qk(self, expert: Expert, callback: QKCallback, grad: bool = False
                   ) -> contextlib.AbstractContextManager[None]:
        """While active, every forward pass of `expert` calls `callback(layer, q, k)` for each self-attention
        layer, with the video tokens' queries and keys (see `QKCallback`); `grad`: q and k carry gradients back to
        the latents (guidance), otherwise they are computed without autograd."""

    @classmethod
    def check_rotary_config(cls, transformer: dict) -> None:
        """Refuse, from a transformer's config.json alone (before any weight loads), a checkpoint whose video
        positions are no rotary tables (`rotary_transform`); nothing where they are."""

    def rotary_transform(self, expert: Expert, transform: RotaryTransform
                         ) -> contextlib.AbstractContextManager[None]:
        """While active, every forward pass of `expert` gives its video tokens the rotary tables `transform` makes of
        the stock ones (the same tables to every layer; grads flow back to what `transform` adds). A family
        without rotary video positions refuses with an InputError naming the alternative."""
        raise InputError(f"{type(self).__name__} has no rotary video positions to optimise: set "
                         "guidance.ditflow.optimise: latent")

    @staticmethod
    @abstractmethod
    def comfyui_key(module_name: str) -> str:
        """ComfyUI-native module key (without .lora_A/.lora_B suffix) for a diffusers module name (static: export
        renames a run's LoRA files without loading any model)."""

    @staticmethod
    def comfyui_slot(module_name: str) -> tuple[int, int]:
        """(slot, slots): where the module's output rows sit in ComfyUI's weight of that key when ComfyUI fuses
        several diffusers projections into one linear layer (q, k, v -> qkv: slots 0, 1, 2 of 3). (0, 1): not
        fused."""
        return 0, 1

    @abstractmethod
    def save_diffusers_lora(self, path: str, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
        """Write a LoRA state dict (PEFT names relative to an expert's transformer) the way the family's
        diffusers pipeline `load_lora_weights` reads it."""

    @abstractmethod
    def load_lora(self, expert: Expert, path: str, adapter: str) -> None:
        """Load a LoRA file (diffusers or ComfyUI keys) into `expert` as adapter `adapter`, the way the family's
        diffusers pipeline loads it for users."""

    def draw_noise(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Gaussian noise for latents of `shape` (B, C, F, H, W), on the CPU: i.i.d., as diffusers' pipelines
        draw it. A family may correlate it across frames (the toy model's `noise_correlation`); every stage
        draws its noise here, so training and sampling always see the same prior."""
        return torch.randn(shape, generator=generator)

    # -- generation -----------------------------------------------------------------------------
    def generate(
        self,
        prompt: str,
        *,
        negative_prompt: str,
        num_frames: int,
        height: int,
        width: int,
        steps: int,
        guidance: float,
        guidance_2: float | None = None,
        seed: int,
        adapter_scales: dict[str, float],
        image: np.ndarray | None = None,
        step_hook: StepHook | None = None,
    ) -> np.ndarray:
        """Sample a video (T, H, W, 3) uint8 with the named LoRA adapters at the given scales (`guidance_2`: the
        low-noise expert's guidance, where there is one; None = `guidance`; `image`: the first frame to animate,
        for an image-to-video model, fitted to the size; `step_hook`: a guidance method acting between the
        sampler's steps): the family's own diffusers pipeline with a CPU generator seeded with `seed`, as its
        users sample."""
        self.check_generation(num_frames, height, width, guidance_2, image)
        call = pipeline_call(prompt, negative_prompt, num_frames, height, width, steps, seed)
        self.pipe.set_progress_bar_config(desc="generate", **bar_options())  # the denoising steps' bar
        with (self.adapters(adapter_scales), self.guided_steps(step_hook, num_frames, height, width),
              announced_calls(self.pipe.vae, "decode", "generate: decode (VAE)")):
            return to_uint8(self.sample(call, guidance, guidance_2, image))

    # The layout of the latents a family's sampler steps on; the method's is (B, C, F, h, w).
    def sampler_latents(self, latents: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        """Method-layout latents (B, C, F, h, w) in the layout the family's pipeline steps on, for a clip of `size`
        (pixel frames, height, width): the same by default."""
        return latents

    def method_latents(self, latents: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        """The inverse of `sampler_latents`."""
        return latents

    @contextlib.contextmanager
    def guided_steps(self, hook: StepHook | None, num_frames: int, height: int, width: int) -> Iterator[None]:
        """While active, every step of the family's sampler (`pipe.scheduler.step`, which each pipeline calls once
        per denoising step) hands its model output to `hook.velocity` before stepping, and the latents it gives to
        `hook.latents` before the next step. Every family and its own pipeline (classifier-free guidance, the
        scheduler, decoding) stay as they are; the hook sees the method's layout only. Once a hook moves the
        latents, the scheduler's memory of the sample it stepped to is dropped (`forget_last_sample`), so that
        the next step starts from the moved latents. The wrapper is a method bound to the scheduler, so a deep copy
        of it (LTX-2's pipelines step their audio latents on one) is bound to the copy and steps as its class does.
        When the block ends, however it ends, the scheduler's own step is back and `hook.end()` is called."""
        if hook is None:
            yield
            return
        scheduler, size, counter = self.pipe.scheduler, (num_frames, height, width), itertools.count()
        original = scheduler.step

        def step(owner, output: torch.Tensor, *args, **kwargs):
            if owner is not scheduler:  # a copy made while the hook was on: not the video's sampler
                return type(owner).step(owner, output, *args, **kwargs)
            i, timesteps = next(counter), scheduler.timesteps
            guided = hook.velocity(i, timesteps[i], self.method_latents(output, size))
            result = original(self.sampler_latents(guided, size).to(output.dtype), *args, **kwargs)
            if i + 1 >= len(timesteps):
                return result
            latents = result[0] if isinstance(result, tuple) else result.prev_sample
            given = self.method_latents(latents, size)
            moved = hook.latents(i + 1, timesteps[i + 1], given)
            if moved is given:
                return result
            moved = self.sampler_latents(moved, size).to(latents.dtype)
            forget_last_sample(scheduler)
            if isinstance(result, tuple):
                return (moved, *result[1:])
            result.prev_sample = moved
            return result

        scheduler.step = types.MethodType(step, scheduler)
        try:
            yield
        finally:
            del scheduler.step
            hook.end()

    @abstractmethod
    def sample(self, call: dict, guidance: float, guidance_2: float | None, image: np.ndarray | None
               ) -> np.ndarray:
        """The family's pipeline called with `call` (what every diffusers video pipeline takes), the guidance
        and its own arguments: its first video's frames (T, H, W, 3) in [0, 1]."""

    def unload_adapters(self) -> None:
        """Delete every adapter of every expert, so that the loaded model serves another run as a freshly loaded
        one would (the app keeps its model between jobs)."""
        for expert in self.experts:
            if loaded := sorted(expert.loaded_adapters()):
                expert.module.delete_adapters(loaded)

    def loaded_adapters(self) -> set[str]:
        """Adapters loaded into any expert."""
        return set().union(*(e.loaded_adapters() for e in self.experts))

    def set_active_adapters(self, scales: dict[str, float]) -> None:
        """In every expert, make exactly its loaded adapters with a non-zero scale in `scales` active, at those
        scales; no adapter at all where none is. Raises InputError for a requested adapter no expert has."""
        missing = [name for name, scale in scales.items() if scale != 0 and name not in self.loaded_adapters()]
        if missing:
            raise InputError(f"LoRA adapter(s) {', '.join(missing)} requested but not loaded")
        for expert in self.experts:
            loaded = expert.loaded_adapters()
            active = {name: scale for name, scale in scales.items() if scale != 0 and name in loaded}
            if active:
                expert.module.enable_adapters()
                expert.module.set_adapters(list(active), list(active.values()))
            elif loaded:
                expert.module.disable_adapters()

    @contextlib.contextmanager
    def adapters(self, scales: dict[str, float]) -> Iterator[None]:
        """`set_active_adapters(scales)` for the duration of a block, then every loaded adapter at scale 1."""
        self.set_active_adapters(scales)
        try:
            yield
        finally:
            loaded = sorted(self.loaded_adapters())
            if loaded:
                self.set_active_adapters(dict.fromkeys(loaded, 1.0))

    @contextlib.contextmanager
    def denoiser_as(self, expert: Expert, module: nn.Module) -> Iterator[None]:
        """Route `predict` for `expert` through `module` (e.g. a DDP wrapper of its transformer) for a while."""
        previous = self.denoisers.get(expert.name)
        self.denoisers[expert.name] = module
        try:
            yield
        finally:
            if previous is None:
                del self.denoisers[expert.name]
            else:
                self.denoisers[expert.name] = previous
