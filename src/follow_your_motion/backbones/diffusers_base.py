"""What every diffusers family (Wan, LTX-Video, HunyuanVideo 1.5, CogVideoX, SkyReels-V2) does the same way, so that
a family file holds only what is its own: loading the pipeline it is (`pipe`, one of the family's `pipelines`)
and placing it on the device (or diffusers' offload), its self-attention layers as sites, a rotary embedding
whose positions `predict` replaces for one call and always puts back, and the call of the transformer through
the denoiser that serves it (a DDP wrapper while training).
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING, ClassVar, Literal, Self

import torch
from torch import nn

from ..errors import InputError
from .base import Backbone, QKCallback, attention_pre_hooks
from .experts import AttentionSite, Expert
from .inputs import Conditioning
from .loading import ModelLoadError, load_pipeline
from .rotary import RotaryTransform, through_transform

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")  # diffusers' names of an attention's q, k, v, o


def self_attention_sites(transformer: nn.Module, attention: str, text_tokens: Literal["none", "before", "after"],
                         qk_norm: Literal["across_heads", "per_head", "none"]) -> list[AttentionSite]:
    """One site per layer of the transformer's config: `attention` names layer i's attention module
    ("blocks.{i}.attn1"), whose `to_q`, `to_k`, `to_v`, `to_out.0` are the projections."""
    config = transformer.config
    return [
        AttentionSite(*(f"{attention.format(i=i)}.{p}" for p in PROJECTIONS), heads=config.num_attention_heads,
                      head_dim=config.attention_head_dim, text_tokens=text_tokens, qk_norm=qk_norm)
        for i in range(config.num_layers)
    ]


def attention_projection(module_name: str, attention: str, roles: Collection[str], what: str) -> tuple[str, str]:
    """(layer, projection) of a LoRA target `transformer_blocks.<layer>.<attention>.<projection>`; anything else
    is refused as not `what`."""
    parts = module_name.split(".", 3)
    if len(parts) != 4 or parts[0] != "transformer_blocks" or parts[2] != attention or parts[3] not in roles:
        raise InputError(f"{module_name!r} is not {what}")
    return parts[1], parts[3]


class PositionedRotary(nn.Module):
    """A transformer's rotary embedding whose positions can be replaced for one forward pass: the temporal ones by
    `frame_positions` (one per latent frame, possibly fractional), the rows and columns spaced `spatial_stride`
    apart. Unset, a family's subclass returns the stock module's tables (bit-identical outputs); how it rebuilds
    them with positions set is the family's."""

    def __init__(self, rope: nn.Module) -> None:
        super().__init__()
        self.inner = rope
        self.frame_positions: torch.Tensor | None = None
        self.spatial_stride = 1

    @property
    def stock(self) -> bool:
        """No position replaced: the stock module's tables."""
        return self.frame_positions is None and self.spatial_stride == 1

    @contextlib.contextmanager
    def placed(self, frame_positions: torch.Tensor | None, spatial_stride: int) -> Iterator[None]:
        """The positions set for a block, the stock ones again after it (also after an error)."""
        self.frame_positions, self.spatial_stride = frame_positions, spatial_stride
        try:
            yield
        finally:
            self.frame_positions, self.spatial_stride = None, 1


class DiffusersBackbone(Backbone):
    """A family served by a diffusers pipeline (`pipe`). `predict` places the positions on the expert's rotary
    embedding where it is a `PositionedRotary` and calls `transformer_output`; `capture_qk` hooks every site's
    attention module and hands over what `attention_qk` recomputes. Those two are what a family writes."""

    pipe: DiffusionPipeline
    text_length: int  # the padded prompt length the pipeline encodes to (`max_sequence_length`)
    # The pipeline classes the family loads, and how a refusal of any other names them.
    pipelines: ClassVar[tuple[type[DiffusionPipeline], ...]]
    pipeline_kind: ClassVar[str]
    # Whether the VAE stays float32 whatever `dtype` is (`loading.load_pipeline`): all but CogVideoX's.
    vae_float32: ClassVar[bool] = True
    # Whether the VAE encodes and decodes in tiles unless `model.vae_tiling` says otherwise (HunyuanVideo 1.5).
    tiled_vae: ClassVar[bool] = False
    rope_attribute: ClassVar[str] = "rope"  # the transformer's attribute holding its rotary embedding
    blocks_attribute = "transformer_blocks"  # the transformer's list of blocks, which `model.blocks_to_swap` swaps

    def __init__(self, pipe: DiffusionPipeline, experts: list[Expert], device: str | torch.device) -> None:
        """Hold `pipe` and its `experts` (frozen); `dtype` is the transformers'. The family's `__init__` ends with
        `place`, once its own modules (rotary embeddings) are in."""
        super().__init__()
        self.pipe = pipe
        self.experts = experts
        for expert in experts:
            expert.module.requires_grad_(False)
        self.device = torch.device(device)
        self.dtype = experts[0].module.dtype

    @classmethod
    def load(cls, source: str, dtype: torch.dtype = torch.float32, device: str = "cpu", offload: bool = False,
             blocks_to_swap: int = 0) -> Self:
        """The family's pipeline at `source` (a hub id or a `save_pretrained` directory; `fym plan`: built from
        its configs, `loading.CONFIGS_ONLY`) in `dtype`, placed on `device` or offloaded (`place`)."""
        pipe = load_pipeline(source, dtype, cls.pipelines, cls.pipeline_kind, vae_float32=cls.vae_float32)
        return cls(pipe, device=device, offload=offload, blocks_to_swap=blocks_to_swap)

    def place(self, offload: bool, blocks_to_swap: int = 0) -> None:
        """The whole pipeline on `device`, or (`offload`) diffusers' model CPU offload, which moves each component
        there only while it runs; FSDP loads on the CPU and shards later (`shard_experts`). `blocks_to_swap`: the
        last blocks of each expert stay in host memory and visit the device as they run (`block_swap`). Then the
        VAE tiled where the family asks for it."""
        if offload and blocks_to_swap:
            raise InputError("model.offload and model.blocks_to_swap both move the transformer: choose one")
        if offload:
            self.pipe.enable_model_cpu_offload(device=self.device)
        else:
            with contextlib.ExitStack() as rest_only:
                for swap in self.swap_blocks(blocks_to_swap):
                    rest_only.enter_context(swap.emptied())
                self.pipe.to(self.device)
        if self.tiled_vae:
            self.set_vae_tiling(True)

    def take_fixed_shift(self, what: str) -> None:
        """`flow_shift` and `num_train_timesteps` from a flow-matching scheduler with one fixed `shift`; one that
        shifts by token count is refused (`what` names the family), as its pipeline passes no `mu` for it."""
        scheduler = self.pipe.scheduler.config
        if scheduler.get("use_dynamic_shifting"):
            raise ModelLoadError(f"{what} scheduler with dynamic shifting: the pipeline passes no mu, so it cannot "
                                 "sample with it")
        self.flow_shift = float(scheduler.get("shift", 1.0))
        self.num_train_timesteps = int(scheduler.get("num_train_timesteps", 1000))

    def denoiser(self, expert: Expert) -> nn.Module:
        """The module that runs `expert` now: its transformer, or what `denoiser_as` routes it through."""
        return self.denoisers.get(expert.name, expert.module)

    def predict(self, expert: Expert, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning,
                frame_positions: torch.Tensor | None = None, spatial_stride: int = 1) -> torch.Tensor:
        """`transformer_output` as float32, with the expert's rotary embedding at `frame_positions` and
        `spatial_stride` for this call only."""
        rope = getattr(expert.module, self.rope_attribute, None)
        placed = (rope.placed(frame_positions, spatial_stride) if isinstance(rope, PositionedRotary)
                  else contextlib.nullcontext())
        with placed:
            return self.transformer_output(expert, latents, timesteps, cond, frame_positions, spatial_stride).float()

    @contextlib.contextmanager
    def rotary_transform(self, expert: Expert, transform: RotaryTransform) -> Iterator[None]:
        """A forward hook on the expert's rotary embedding (`rope_attribute`, computed once per forward pass for the
        video tokens) passes its output through `transform`."""
        self.check_rotary_config(dict(expert.module.config))
        rope = getattr(expert.module, self.rope_attribute, None)
        if rope is None:
            raise InputError(f"{type(expert.module).__name__} has no rotary embedding {self.rope_attribute!r} to "
                             "optimise: set guidance.ditflow.optimise: latent")
        handle = rope.register_forward_hook(lambda _module, _args, out: through_transform(out, transform))
        try:
            yield
        finally:
            handle.remove()

    @abstractmethod
    def transformer_output(self, expert: Expert, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning,
                           frame_positions: torch.Tensor | None, spatial_stride: int) -> torch.Tensor:
        """One step of the family's pipeline on method-layout latents through `denoiser(expert)`, its output in the
        method's layout. Positions on a `PositionedRotary` are already placed; a family whose positions live
        elsewhere (CogVideoX: tables its pipeline builds) places them here."""

    def fix_frames(self, hidden: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """A first-frame condition as Wan2.2-TI2V's and LTX-2's image-to-video pipelines run it: the fixed frames
        hold the clean condition latents (`first_frame`), and the timestep is given per token (B, tokens),
        frame-major, 0 on those frames' tokens."""
        fixed = list(cond.fixed_frames)
        hidden = hidden.clone()
        hidden[:, :, fixed] = cond.tensors["first_frame"].to(hidden)
        frames, rows, cols = self.token_grid(hidden)
        per_token = timesteps.to(hidden.device, torch.float32).view(-1, 1, 1).repeat(
            hidden.shape[0] // len(timesteps), frames, rows * cols)
        per_token[:, fixed] = 0.0
        return hidden, per_token.flatten(1)

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> Conditioning:
        """The pipeline's prompt embeddings (1, `text_length`, D) as `text`, in the transformer's dtype."""
        embeds, _ = self.pipe.encode_prompt(
            prompt, do_classifier_free_guidance=False, max_sequence_length=self.text_length, device=self.device
        )
        return Conditioning({"text": embeds.to(self.dtype)})

    @contextlib.contextmanager
    def capture_qk(self, expert: Expert, callback: QKCallback, grad: bool = False) -> Iterator[None]:
        """A forward pre-hook on the attention module of every site recomputes its video tokens' q and k
        (`attention_qk`) and hands them over as float32."""
        def hook_for(layer: int):
            def hook(attn: nn.Module, args: tuple, kwargs: dict) -> None:
                with torch.set_grad_enabled(grad):
                    q, k = self.attention_qk(attn, args, kwargs)
                    callback(layer, q.float(), k.float())

            return hook

        modules = [expert.module.get_submodule(site.q.rpartition(".")[0]) for site in expert.sites]
        with attention_pre_hooks(modules, hook_for):
            yield

    @staticmethod
    @abstractmethod
    def attention_qk(attn: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The video tokens' queries and keys (B, video tokens, heads, head_dim), frame-major, after q/k norm and
        RoPE, recomputed from a site's attention module and the inputs it is called with, as its processor
        computes them."""
