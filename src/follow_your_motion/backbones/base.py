"""The one narrow interface between the method and a model family.

The method (head classification, head-masked LoRA, sparse sampling, adaptive RoPE, losses, training,
generation) is written once against `Backbone`. Everything that differs between Wan, the toy model and
later families lives in a subclass: how to load, encode, run the transformer on a subset of frames with
chosen temporal RoPE positions, expose queries/keys of self-attention, name LoRA targets and export keys.
"""

from __future__ import annotations

import contextlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import InputError

# Called once per self-attention layer during a capture pass with queries and keys after q/k norm and
# RoPE, both shaped (batch, tokens, heads, head_dim).
QKCallback = Callable[[int, torch.Tensor, torch.Tensor], None]

# Projections of one self-attention layer that LoRA may target, by role. "q", "k", "v" are split into
# heads along their OUTPUT rows; "o" along its INPUT columns.
ROW_ROLES = ("q", "k", "v")
COLUMN_ROLES = ("o",)


@contextlib.contextmanager
def second_adapter_allowed() -> Iterator[None]:
    """PEFT warns whenever a second adapter joins a model; two adapters (spatial, motion) is the method."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        yield


@dataclass(frozen=True)
class VideoGeometry:
    """What sizes of video a backbone accepts and how pixels map to latent frames and tokens."""

    temporal_stride: int  # pixel frames per latent frame (after the first)
    spatial_stride: int  # pixels per latent cell
    patch: tuple[int, int, int]  # transformer patch (t, h, w) in latent cells

    @property
    def size_multiple(self) -> int:
        return self.spatial_stride * self.patch[1]

    def valid_frames(self, pixel_frames: int) -> bool:
        return pixel_frames >= 1 and (pixel_frames - 1) % self.temporal_stride == 0

    def latent_frames(self, pixel_frames: int) -> int:
        return (pixel_frames - 1) // self.temporal_stride + 1

    def pixel_frames(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.temporal_stride + 1

    @property
    def frames_rule(self) -> str:
        """The pixel frame counts the backbone takes, as users read them ("4k+1")."""
        return f"{self.temporal_stride}k+1" if self.temporal_stride > 1 else "any count"

    @property
    def min_frames(self) -> int:
        """Fewest pixel frames for motion: two latent frames (one frame has no motion to learn)."""
        return self.pixel_frames(2)

    def largest_valid_frames(self, pixel_frames: int) -> int:
        """The most pixel frames the backbone takes that fit in `pixel_frames` (0 if none)."""
        return self.pixel_frames(self.latent_frames(pixel_frames)) if pixel_frames >= 1 else 0

    def check(self, frames: int, height: int, width: int) -> None:
        """Raise ValueError naming the first size this backbone cannot take."""
        if not self.valid_frames(frames):
            lo = self.pixel_frames(max(1, self.latent_frames(frames)))
            raise InputError(
                f"frames must be {self.frames_rule} (got {frames}; nearest valid: {lo} or "
                f"{lo + self.temporal_stride})"
            )
        m = self.size_multiple
        for name, value in (("height", height), ("width", width)):
            if value <= 0 or value % m:
                raise InputError(f"{name} must be a positive multiple of {m} (got {value})")


class Backbone(ABC):
    """A loaded text-to-video diffusion transformer, seen through what the method needs."""

    name: str
    transformer: nn.Module
    geometry: VideoGeometry
    num_layers: int
    num_heads: int
    head_dim: int
    device: torch.device
    dtype: torch.dtype

    def __init__(self) -> None:
        # The module the training loop calls; a distributed wrapper of `transformer` while training.
        self.denoiser: nn.Module | None = None

    # -- encoding ---------------------------------------------------------------------------------
    @abstractmethod
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(3, T, H, W) in [-1, 1] -> normalised latents (1, C, F, h, w) on `device`."""

    @abstractmethod
    def encode_prompt(self, prompt: str) -> torch.Tensor:
        """Prompt -> text embeddings (1, L, D), the conditioning the transformer takes."""

    def token_grid(self, latents: torch.Tensor) -> tuple[int, int, int]:
        """(frames, rows, cols) of the transformer's token grid for latents (B, C, F, h, w)."""
        pt, ph, pw = self.geometry.patch
        _, _, f, h, w = latents.shape
        return f // pt, h // ph, w // pw

    # -- the transformer ------------------------------------------------------------------------
    @abstractmethod
    def predict(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text: torch.Tensor,
        frame_positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Model output for noisy latents; `frame_positions` (one per latent frame, possibly fractional)
        replace the temporal RoPE positions 0..F-1, so a subset of frames keeps its place in time."""

    @abstractmethod
    def capture_qk(self, callback: QKCallback) -> contextlib.AbstractContextManager[None]:
        """While active, every forward pass calls `callback(layer, q, k)` for each self-attention layer."""

    @abstractmethod
    def lora_targets(self, layer: int) -> dict[str, str]:
        """Module names (relative to `transformer`) of the layer's self-attention projections by role."""

    @staticmethod
    @abstractmethod
    def comfyui_key(module_name: str) -> str:
        """ComfyUI-native module key (without .lora_A/.lora_B suffix) for a diffusers module name (static: export
        renames a run's LoRA files without loading any model)."""

    @abstractmethod
    def save_diffusers_lora(self, path: str, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
        """Write a LoRA state dict (PEFT names relative to `transformer`) the way the family's diffusers
        pipeline `load_lora_weights` reads it."""

    @abstractmethod
    def load_lora(self, path: str, adapter: str) -> None:
        """Load a LoRA file (diffusers or ComfyUI keys) as adapter `adapter`, the way the family's
        diffusers pipeline loads it for users."""

    # -- flow matching --------------------------------------------------------------------------
    num_train_timesteps: int = 1000
    flow_shift: float = 1.0  # the family's sampler shift, the default shift of training noise levels

    def draw_noise(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Gaussian noise for latents of `shape` (B, C, F, H, W), on the CPU: i.i.d., as diffusers' pipelines
        draw it. A family may correlate it across frames (the toy model's `noise_correlation`); every stage
        draws its noise here, so training and sampling always see the same prior."""
        return torch.randn(shape, generator=generator)

    def sample_sigmas(
        self, n: int, generator: torch.Generator, weighting: str, shift: float | None = None
    ) -> torch.Tensor:
        """Noise levels in (0, 1) for training: "uniform" or "logit_normal", then shifted towards noise by
        `shift` (default: the family's `flow_shift`), s' = shift s / (1 + (shift - 1) s)."""
        if weighting == "uniform":
            u = torch.rand(n, generator=generator)
        elif weighting == "logit_normal":
            u = torch.sigmoid(torch.randn(n, generator=generator))
        else:
            raise InputError(f"unknown timestep weighting {weighting!r} (uniform, logit_normal)")
        s = self.flow_shift if shift is None else shift
        return (s * u / (1 + (s - 1) * u)).clamp(1e-4, 1.0)

    def noisy_sample(
        self, latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rectified flow: x_t = (1 - s) x0 + s n, target velocity n - x0, timestep s * T."""
        s = sigmas.view(-1, *([1] * (latents.ndim - 1))).to(latents)
        noisy = (1 - s) * latents + s * noise
        return noisy, sigmas * self.num_train_timesteps, noise - latents

    # -- generation -----------------------------------------------------------------------------
    @abstractmethod
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
        seed: int,
        adapter_scales: dict[str, float],
    ) -> np.ndarray:
        """Sample a video (T, H, W, 3) uint8 with the named LoRA adapters at the given scales."""

    def loaded_adapters(self) -> set[str]:
        return set(getattr(self.transformer, "peft_config", None) or {})

    def set_active_adapters(self, scales: dict[str, float]) -> None:
        """Make exactly the adapters in `scales` with a non-zero scale active, at those scales; no adapter
        at all when none is. Raises ValueError for a requested adapter that is not loaded."""
        loaded = self.loaded_adapters()
        missing = [name for name, scale in scales.items() if scale != 0 and name not in loaded]
        if missing:
            raise InputError(f"LoRA adapter(s) {', '.join(missing)} requested but not loaded")
        active = {name: scale for name, scale in scales.items() if scale != 0}
        if active:
            self.transformer.enable_adapters()
            self.transformer.set_adapters(list(active), list(active.values()))
        elif loaded:
            self.transformer.disable_adapters()

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
    def denoiser_as(self, module: nn.Module) -> Iterator[None]:
        """Route `predict` through `module` (e.g. a DDP wrapper of the transformer) for a while."""
        previous, self.denoiser = self.denoiser, module
        try:
            yield
        finally:
            self.denoiser = previous
