"""Where a backbone's modules run and how fast: diffusers' attention backends, the encoders parked off the
accelerator while tuning, regional `torch.compile`. A part of `Backbone` kept apart from the method's contract;
every option leaves what is computed unchanged (tests/test_speed_options.py, tests/test_encoder_parking.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import InputError

if TYPE_CHECKING:
    from .base import Expert


class SpeedOptions:
    """Mixed into `Backbone`, whose `experts`, `device`, `park_device` and `compiled` it uses."""

    experts: list[Expert]
    device: torch.device
    park_device: torch.device | None  # where the encoders wait while not needed; None: they stay on `device`
    compiled: bool
    # Transformer block classes to compile where the transformer declares no `_repeated_blocks` (CogVideoX).
    repeated_blocks: tuple[str, ...] = ()

    def set_attention_backend(self, name: str) -> None:
        """Run every expert's attention through diffusers' backend `name` (native, flash, sage, ...: diffusers'
        `AttentionBackendName`); a backend that is unknown or not installed is refused naming the setting."""
        from diffusers.models.attention_dispatch import AttentionBackendName

        known = [b.value for b in AttentionBackendName]
        if name not in known:
            raise InputError(f"model.attention_backend {name!r} is not one of diffusers' backends: {', '.join(known)}")
        # diffusers skips processors that call PyTorch's attention directly: refuse instead of ignoring the setting
        processors = [m.processor for e in self.experts for m in e.module.modules()
                      if getattr(m, "processor", None) is not None]
        direct = sorted({type(p).__name__ for p in processors if not hasattr(p, "_attention_backend")})
        if direct:
            raise InputError(f"model.attention_backend {name!r} cannot be used with this model: its attention "
                             f"processors ({', '.join(direct)}) do not go through diffusers' attention dispatcher; "
                             "leave model.attention_backend unset")
        try:
            for expert in self.experts:
                expert.module.set_attention_backend(name)
        except (ImportError, RuntimeError, ValueError) as err:
            raise InputError(f"model.attention_backend {name!r} cannot be used here: {str(err).splitlines()[0]}"
                             ) from err

    vae_tiling: bool = False  # whether the VAE encodes and decodes in spatial tiles (`set_vae_tiling`)

    def set_vae_tiling(self, on: bool) -> None:
        """Encode and decode in overlapping spatial tiles (diffusers' `enable_tiling`), which bounds the VAE's
        activations by the tile instead of the frame; the tiles' seams are blended, so values change slightly."""
        vae = self.encoders().get("vae")
        if vae is None:
            raise InputError("model.vae_tiling: this model has no diffusers VAE to tile")
        if on:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
        self.vae_tiling = on

    def encoders(self) -> dict[str, nn.Module]:
        """The modules that only encode and decode (text encoders, VAE, image encoder): the pipeline's (`pipe`)
        modules that are not an expert. Tuning never runs them once its encodings are cached."""
        pipe = getattr(self, "pipe", None)
        experts = {id(e.module) for e in self.experts}
        components = pipe.components if pipe is not None else {}
        return {name: m for name, m in components.items() if isinstance(m, nn.Module) and id(m) not in experts}

    def park_encoders(self) -> None:
        """Move the encoders to `park_device` (the CPU), so that the accelerator holds the transformers alone
        while tuning; nothing when `park_device` is None (`model.keep_encoders`, or diffusers' offload)."""
        if self.park_device is not None:
            for module in self.encoders().values():
                module.to(self.park_device)

    @contextlib.contextmanager
    def encoders_ready(self) -> Iterator[None]:
        """The encoders on `device` for a block (to encode, to generate), parked again after it if they were."""
        parked = self.park_device is not None and any(
            p.device != self.device for m in self.encoders().values() for p in m.parameters())
        if parked:
            for module in self.encoders().values():
                module.to(self.device)
        try:
            yield
        finally:
            if parked:
                self.park_encoders()

    def compile_blocks(self) -> None:
        """`torch.compile` every expert's repeated transformer blocks (regional compilation, diffusers'
        `compile_repeated_blocks`), once. LoRA adapters added later are guarded for: dynamo recompiles."""
        if self.compiled:
            return
        for expert in self.experts:
            names = getattr(expert.module, "_repeated_blocks", None) or self.repeated_blocks
            blocks = [m for m in expert.module.modules() if type(m).__name__ in names]
            if not blocks:
                raise InputError(f"model.compile: {type(expert.module).__name__} names no blocks to compile")
            for block in blocks:
                block.compile()
        self.compiled = True
