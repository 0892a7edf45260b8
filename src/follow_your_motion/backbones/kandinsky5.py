"""Kandinsky 5 Lite text-to-video (diffusers `Kandinsky5T2VPipeline`, `Kandinsky5Transformer3DModel`,
`AutoencoderKLHunyuanVideo`) behind the backbone interface: one transformer for all noise levels.

The transformer refines the prompt's tokens in its own text blocks (`text_transformer_blocks`), then runs its visual
blocks (`visual_transformer_blocks.N`) on the video tokens alone: each has a SELF-attention over the video tokens
(`self_attention`: to_query / to_key / to_value / out_layer, q and k RMS-normalised per head, head_dim =
sum(axes_dims) channels, model_dim / head_dim heads), then a separate cross-attention to the text. So every visual
block is a site with no text tokens among the ones it attends over, and a head-masked LoRA there is exactly
head-local; the text blocks and the cross-attention stay the base model's.

Layout: the transformer takes and returns channels-last latents (B, F, H, W, C), and the released text-to-video
transformers (`visual_cond`) take 2C + 1 channels, [latents, zero condition latents, zero mask], as the pipeline
feeds them. Conditioning: the Qwen2.5-VL prompt embeddings (`text`, unpadded, after the template crop) and CLIP's
pooled embedding (`pooled`), as the pipeline's `encode_prompt` makes them.

Positions. `Kandinsky5RoPE3D` looks its rotary angles up in tables of integer positions (time, rows, columns), each
axis divided by the pipeline's resolution scale factor. `PositionedRope` builds the same angles for any, possibly
fractional, frame positions and rows / columns `spatial_stride` apart, through the stock module's own code; stock
positions are bit-identical. Checkpoints with NABLA sparse attention (`attention_type: nabla`, whose token order and
masks follow fractal blocks) are refused.

Objective: rectified flow (FlowMatchEulerDiscreteScheduler), timestep sigma * 1000, the checkpoint's scheduler
`shift` as the sampler shift. LoRA files: the pipeline's `KandinskyLoraLoaderMixin` reads and writes diffusers'
keys. ComfyUI's native model (comfy/ldm/kandinsky5/model.py) names its modules as diffusers does, so its LoRA keys
are `diffusion_model.` and the same module name.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from diffusers import Kandinsky5T2VPipeline
from diffusers.models.transformers.transformer_kandinsky import get_freqs
from torch import nn

from ..errors import InputError
from .diffusers_base import DiffusersBackbone, PositionedRotary
from .experts import AttentionSite, Expert
from .inputs import Conditioning, VideoGeometry
from .loading import ModelLoadError, keep_file_values, save_pipeline_lora
from .lora_files import COMFY_PREFIX, is_comfyui_lora, loading_lora, lora_file_keys

PROJECTIONS = ("to_query", "to_key", "to_value", "out_layer")  # q, k, v, o of a Kandinsky5Attention


class PositionedRope(PositionedRotary):
    """Kandinsky 5's 3D rotary embedding with replaceable positions: set, the stock module's forward runs on angle
    tables built for the replaced positions (outer product of positions and frequencies, as its own tables are)."""

    def forward(self, shape: tuple[int, ...], pos: list[torch.Tensor], scale_factor=(1.0, 1.0, 1.0)) -> torch.Tensor:
        rope = self.inner
        if self.stock:
            return rope(shape, pos, scale_factor)
        frames = shape[1]
        if self.frame_positions is not None and len(self.frame_positions) != frames:
            raise InputError(f"{len(self.frame_positions)} frame positions for {frames} latent frames")
        device = rope.args_0.device
        axes = [pos[0].to(device, torch.float32) if self.frame_positions is None
                else self.frame_positions.detach().to(device, torch.float32),
                pos[1].to(device, torch.float32) * self.spatial_stride,
                pos[2].to(device, torch.float32) * self.spatial_stride]
        tables = {f"args_{i}": torch.outer(positions, get_freqs(dim // 2, rope.max_period).to(device))
                  for i, (positions, dim) in enumerate(zip(axes, rope.axes_dims, strict=True))}
        indices = [torch.arange(len(positions), device=device) for positions in axes]
        return type(rope).forward(SimpleNamespace(**tables), shape, indices, scale_factor)


def attention_sites(transformer: nn.Module) -> list[AttentionSite]:
    """Every visual block's self-attention over the video tokens, q/k RMS-normalised per head."""
    config = transformer.config
    head_dim = sum(config.axes_dims)
    return [AttentionSite(*(f"visual_transformer_blocks.{i}.self_attention.{p}" for p in PROJECTIONS),
                          heads=config.model_dim // head_dim, head_dim=head_dim, text_tokens="none",
                          qk_norm="per_head")
            for i in range(config.num_visual_blocks)]


def rotated(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """`Kandinsky5AttnProcessor`'s rotation: in float32, the result rounded through bfloat16 as it does."""
    pairs = x.reshape(*x.shape[:-1], -1, 1, 2).to(torch.float32)
    return (rope * pairs).sum(dim=-1).reshape(*x.shape).to(torch.bfloat16).type_as(x)


class Kandinsky5Backbone(DiffusersBackbone):
    """Kandinsky 5 Lite text-to-video through diffusers."""

    name = "kandinsky5"
    rope_attribute = "visual_rope_embeddings"
    blocks_attribute = "visual_transformer_blocks"  # the video tokens' blocks (the text's run once, before them)
    pipelines = (Kandinsky5T2VPipeline,)
    pipeline_kind = "a Kandinsky 5 text-to-video pipeline"

    def __init__(self, pipe: Kandinsky5T2VPipeline, device: str | torch.device = "cpu", offload: bool = False,
                 blocks_to_swap: int = 0, text_length: int = 512) -> None:
        transformer = pipe.transformer
        config = transformer.config
        if config.attention_type != "regular" or tuple(config.patch_size)[0] != 1:
            raise ModelLoadError(f"this Kandinsky 5 transformer (attention_type {config.attention_type!r}, patch "
                                 f"{tuple(config.patch_size)}) is not supported: NABLA sparse attention reorders and "
                                 "masks the video tokens; use a checkpoint with regular attention (the 5 s T2V Lite)")
        transformer.visual_rope_embeddings = PositionedRope(transformer.visual_rope_embeddings)
        super().__init__(pipe, [Expert("", transformer, attention_sites(transformer))], device)
        self.text_length = text_length
        self.take_fixed_shift("Kandinsky 5")
        self.geometry = self.config_geometry(dict(pipe.vae.config), dict(config))
        self.place(offload, blocks_to_swap)

    @classmethod
    def config_geometry(cls, vae: dict, transformer: dict) -> VideoGeometry:
        """The VAE's compression ratios and the transformer's patch (config entries)."""
        return VideoGeometry(temporal_stride=vae["temporal_compression_ratio"],
                             spatial_stride=vae["spatial_compression_ratio"], patch=tuple(transformer["patch_size"]))

    # -- encoding ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """The VAE latent's mode times `scaling_factor`, what the pipeline's decode divides by."""
        vae = self.pipe.vae
        dist = vae.encode(video[None].to(vae.device, vae.dtype)).latent_dist
        return (dist.mode().float() * vae.config.scaling_factor).to(self.device)

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> Conditioning:
        """Qwen2.5-VL's embeddings of the templated prompt (`text`) and CLIP's pooled embedding (`pooled`)."""
        text, pooled, _ = self.pipe.encode_prompt(prompt, max_sequence_length=self.text_length, device=self.device,
                                                  dtype=self.dtype)
        return Conditioning({"text": text, "pooled": pooled})

    # -- the transformer --------------------------------------------------------------------------------
    def sampler_latents(self, latents: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        """The pipeline steps on channels-last latents (B, F, H, W, C)."""
        return latents.permute(0, 2, 3, 4, 1)

    def method_latents(self, latents: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        return latents.permute(0, 4, 1, 2, 3)

    def transformer_output(self, expert: Expert, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning,
                           frame_positions: torch.Tensor | None, spatial_stride: int) -> torch.Tensor:
        """As one step of the pipeline: channels-last latents (with the zero condition and mask channels of a
        `visual_cond` transformer), the timestep on the 0..1000 scale in the model's dtype, the rotary positions
        and the resolution scale factor of the full-size clip (`PositionedRope` replaces the positions)."""
        hidden = self.sampler_latents(latents.to(self.dtype), ())
        b, f, h, w, _ = hidden.shape
        if expert.module.config.visual_cond:
            hidden = torch.cat([hidden, torch.zeros_like(hidden), hidden.new_zeros(b, f, h, w, 1)], dim=-1)
        _, p, _ = self.geometry.patch
        device = hidden.device
        positions = [torch.arange(f, device=device), torch.arange(h // p, device=device),
                     torch.arange(w // p, device=device)]
        pixels = self.geometry.spatial_stride * spatial_stride
        text = cond.tensors["text"].to(self.dtype)
        out = self.denoiser(expert)(
            hidden_states=hidden,
            encoder_hidden_states=text,
            pooled_projections=cond.tensors["pooled"].to(self.dtype),
            timestep=timesteps.to(device, self.dtype),
            visual_rope_pos=positions,
            text_rope_pos=torch.arange(text.shape[1], device=device),
            scale_factor=self.pipe._get_scale_factor(h * pixels, w * pixels),
            sparse_params=None,
            return_dict=False,
        )
        return self.method_latents(out, ())

    @staticmethod
    def attention_qk(attn: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The video tokens' q and k as `Kandinsky5AttnProcessor` computes them: the projections split into heads,
        the per-head RMS norm in float32, then the rotation (`rotated`); the tokens are frame-major."""
        hidden = args[0] if args else kwargs["hidden_states"]
        rope = kwargs.get("rotary_emb")
        out = []
        for projection, norm in ((attn.to_query, attn.query_norm), (attn.to_key, attn.key_norm)):
            x = projection(hidden)
            x = x.reshape(*x.shape[:-1], attn.num_heads, -1)
            x = norm(x.float()).type_as(x)
            out.append(x if rope is None else rotated(x, rope))
        return out[0], out[1]

    # -- LoRA files -------------------------------------------------------------------------------------
    @staticmethod
    def comfyui_key(module_name: str) -> str:
        """`visual_transformer_blocks.N.self_attention.<projection>` -> the same name under `diffusion_model.`:
        ComfyUI's native Kandinsky 5 model (comfy/ldm/kandinsky5/model.py) names its modules as diffusers does."""
        parts = module_name.split(".", 3)
        if len(parts) != 4 or parts[0] != "visual_transformer_blocks" or parts[2] != "self_attention" \
                or parts[3] not in PROJECTIONS:
            raise InputError(f"{module_name!r} is not a Kandinsky 5 visual self-attention projection")
        return COMFY_PREFIX + module_name

    def save_diffusers_lora(self, path: str, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
        save_pipeline_lora(type(self.pipe), path, state_dict, metadata)

    def load_lora(self, expert: Expert, path: str, adapter: str) -> None:
        """A diffusers-format file through the pipeline's `load_lora_weights`, as users load it (its adapter config
        from the file's metadata), the file's exact float32 values kept."""
        if is_comfyui_lora(lora_file_keys(path)):
            raise InputError(f"{path}: a ComfyUI-native Kandinsky 5 LoRA is for ComfyUI (diffusers has no converter "
                             "for it); here, load the diffusers file (`fym export --format diffusers`)")
        with loading_lora(path, "a Kandinsky 5 LoRA"):
            self.pipe.load_lora_weights(str(path), adapter_name=adapter)
            state = self.pipe.lora_state_dict(str(path))
        keep_file_values(expert.module, adapter, state)

    # -- generation -------------------------------------------------------------------------------------
    def sample(self, call: dict, guidance: float, guidance_2: float | None, image: np.ndarray | None
               ) -> np.ndarray:
        """Kandinsky5T2VPipeline itself (guidance 1 or less: no negative pass, as the pipeline does)."""
        return self.pipe(**call, guidance_scale=guidance, max_sequence_length=self.text_length).frames[0]
