"""Where a backbone's modules run and how fast: diffusers' attention backends, the encoders parked off the
accelerator while tuning, the transformers sharded across processes (FSDP2), regional `torch.compile`. A part of
`Backbone` kept apart from the method's contract; every option leaves what is computed unchanged
(tests/test_speed_options.py, tests/test_encoder_parking.py, tests/test_distributed.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import InputError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from torch.distributed.device_mesh import DeviceMesh

    from .block_swap import BlockSwap
    from .experts import Expert


def shard_frozen_base(transformer: nn.Module, mesh: DeviceMesh, keep: set[nn.Parameter]) -> None:
    """FSDP2 on one transformer: each block's weights (the model's `_no_split_modules` classes, else its
    `_repeated_blocks`: LTX-Video declares only those), then the rest's, sharded across `mesh`, whose device each
    process keeps its shard on; the parameters in `keep` (LoRA weights) stay whole on every process."""
    from torch.distributed.fsdp import fully_shard

    block_types = set(getattr(transformer, "_no_split_modules", None) or getattr(transformer, "_repeated_blocks", None)
                      or ())
    for module in transformer.modules():
        if type(module).__name__ in block_types:
            fully_shard(module, mesh=mesh, ignored_params=keep)
    fully_shard(transformer, mesh=mesh, ignored_params=keep)


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether `a` and `b` are one device: `cuda` (the current one, index left out) is `cuda:0` where a tensor on it
    says `cuda:0`, and `cpu` is `cpu:0`."""
    def index(d: torch.device) -> int:
        if d.index is not None:
            return d.index
        return torch.cuda.current_device() if d.type == "cuda" else 0

    return a.type == b.type and index(a) == index(b)


class SpeedOptions:
    """Mixed into `Backbone`, whose `pipe`, `experts`, `device`, `park_device`, `compiled` and `sharded` it uses."""

    # the family's pipeline, whose modules other than the experts are the encoders; None: a backbone with no
    # pipeline names its encoders itself (`encoders`)
    pipe: DiffusionPipeline | None = None
    experts: list[Expert]
    device: torch.device
    park_device: torch.device | None  # where the encoders wait while not needed; None: they stay on `device`
    compiled: bool
    sharded: bool = False  # every expert sharded across the job's processes (`shard_experts`)
    encoders_held: bool = False  # inside an `encoders_ready` block: inner blocks leave the encoders where they are
    # Transformer block classes to compile where the transformer declares no `_repeated_blocks` (CogVideoX).
    repeated_blocks: tuple[str, ...] = ()
    # The transformers' attribute holding their list of blocks (`model.blocks_to_swap`); None: the model has none
    blocks_attribute: str | None = None
    block_swaps: tuple[BlockSwap, ...] = ()  # one per expert, where blocks are swapped (`swap_blocks`)

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
        experts = {id(e.module) for e in self.experts}
        components = self.pipe.components if self.pipe is not None else {}
        return {name: m for name, m in components.items() if isinstance(m, nn.Module) and id(m) not in experts}

    def park_encoders(self) -> None:
        """Move the encoders to `park_device` (the CPU), so that the accelerator holds the transformers alone
        while tuning; nothing when `park_device` is None (`model.keep_encoders`, or diffusers' offload)."""
        if self.park_device is not None:
            for module in self.encoders().values():
                module.to(self.park_device)

    @contextlib.contextmanager
    def encoders_ready(self) -> Iterator[None]:
        """The encoders on `device` for a block (to encode, to generate), parked again after it if they were.
        Re-entrant: a block inside another (generation that encodes the reference) parks nothing."""
        if self.encoders_held:
            yield
            return
        parked = self.park_device is not None and any(
            not same_device(p.device, self.device) for m in self.encoders().values() for p in m.parameters())
        if parked:
            for module in self.encoders().values():
                module.to(self.device)
        self.encoders_held = True
        try:
            yield
        finally:
            self.encoders_held = False
            if parked:
                self.park_encoders()

    def shard_experts(self, device: torch.device) -> None:
        """Shard every expert's frozen weights across the job's processes (FSDP2; torch.distributed is set up),
        once for all tuning stages and generation. Each process keeps only its shard of each transformer on
        `device`: transformers loaded on the CPU pass through it one block at a time. LoRA weights, those present
        and those added later, stay whole on every process (FSDP leaves them alone: the training loop averages
        their gradients), so LoRA files, optimizer state and checkpoints are the same as in one process. Then
        the encoders (not sharded) go to `device`, which becomes the backbone's."""
        if self.sharded:
            return
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(device.type, (torch.distributed.get_world_size(),))
        for expert in self.experts:
            keep = {p for name, p in expert.module.named_parameters() if ".lora_" in name}
            shard_frozen_base(expert.module, mesh, keep)
        for module in self.encoders().values():
            module.to(device)
        self.device = device
        self.sharded = True

    def expert_blocks(self, expert: Expert) -> nn.ModuleList:
        """`expert`'s transformer blocks, in the order they run; refused where the model names none."""
        if self.blocks_attribute is None:
            raise InputError(f"model.blocks_to_swap: {type(self).__name__} has no transformer blocks to swap")
        return getattr(expert.module, self.blocks_attribute)

    def swap_blocks(self, count: int) -> tuple[BlockSwap, ...]:
        """The last `count` blocks of every expert kept in host memory and brought to `device` only while they run
        (`block_swap`), from now on; nothing for 0. Called while placing the model, before anything is on the
        device: the swapped weights never go there whole."""
        from .block_swap import BlockSwap

        if count:
            self.block_swaps = tuple(BlockSwap(self.expert_blocks(e), count, self.device) for e in self.experts)
        return self.block_swaps

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
