"""The CogVideoX family (diffusers `CogVideoXPipeline`, `CogVideoXTransformer3DModel`) behind the backbone
interface: CogVideoX-2B (absolute sin-cos position embeddings), CogVideoX-5B (3D RoPE) and CogVideoX1.5-5B (3D RoPE
and a temporal patch of 2), text-to-video.

Self-attention is `transformer_blocks.N.attn1`: JOINT attention over [text tokens, video tokens], with one to_q /
to_k / to_v / to_out.0 for both and q, k LayerNorm-ed per head (head_dim channels), then RoPE on the video tokens
only. The LoRA targets are those projections, so a head-masked LoRA changes the selected heads for the text tokens
too (their queries, keys and values, and the output projection's columns of those heads, which the text stream
reads back); the unselected heads stay exactly the base model's for every token, text and video, and the per-head
norm keeps a q/k delta inside its head.

Layouts. The transformer takes latents as (B, frames, C, h, w); the method's layout is (B, C, F, h, w). For
CogVideoX1.5 a token covers two latent frames (`patch_size_t` 2), so the method's frames are the transformer's token
frames: each pair of latent frames is packed on the channel axis, (B, 2C, F/2, h, w). Sparse sampling then keeps
whole tokens, adaptive RoPE gives each kept token its temporal position (the RoPE tables are per token frame), the
head templates see the token grid, and the motion loss compares adjacent token frames. Every clip has an odd number
of latent frames (below), so 1.5 gets its first latent frame repeated in front, as CogVideoX's own fine-tuning pads
it (and as the pipeline pads its noise before dropping that frame).

Frames. The VAE is 4x in time and 8x in space, but it decodes L latent frames back to 4L - 3 pixel frames only when
L is odd (an even L gives 4L), so clips are 8k+1 frames (49 = 13 latent frames on 1.0; 81 = 21, padded to 22 = 11
token frames on 1.5).

Positions. 5B and 1.5 build their 3D RoPE tables in the pipeline (`_prepare_rotary_positional_embeddings`) and pass
them to the transformer; `predict` builds the same tables with the pipeline's own method and, for adaptive RoPE,
replaces their temporal channels (the first head_dim / 4) with the kept frames' positions. 2B adds a sin-cos table
inside the patch embedding whose first quarter of channels encodes time: with frame positions, that table is built
for the kept frames' own positions (each kept frame gets exactly the embedding it has in the whole clip).

Objective: v-prediction on the scheduler's DDPM schedule (`objective = "v_prediction"`, `alphas_cumprod`).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import CogVideoXPipeline
from diffusers.models.embeddings import get_1d_rotary_pos_embed, get_1d_sincos_pos_embed_from_grid
from safetensors.torch import load_file
from torch import nn

from ..errors import InputError
from .cogvideox_attention import RotaryProcessor, joint_qk
from .diffusers_base import DiffusersBackbone, attention_projection, self_attention_sites
from .experts import AttentionSite, Expert
from .inputs import Conditioning, VideoGeometry
from .loading import ModelLoadError, keep_file_values, save_pipeline_lora
from .lora_files import COMFY_PREFIX, comfyui_to_peft, is_comfyui_lora, loading_lora, lora_file_keys
from .rotary import RotaryTransform, through_transform

ROPE_THETA = 10000.0  # get_3d_rotary_pos_embed's default, which the pipeline uses
# diffusers module (inside transformer_blocks.N.attn1) -> ComfyUI's native CogVideoX module (inside blocks.N), as
# comfy/ldm/cogvideo/model.py names them; ComfyUI reads `diffusion_model.<module>.lora_A/B.weight` + `.alpha`.
_COMFY_ROLE = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "attn_out"}
_DIFFUSERS_ROLE = {comfy: role for role, comfy in _COMFY_ROLE.items()}


@dataclass(frozen=True)
class CogVideoXGeometry(VideoGeometry):
    """CogVideoX's sizes: pixel frames 8k+1 (an odd number of latent frames, the only ones its VAE decodes back to
    as many frames), sizes a multiple of 16. `temporal_stride` is pixel frames per method frame: 4 on 1.0 (a method
    frame is a latent frame), 8 on 1.5 (a method frame is a token frame, two latent frames)."""

    frame_step: int = 8  # pixel frames between two valid frame counts

    def valid_frames(self, pixel_frames: int) -> bool:
        return pixel_frames >= 1 and (pixel_frames - 1) % self.frame_step == 0

    @property
    def frames_rule(self) -> str:
        return f"{self.frame_step}k+1"

    @property
    def min_frames(self) -> int:
        """Fewest pixel frames with two method frames: 9 (three latent frames on 1.0, two token frames on 1.5)."""
        return self.frame_step + 1

    def largest_valid_frames(self, pixel_frames: int) -> int:
        return (pixel_frames - 1) // self.frame_step * self.frame_step + 1 if pixel_frames >= 1 else 0

    def check(self, frames: int, height: int, width: int) -> None:
        if not self.valid_frames(frames):
            lo = max(1, self.largest_valid_frames(frames))
            raise InputError(f"frames must be {self.frames_rule} (got {frames}; nearest valid: {lo} or "
                             f"{lo + self.frame_step})")
        super().check(frames, height, width)


def attention_sites(transformer: nn.Module) -> list[AttentionSite]:
    """CogVideoX's joint attention (`transformer_blocks.N.attn1`): text tokens first, q/k normalised per head."""
    return self_attention_sites(transformer, "transformer_blocks.{i}.attn1", text_tokens="before",
                                qk_norm="per_head")


class CogVideoXBackbone(DiffusersBackbone):
    """The CogVideoX family through diffusers. `text_length`: the padded prompt length (the transformer's
    `max_text_seq_length`, 226 on the released models)."""

    name = "cogvideox"
    pipelines = (CogVideoXPipeline,)
    pipeline_kind = "a CogVideoX text-to-video pipeline"
    vae_float32 = False
    objective = "v_prediction"
    # positions laid over a crop of the base grid (RoPE), or absolute (2B): they cannot be spaced out
    spaced_positions = False
    repeated_blocks = ("CogVideoXBlock",)  # its transformer declares no `_repeated_blocks` to compile

    def __init__(self, pipe: CogVideoXPipeline, device: str | torch.device = "cpu", offload: bool = False,
                 blocks_to_swap: int = 0) -> None:
        transformer = pipe.transformer
        super().__init__(pipe, [Expert("", transformer, attention_sites(transformer))], device)
        config = transformer.config
        self.text_length = int(config.max_text_seq_length)
        self.rope = bool(config.use_rotary_positional_embeddings)
        self.pack = int(config.patch_size_t or 1)  # latent frames per token frame (1.5: 2)
        scheduler = pipe.scheduler.config
        if scheduler.get("prediction_type") != "v_prediction":
            raise ModelLoadError(f"CogVideoX scheduler predicts {scheduler.get('prediction_type')!r}; this backbone "
                                 "trains v-prediction, as the released CogVideoX models are")
        self.alphas_cumprod = torch.as_tensor(pipe.scheduler.alphas_cumprod, dtype=torch.float32).clone()
        self.num_train_timesteps = int(scheduler["num_train_timesteps"])
        self.geometry = self.config_geometry(dict(pipe.vae.config), dict(config))
        self.place(offload, blocks_to_swap)

    @classmethod
    def config_geometry(cls, vae: dict, transformer: dict) -> CogVideoXGeometry:
        """CogVideoXPipeline's VAE strides (spatial: 2 per down block after the first) times the transformer's
        temporal packing (1.5: two latent frames per token frame), and its patch."""
        temporal, pack = vae["temporal_compression_ratio"], int(transformer.get("patch_size_t") or 1)
        patch = transformer["patch_size"]
        return CogVideoXGeometry(temporal_stride=temporal * pack,
                                 spatial_stride=2 ** (len(vae["block_out_channels"]) - 1),
                                 patch=(1, patch, patch), frame_step=2 * temporal)

    # -- layouts ----------------------------------------------------------------------------------------
    def to_transformer_layout(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, pack*C, F, h, w), the method's, -> (B, pack*F, C, h, w), the transformer's (1.5: each method frame
        unpacked into its two latent frames)."""
        b, c, f, h, w = latents.shape
        p = self.pack
        return latents.view(b, p, c // p, f, h, w).permute(0, 3, 1, 2, 4, 5).reshape(b, f * p, c // p, h, w)

    def to_method_layout(self, frames_first: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_transformer_layout`: (B, L, C, h, w) -> (B, pack*C, L/pack, h, w)."""
        b, n, c, h, w = frames_first.shape
        p = self.pack
        return frames_first.view(b, n // p, p, c, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, p * c, n // p, h, w)

    def sampler_latents(self, latents: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        """CogVideoXPipeline steps on the transformer's layout, frames first."""
        return self.to_transformer_layout(latents)

    def method_latents(self, latents: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
        return self.to_method_layout(latents)

    # -- encoding -------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """The VAE latent's mode times `scaling_factor` (what the pipeline's decode divides by). On 1.5 an odd number
        of latent frames gets the first one repeated in front, as CogVideoX's fine-tuning pads it."""
        vae = self.pipe.vae
        dist = vae.encode(video[None].to(vae.device, vae.dtype)).latent_dist
        latents = dist.mode().float() * vae.config.scaling_factor  # (1, C, L, h, w)
        missing = -latents.shape[2] % self.pack
        if missing:
            latents = torch.cat([latents[:, :, :1]] * missing + [latents], dim=2)
        return self.to_method_layout(latents.permute(0, 2, 1, 3, 4)).to(self.device)

    # -- positions ------------------------------------------------------------------------------------
    def rotary_tables(self, hidden: torch.Tensor, frame_positions: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """The pipeline's own RoPE tables for transformer-layout latents (B, L, C, h, w), with the temporal channels
        (the first head_dim / 4 of each row) rebuilt at `frame_positions` (one per token frame) when given."""
        _, frames, _, h, w = hidden.shape
        stride = self.pipe.vae_scale_factor_spatial
        cos, sin = self.pipe._prepare_rotary_positional_embeddings(h * stride, w * stride, frames, hidden.device)
        if frame_positions is None:
            return cos, sin
        tokens = frames // self.pack
        if len(frame_positions) != tokens:
            raise InputError(f"{len(frame_positions)} frame positions for {tokens} frames")
        t_dim = self.experts[0].module.config.attention_head_dim // 4
        t_cos, t_sin = get_1d_rotary_pos_embed(t_dim, frame_positions.detach().to(cos.device, torch.float32),
                                               theta=ROPE_THETA, use_real=True)
        out = []
        for table, temporal in ((cos, t_cos), (sin, t_sin)):
            table = table.view(tokens, -1, table.shape[-1]).clone()
            table[..., :t_dim] = temporal.to(table)[:, None, :]
            out.append(table.view(-1, table.shape[-1]))
        return out[0], out[1]

    def sincos_table(self, embed: nn.Module, hidden: torch.Tensor, frame_positions: torch.Tensor) -> torch.Tensor:
        """2B's joint position table (1, text + video tokens, D) for transformer-layout latents, as its patch
        embedding builds it (its buffer at the configured size, else rebuilt), with the temporal quarter of the
        channels at `frame_positions` (one per latent frame)."""
        _, frames, _, h, w = hidden.shape
        if len(frame_positions) != frames:
            raise InputError(f"{len(frame_positions)} frame positions for {frames} frames")
        pixel_frames = (frames - 1) * embed.temporal_compression_ratio + 1
        if (embed.sample_height, embed.sample_width, embed.sample_frames) == (h, w, pixel_frames):
            table = embed.pos_embedding
        else:
            table = embed._get_positional_embeddings(h, w, pixel_frames, device=hidden.device)
        t_dim = embed.embed_dim // 4
        grid_t = frame_positions.detach().to(table.device, torch.float32) / embed.temporal_interpolation_scale
        temporal = get_1d_sincos_pos_embed_from_grid(t_dim, grid_t, output_type="pt")
        table = table.clone()
        video = table[:, embed.max_text_seq_length:].view(frames, -1, table.shape[-1])
        video[..., :t_dim] = temporal.to(table)[:, None, :]
        return table

    @contextlib.contextmanager
    def absolute_positions(self, expert: Expert, hidden: torch.Tensor, frame_positions: torch.Tensor | None
                           ) -> Iterator[None]:
        """2B: while active, the patch embedding adds the sin-cos table of `frame_positions` instead of its own
        (its own is switched off and a forward hook adds ours, as `embeds + pos_embedding`). Nothing changes when
        the model uses RoPE or no positions are given."""
        embed = expert.module.patch_embed
        if self.rope or frame_positions is None:
            yield
            return
        if embed.use_learned_positional_embeddings:
            raise InputError("this CogVideoX model has learned position embeddings: its frames cannot take other "
                             "temporal positions; set motion.rope: none, or motion.keep_frames: null (all frames)")
        table = self.sincos_table(embed, hidden, frame_positions)
        handle = embed.register_forward_hook(lambda _module, _args, out: out + table.to(out))
        embed.use_positional_embeddings = False
        try:
            yield
        finally:
            embed.use_positional_embeddings = True
            handle.remove()

    @classmethod
    def check_rotary_config(cls, transformer: dict) -> None:
        """CogVideoX-2B (`use_rotary_positional_embeddings: false`) adds an absolute sin-cos table to its tokens: no
        rotary tables to optimise."""
        if not transformer.get("use_rotary_positional_embeddings"):
            raise InputError("this CogVideoX model (use_rotary_positional_embeddings: false, as CogVideoX-2B) has "
                             "absolute position embeddings, not rotary tables: guidance.ditflow.optimise: positions "
                             "cannot run on it; set guidance.ditflow.optimise: latent")

    @contextlib.contextmanager
    def rotary_transform(self, expert: Expert, transform: RotaryTransform) -> Iterator[None]:
        """The pipeline builds the RoPE tables and passes them in as `image_rotary_emb` (as `transformer_output`
        does): a forward pre-hook on the transformer passes them through `transform`; the self-attentions run
        `RotaryProcessor` meanwhile, eagerly: compiled blocks (`model.compile`) would recompile for each processor
        swap (every guided step), so the guided steps run uncompiled and the others as compiled."""
        self.check_rotary_config(dict(expert.module.config))

        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if kwargs.get("image_rotary_emb") is None:
                raise InputError("the CogVideoX transformer was called without its RoPE tables (image_rotary_emb): "
                                 "no positions to optimise; set guidance.ditflow.optimise: latent")
            return args, {**kwargs, "image_rotary_emb": through_transform(kwargs["image_rotary_emb"], transform)}

        modules = [expert.module.get_submodule(site.q.rpartition(".")[0]) for site in expert.sites]
        processors = [module.processor for module in modules]
        handle = expert.module.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            for module in modules:
                module.processor = RotaryProcessor()
            with torch.compiler.set_stance("force_eager"):
                yield
        finally:
            handle.remove()
            for module, processor in zip(modules, processors, strict=True):
                module.processor = processor

    # -- the transformer ------------------------------------------------------------------------------
    def transformer_output(self, expert: Expert, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning,
                           frame_positions: torch.Tensor | None, spatial_stride: int) -> torch.Tensor:
        """As one step of the pipeline, on the transformer's layout; the positions are placed here: the pipeline's
        RoPE tables (`rotary_tables`) or 2B's absolute table (`absolute_positions`)."""
        if spatial_stride != 1:
            raise InputError("CogVideoX's spatial positions cannot be spaced out: leave motion.downsample at 1")
        model = self.denoiser(expert)
        hidden = self.to_transformer_layout(latents.to(self.dtype))
        rotary = self.rotary_tables(hidden, frame_positions) if self.rope else None
        with self.absolute_positions(expert, hidden, frame_positions):
            out = model(
                hidden_states=hidden,
                encoder_hidden_states=cond.tensors["text"].to(self.dtype),
                timestep=timesteps.to(latents.device),
                image_rotary_emb=rotary,
                return_dict=False,
            )[0]
        return self.to_method_layout(out)

    @staticmethod
    def attention_qk(attn: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """q and k as the processor computes them (`joint_qk`), the video tokens' rows only (text tokens come
        first), frame-major."""
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        text = kwargs["encoder_hidden_states"] if "encoder_hidden_states" in kwargs else args[1]
        q, k = joint_qk(attn, hidden, text, kwargs.get("image_rotary_emb"))
        n = text.shape[1]
        return q[:, :, n:].transpose(1, 2), k[:, :, n:].transpose(1, 2)

    # -- LoRA files -----------------------------------------------------------------------------------
    @staticmethod
    def comfyui_key(module_name: str) -> str:
        """`transformer_blocks.N.attn1.to_q|to_k|to_v|to_out.0` -> `diffusion_model.blocks.N.q|k|v|attn_out`, the
        names of ComfyUI's native CogVideoX model (comfy/ldm/cogvideo/model.py)."""
        block, projection = attention_projection(module_name, "attn1", _COMFY_ROLE,
                                                 "a CogVideoX self-attention projection")
        return f"{COMFY_PREFIX}blocks.{block}.{_COMFY_ROLE[projection]}"

    @staticmethod
    def diffusers_module(comfy_key: str) -> str:
        """The inverse of `comfyui_key` (a module key without `.lora_A/B.weight` or `.alpha`)."""
        parts = comfy_key.removeprefix(COMFY_PREFIX).split(".")
        if len(parts) != 3 or parts[0] != "blocks" or parts[2] not in _DIFFUSERS_ROLE:
            raise InputError(f"{comfy_key!r} is not a ComfyUI CogVideoX self-attention key")
        return f"transformer_blocks.{parts[1]}.attn1.{_DIFFUSERS_ROLE[parts[2]]}"

    def save_diffusers_lora(self, path: str, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
        save_pipeline_lora(CogVideoXPipeline, path, state_dict, metadata)

    def _from_comfyui(self, path: str, folder: str) -> str:
        """A ComfyUI-format file rewritten as a diffusers one (keys renamed; rank and alpha into the adapter config),
        in `folder`: diffusers has no CogVideoX converter for ComfyUI keys."""
        def rename(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            renamed = {}
            for key, tensor in weights.items():
                module, _, which = key.rpartition(".lora_")  # "diffusion_model.blocks.0.q", "A.weight"
                renamed[f"{self.diffusers_module(module)}.lora_{which}"] = tensor
            return renamed

        try:
            state, metadata = comfyui_to_peft(load_file(path), rename, missing_alpha_is_rank=False)
        except InputError as err:
            raise InputError(f"{path}: {err}") from err
        converted = str(Path(folder) / Path(path).name)
        self.save_diffusers_lora(converted, state, metadata)
        return converted

    def load_lora(self, expert: Expert, path: str, adapter: str) -> None:
        comfy = is_comfyui_lora(lora_file_keys(path))
        with tempfile.TemporaryDirectory() as tmp:
            source = self._from_comfyui(str(path), tmp) if comfy else str(path)
            with loading_lora(path, "a CogVideoX LoRA"):
                # from the file, as users load it, so diffusers reads the adapter config (rank, alpha) it holds
                self.pipe.load_lora_weights(source, adapter_name=adapter)
                state = CogVideoXPipeline.lora_state_dict(source)
        # diffusers creates the adapter in the model's dtype; keep the file's exact float32 values instead, so a
        # reloaded LoRA computes what the trained one did (and can keep training).
        keep_file_values(expert.module, adapter, state)

    # -- generation -----------------------------------------------------------------------------------
    def sample(self, call: dict, guidance: float, guidance_2: float | None, image: np.ndarray | None
               ) -> np.ndarray:
        """CogVideoXPipeline itself (1.5 pads and drops its extra latent frame itself)."""
        return self.pipe(**call, guidance_scale=guidance, max_sequence_length=self.text_length).frames[0]
