"""The Wan family (diffusers `WanPipeline`, `WanImageToVideoPipeline`, `WanTransformer3DModel`) behind the
backbone interface: Wan2.1-T2V (one transformer), Wan2.2-T2V-A14B (a high-noise `transformer` and a low-noise
`transformer_2`, switched at `boundary_ratio`), Wan2.2-TI2V-5B used for text-to-video, and the image-to-video
models Wan2.1-I2V (CLIP image embeddings) and Wan2.2-I2V-A14B (two experts, no image encoder).

Image-to-video conditions the transformer on the first frame: its input is the noisy latents concatenated
with 4 mask channels (ones on the first latent frame) and the latents of [image, black frames...], as the
pipeline builds them; both travel in the conditioning as `image_latents`, a per-frame tensor, so sparse
sampling cuts them with the kept frames.

Self-attention is `blocks.N.attn1` with separate to_q/to_k/to_v/to_out.0 projections; q and k are
RMS-normalised across all heads before RoPE (so a LoRA delta on one head's q/k rows slightly rescales
the other heads' q/k; v and out are exactly head-local). RoPE splits each head's channels into a
temporal, a row and a column part; adaptive RoPE replaces only the temporal part.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import WanImageToVideoPipeline, WanPipeline
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from PIL import Image
from torch import nn

from ..errors import InputError
from ..video import resize_center_crop, to_tensor
from .diffusers_base import DiffusersBackbone, PositionedRotary, self_attention_sites
from .experts import AttentionSite, Expert
from .inputs import Conditioning, VideoGeometry
from .loading import keep_file_values, save_pipeline_lora
from .lora_files import COMFY_PREFIX, loading_lora

ROPE_THETA = 10000.0  # WanRotaryPosEmbed's default; every released Wan2.1 checkpoint uses it
_COMFY_ROLE = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}


class PositionedRope(PositionedRotary):
    """Wan's rotary embedding with replaceable positions: each replaced axis's channels rebuilt in the stock
    tables."""

    def axis_table(self, dim: int, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin rows (len(positions), dim) of one axis for arbitrary, possibly fractional, positions."""
        return get_1d_rotary_pos_embed(
            dim,
            positions.detach().to("cpu", torch.float64),
            ROPE_THETA,
            use_real=True,
            repeat_interleave_real=True,
            freqs_dtype=torch.float64,
        )

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.inner(hidden_states)
        if self.stock:
            return cos, sin
        _, _, frames, height, width = hidden_states.shape
        pt, ph, pw = self.inner.patch_size
        grid = (frames // pt, height // ph, width // pw)
        rope = self.inner
        replaced = []  # (axis, first channel, cos rows, sin rows) of each replaced axis
        if self.frame_positions is not None:
            if len(self.frame_positions) != grid[0]:
                raise InputError(f"{len(self.frame_positions)} frame positions for {grid[0]} latent frames")
            replaced.append((0, 0, *self.axis_table(rope.t_dim, self.frame_positions)))
        if self.spatial_stride != 1:
            for axis, first, dim in ((1, rope.t_dim, rope.h_dim), (2, rope.t_dim + rope.h_dim, rope.w_dim)):
                positions = torch.arange(grid[axis], dtype=torch.float64) * self.spatial_stride
                replaced.append((axis, first, *self.axis_table(dim, positions)))
        out = []
        for index, table in enumerate((cos, sin)):
            table = table.view(*grid, -1).clone()
            for axis, first, *rows in replaced:
                shape = [1, 1, 1, -1]
                shape[axis] = grid[axis]
                table[..., first : first + rows[index].shape[-1]] = rows[index].to(table).view(shape)
            out.append(table.view(1, -1, 1, table.shape[-1]))
        return out[0], out[1]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's interleaved rotary embedding on (B, S, H, D) with tables (1, S, 1, D)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out


WanPipelines = WanPipeline | WanImageToVideoPipeline


def attention_sites(transformer: nn.Module) -> list[AttentionSite]:
    """Wan's self-attention (`blocks.N.attn1`): video tokens only, q/k RMS-normalised across all heads."""
    return self_attention_sites(transformer, "blocks.{i}.attn1", text_tokens="none", qk_norm="across_heads")


def wan_experts(pipe: WanPipeline) -> list[Expert]:
    """One expert for all noise levels, or Wan2.2-A14B's two: `transformer` serves timesteps >= boundary_ratio *
    1000 (noise levels sigma >= boundary_ratio, as the pipeline switches), `transformer_2` the rest."""
    transformer_2 = getattr(pipe, "transformer_2", None)
    if transformer_2 is None:
        return [Expert("", pipe.transformer, attention_sites(pipe.transformer))]
    boundary = pipe.config.boundary_ratio
    if boundary is None:
        raise InputError("a Wan pipeline with transformer_2 but no boundary_ratio: which expert serves which noise "
                         "level is unknown (set boundary_ratio in model_index.json)")
    return [Expert("high_noise", pipe.transformer, attention_sites(pipe.transformer), (float(boundary), 1.0)),
            Expert("low_noise", transformer_2, attention_sites(transformer_2), (0.0, float(boundary)))]


class WanBackbone(DiffusersBackbone):
    """The Wan family through diffusers. `text_length` is the padded prompt length (Wan: 512)."""

    name = "wan"
    title = "Wan"  # the family's name in messages
    pipelines = (WanPipeline, WanImageToVideoPipeline)
    blocks_attribute = "blocks"
    pipeline_kind = "a Wan text- or image-to-video pipeline"

    def __init__(self, pipe: WanPipelines, device: str | torch.device = "cpu", offload: bool = False,
                 blocks_to_swap: int = 0, text_length: int = 512) -> None:
        experts = wan_experts(pipe)
        for expert in experts:
            expert.module.rope = PositionedRope(expert.module.rope)
        super().__init__(pipe, experts, device)
        self.text_length = text_length
        self.place(offload, blocks_to_swap)
        self.flow_shift = float(pipe.scheduler.config.get("flow_shift", 1.0) or 1.0)
        self.per_token_timesteps = bool(pipe.config.get("expand_timesteps"))  # Wan2.2-TI2V: a clean first frame
        if isinstance(pipe, WanImageToVideoPipeline):
            self.image_mode = "required"
        else:
            self.image_mode = "optional" if self.per_token_timesteps else "none"
        self.geometry = self.config_geometry(dict(pipe.vae.config) if pipe.vae is not None else {},
                                             dict(self.experts[0].module.config))

    @classmethod
    def config_geometry(cls, vae: dict, transformer: dict) -> VideoGeometry:
        """WanPipeline's VAE strides (`scale_factor_temporal` / `_spatial`; 4 and 8 where there are none) and the
        transformer's patch."""
        return VideoGeometry(temporal_stride=vae.get("scale_factor_temporal") or 4,
                             spatial_stride=vae.get("scale_factor_spatial") or 8,
                             patch=tuple(transformer["patch_size"]))

    # -- encoding ---------------------------------------------------------------------------------
    def _latent_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.pipe.vae.config
        shape = (1, cfg.z_dim, 1, 1, 1)
        return torch.tensor(cfg.latents_mean).view(shape), torch.tensor(cfg.latents_std).view(shape)

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        dist = vae.encode(video[None].to(vae.device, vae.dtype)).latent_dist
        mean, std = self._latent_stats()
        latents = (dist.mode().float().cpu() - mean) / std
        return latents.to(self.device)

    @torch.no_grad()
    def encode_image(self, image: np.ndarray, num_frames: int, height: int, width: int) -> Conditioning:
        """The first-frame conditioning, as the pipeline builds it. Wan2.2-TI2V: the image's latents as
        `first_frame`, given clean in place of latent frame 0 (a fixed frame). Image-to-video: `image_latents`
        (1, 4 + C, F, h, w), the mask channels then the latents of [image, black frames...], and (Wan2.1-I2V)
        the CLIP `image_embeds` of the image. `image` (H, W, 3) uint8 is fitted to (height, width) first."""
        self.check_image(True)
        frame = resize_center_crop(image[None], height, width)
        first = to_tensor(frame)
        if self.per_token_timesteps:
            return Conditioning({"first_frame": self.encode_video(first).to(self.dtype)}, fixed_frames=(0,))
        video = torch.cat([first, torch.zeros(3, num_frames - 1, height, width)], dim=1)
        latents = self.encode_video(video)
        mask = torch.zeros(1, self.geometry.temporal_stride, *latents.shape[2:], device=latents.device)
        mask[:, :, 0] = 1.0
        tensors = {"image_latents": torch.cat([mask, latents], dim=1).to(self.dtype)}
        if getattr(self.pipe, "image_encoder", None) is not None:
            embeds = self.pipe.encode_image(Image.fromarray(frame[0]), device=self.device)
            tensors["image_embeds"] = embeds.to(self.dtype)
        return Conditioning(tensors, {"image_latents": 2})

    # -- the transformers -----------------------------------------------------------------------
    def transformer_output(self, expert: Expert, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning,
                           frame_positions: torch.Tensor | None, spatial_stride: int) -> torch.Tensor:
        """As one step of the pipeline; the positions are the rotary embedding's (`PositionedRope`)."""
        hidden = latents.to(self.dtype)
        if cond.fixed_frames:  # TI2V: the clean first frame in place, with timestep 0 on its tokens
            hidden, timesteps = self.fix_frames(hidden, timesteps, cond)
        if "image_latents" in cond.tensors:  # image-to-video: the first-frame condition beside the latents
            hidden = torch.cat([hidden, cond.tensors["image_latents"].to(hidden)], dim=1)
        image = cond.tensors.get("image_embeds")
        return self.denoiser(expert)(
            hidden_states=hidden,
            timestep=timesteps.to(latents.device),
            encoder_hidden_states=cond.tensors["text"].to(self.dtype),
            encoder_hidden_states_image=None if image is None else image.to(self.dtype),
            return_dict=False,
        )[0]

    @staticmethod
    def attention_qk(attn: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The queries and keys `attn1` computes from its inputs: RMS norm across heads, the split into heads, then
        Wan's interleaved rotary embedding (in float32)."""
        hidden = args[0] if args else kwargs["hidden_states"]
        cos_sin = args[3] if len(args) > 3 else kwargs["rotary_emb"]
        q = attn.norm_q(attn.to_q(hidden)).unflatten(2, (attn.heads, -1))
        k = attn.norm_k(attn.to_k(hidden)).unflatten(2, (attn.heads, -1))
        return apply_rotary(q.float(), *cos_sin), apply_rotary(k.float(), *cos_sin)

    @staticmethod
    def comfyui_key(module_name: str) -> str:
        _, layer, _, projection = module_name.split(".", 3)
        return f"{COMFY_PREFIX}blocks.{layer}.self_attn.{_COMFY_ROLE[projection]}"

    def save_diffusers_lora(self, path: str, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
        save_pipeline_lora(type(self.pipe), path, state_dict, metadata)

    def load_lora(self, expert: Expert, path: str, adapter: str) -> None:
        low_noise = expert.module is getattr(self.pipe, "transformer_2", None)
        with loading_lora(path, f"a {self.title} LoRA"):
            # from the file, as users load it, so diffusers reads the adapter config (rank, alpha) it holds;
            # a low-noise expert's file goes into transformer_2 as diffusers users load Wan2.2 LoRAs
            self.pipe.load_lora_weights(str(path), adapter_name=adapter, load_into_transformer_2=low_noise)
            state = self.pipe.lora_state_dict(str(path))
        keep_file_values(expert.module, adapter, state)

    # -- generation -----------------------------------------------------------------------------
    def sample(self, call: dict, guidance: float, guidance_2: float | None, image: np.ndarray | None
               ) -> np.ndarray:
        """WanPipeline or WanImageToVideoPipeline (TI2V's image mode runs in the latter); the low-noise expert's
        guidance where there are two."""
        extra = {"guidance_scale_2": guidance_2} if len(self.experts) > 1 else {}
        pipe = self.pipe
        if image is not None:
            extra["image"] = Image.fromarray(resize_center_crop(image[None], call["height"], call["width"])[0])
            if self.image_mode == "optional":  # TI2V: a text-to-video pipeline, its image mode run as I2V
                pipe = WanImageToVideoPipeline(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder,
                                               vae=pipe.vae, scheduler=pipe.scheduler, transformer=pipe.transformer,
                                               expand_timesteps=True)
        return pipe(**call, guidance_scale=guidance, max_sequence_length=self.text_length, **extra).frames[0]
