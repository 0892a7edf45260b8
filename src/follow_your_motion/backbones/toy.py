"""The embedded ShapesWorld toy model: a small Wan-architecture transformer in pixel space.

It is a genuine `WanTransformer3DModel` (same attention, RoPE, LoRA targets and export keys as Wan2.1)
inside a `WanPipeline` with no VAE and no T5: pixels in [-1, 1] are the "latents" (temporal and spatial
stride 1, patch 1x4x4) and prompts go through a tiny word-level text encoder trained with it. The method
code cannot tell it from Wan; only encoding and sampling differ.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
from safetensors.torch import load_file
from torch import nn

from ..errors import InputError
from ..progress import progress
from .base import StepHook
from .experts import Expert
from .inputs import Conditioning, VideoGeometry
from .loading import ModelLoadError
from .wan import WanBackbone

PAD, UNK = "<pad>", "<unk>"


def default_model_dir() -> Path:
    """The toy model shipped inside the package."""
    return Path(str(resources.files("follow_your_motion") / "toyworld" / "assets" / "toy-model"))


class ToyTextEncoder(nn.Module):
    """Word embeddings + a small transformer encoder over ShapesWorld's closed vocabulary."""

    def __init__(self, vocabulary: list[str], dim: int = 64, layers: int = 1, max_words: int = 16) -> None:
        super().__init__()
        self.vocabulary = list(vocabulary)
        self.index = {w: i + 2 for i, w in enumerate(self.vocabulary)}  # 0 pad, 1 unknown (never trained)
        self.max_words = max_words
        self.embed = nn.Embedding(len(self.vocabulary) + 2, dim)
        self.position = nn.Parameter(torch.zeros(max_words, dim))
        layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=dim * 2, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Word ids (B, max_words); unknown words raise a ValueError listing the vocabulary."""
        ids = torch.zeros(len(prompts), self.max_words, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            words = prompt.lower().replace(",", " ").replace(".", " ").split()
            unknown = [w for w in words if w not in self.index]
            if unknown:
                raise InputError(
                    f"the toy model does not know {', '.join(map(repr, unknown))}; "
                    f"its vocabulary is: {' '.join(self.vocabulary)}"
                )
            if len(words) > self.max_words:
                raise InputError(f"prompt {prompt!r} has {len(words)} words; the toy model takes {self.max_words}")
            ids[row, : len(words)] = torch.tensor([self.index[w] for w in words], dtype=torch.long)
        return ids

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pad = ids == 0
        hidden = self.embed(ids) + self.position
        hidden = self.encoder(hidden, src_key_padding_mask=pad)
        return hidden.masked_fill(pad[..., None], 0.0)


def toy_transformer(config: dict) -> WanTransformer3DModel:
    return WanTransformer3DModel(**config)


class ToyBackbone(WanBackbone):
    """The toy model behind the backbone interface; generation runs its own flow-matching Euler loop."""

    name = "toy"

    def __init__(self, transformer: WanTransformer3DModel, text_encoder: ToyTextEncoder, sampler: dict,
                 time_span: int = 0, noise_correlation: float = 0.0, coordinate_channels: bool = False,
                 device: str | torch.device = "cpu") -> None:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=sampler.get("shift", 1.0))
        pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer, scheduler=scheduler)
        super().__init__(pipe, device=device, text_length=text_encoder.max_words)
        self.transformer = transformer  # the toy's only expert's transformer, which pretraining trains
        self.text_encoder = text_encoder.to(self.device).eval().requires_grad_(False)
        self.sampler = sampler
        self.flow_shift = float(sampler.get("shift", 1.0))
        self.time_span = time_span  # frames over which the time channel spans [-1, 1]; 0 = no time channel
        self.coordinate_channels = coordinate_channels  # two input channels holding each pixel's x and y
        self.noise_correlation = noise_correlation

    @classmethod
    def config_geometry(cls, vae: dict, transformer: dict) -> VideoGeometry:
        """Pixels are the latents: one frame per frame, one pixel per cell, the transformer's patch."""
        return VideoGeometry(temporal_stride=1, spatial_stride=1, patch=tuple(transformer["patch_size"]))

    @classmethod
    def load(cls, source: str | None = None, dtype: torch.dtype = torch.float32, device: str = "cpu",
             offload: bool = False) -> ToyBackbone:
        """Load a toy model folder (config.json + model.safetensors); None = the shipped one."""
        folder = Path(source) if source else default_model_dir()
        try:
            meta = json.loads((folder / "config.json").read_text())
            weights = load_file(str(folder / "model.safetensors"))
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"toy model {folder}: cannot be loaded ({err})") from err
        model = cls.build(meta)
        model_state = {k.removeprefix("transformer."): v for k, v in weights.items() if k.startswith("transformer.")}
        text_state = {k.removeprefix("text."): v for k, v in weights.items() if k.startswith("text.")}
        model.transformer.load_state_dict(model_state)
        model.text_encoder.load_state_dict(text_state)
        return model.to_device(device)

    @classmethod
    def build(cls, meta: dict) -> ToyBackbone:
        """A randomly initialised toy model from its config (what pretraining starts from)."""
        text = ToyTextEncoder(meta["vocabulary"], **meta.get("text", {}))
        return cls(toy_transformer(meta["transformer"]), text, meta.get("sampler", {}), meta.get("time_span", 0),
                   meta.get("noise_correlation", 0.0), meta.get("coordinate_channels", False))

    def encoders(self) -> dict[str, nn.Module]:
        """The toy's word-level text encoder (it has no VAE)."""
        return {"text_encoder": self.text_encoder}

    def to_device(self, device: str) -> ToyBackbone:
        self.device = torch.device(device)
        self.transformer.to(self.device)
        self.text_encoder.to(self.device)
        return self

    def time_channel(self, latents: torch.Tensor, frame_positions: torch.Tensor | None) -> torch.Tensor:
        """One input channel holding each frame's position on the timeline, scaled to [-1, 1] over
        `time_span` frames, the way Wan2.1-I2V concatenates conditioning channels to its latents.

        Wan's RoPE is relative only, so a small model cannot tell frame 3 from frame 5 except through the
        clip's ends, and motion whose velocity changes over time (an orbit, a zigzag) needs absolute time.
        The channel follows `frame_positions`, so sparse frames keep their time here as in RoPE."""
        b, _, f, h, w = latents.shape
        positions = torch.arange(f, dtype=torch.float64) if frame_positions is None else frame_positions
        value = (2 * positions / (self.time_span - 1) - 1).to(latents)
        return value.view(1, 1, f, 1, 1).expand(b, 1, f, h, w)

    @staticmethod
    def coordinates(latents: torch.Tensor, spatial_stride: int = 1) -> torch.Tensor:
        """Two input channels holding each pixel's column and row, scaled to [-1, 1] (B, 2, T, H, W).

        RoPE tells attention only how far apart two pixels are, never where a pixel is, so without them a
        small model must work out from the noise alone where each frame's object sits relative to the others.
        With absolute positions and absolute time, "moves right" becomes a fact about each frame (further
        right as t grows) that the model can learn like a colour (docs/toyworld.md). A clip shrunk
        `spatial_stride` times gets the coordinates of its pixels' centres on the full-size frame."""
        b, _, f, h, w = latents.shape

        def axis(n: int) -> torch.Tensor:
            if spatial_stride == 1:  # the pretrained model's own channels, exactly
                return torch.linspace(-1, 1, n, dtype=latents.dtype, device=latents.device)
            full = spatial_stride * n  # pixels of the full-size frame; a shrunk pixel's centre on it
            centres = spatial_stride * torch.arange(n, dtype=torch.float64) + (spatial_stride - 1) / 2
            return (2 * centres / (full - 1) - 1).to(latents)

        ys, xs = axis(h), axis(w)
        grid = torch.stack([xs.view(1, w).expand(h, w), ys.view(h, 1).expand(h, w)])
        return grid.view(1, 2, 1, h, w).expand(b, 2, f, h, w)

    @property
    def noise_correlation(self) -> float:
        return self._noise_correlation

    @noise_correlation.setter
    def noise_correlation(self, value: float) -> None:
        if not 0.0 <= value < 1.0:
            raise InputError(f"noise_correlation must lie in [0, 1), got {value}")
        self._noise_correlation = float(value)

    def draw_noise(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """With `noise_correlation` a > 0, each frame's noise is sqrt(a) * one draw shared by every frame of the
        clip + sqrt(1 - a) * its own draw: still N(0, 1) per value, but correlated across frames (a "mixed" noise
        prior, as in PYoCo), so at high noise every frame starts from nearly the same picture and the object
        is placed once for the whole clip instead of once per frame. a = 0 is plain i.i.d. noise."""
        if not self.noise_correlation:
            return super().draw_noise(shape, generator)
        b, c, _, h, w = shape
        shared = torch.randn((b, c, 1, h, w), generator=generator)
        own = torch.randn(shape, generator=generator)
        return self.noise_correlation ** 0.5 * shared + (1 - self.noise_correlation) ** 0.5 * own

    def predict(self, expert: Expert, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning,
                frame_positions: torch.Tensor | None = None, spatial_stride: int = 1) -> torch.Tensor:
        extra = [self.time_channel(latents, frame_positions)] if self.time_span else []
        if self.coordinate_channels:
            extra.append(self.coordinates(latents, spatial_stride))
        if extra:
            latents = torch.cat([latents, *extra], dim=1)
        return super().predict(expert, latents, timesteps, cond, frame_positions, spatial_stride)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        return video[None].float().to(self.device)

    def encode_prompt(self, prompt: str) -> Conditioning:
        with torch.no_grad():
            return Conditioning({"text": self.text_encoder(self.text_encoder.tokenize([prompt]).to(self.device))})

    @torch.no_grad()
    def generate(self, prompt: str, *, negative_prompt: str, num_frames: int, height: int, width: int,
                 steps: int, guidance: float, seed: int, guidance_2: float | None = None,
                 adapter_scales: dict[str, float], image: np.ndarray | None = None,
                 step_hook: StepHook | None = None) -> np.ndarray:
        self.check_generation(num_frames, height, width, guidance_2, image)
        expert = self.experts[0]
        cond = self.encode_prompt(prompt)
        uncond = self.encode_prompt(negative_prompt)
        generator = torch.Generator("cpu").manual_seed(seed)
        x = self.draw_noise((1, 3, num_frames, height, width), generator).to(self.device)
        scheduler = self.pipe.scheduler
        scheduler.set_timesteps(steps, device=self.device)
        with self.adapters(adapter_scales), self.guided_steps(step_hook, num_frames, height, width):
            for t in progress(scheduler.timesteps, desc="generate"):
                timestep = t.expand(1)
                v = self.predict(expert, x, timestep, cond)
                if guidance != 1.0:
                    v_uncond = self.predict(expert, x, timestep, uncond)
                    v = v_uncond + guidance * (v - v_uncond)
                x = scheduler.step(v, t, x, return_dict=False)[0]
        frames = ((x[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return frames.permute(1, 2, 3, 0).cpu().numpy()
