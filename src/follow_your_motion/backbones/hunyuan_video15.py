"""HunyuanVideo 1.5 (diffusers `HunyuanVideo15Pipeline`, `HunyuanVideo15Transformer3DModel`,
`AutoencoderKLHunyuanVideo15`) behind the backbone interface: text-to-video, one transformer for all noise levels.

The transformer has only dual-stream blocks (`transformer_blocks.N`, no single-stream ones). Each block's `attn` is
JOINT attention over [video tokens, text tokens]: the video stream has its own to_q / to_k / to_v / to_out.0, the
text stream its own add_q_proj / add_k_proj / add_v_proj / to_add_out, and q, k of both are RMS-normalised per head
(head_dim channels). 3D RoPE is applied to the video tokens only, before the text tokens are appended
(`HunyuanVideo15AttnProcessor2_0`), so the video tokens come first (`text_tokens="after"`). Every block is a site
(video tokens attend to each other in each one); the LoRA targets are the video-stream projections only, so the text
stream, and the token refiner's own self-attention over the prompt (`context_embedder...attn.to_q`), stay the base
model's. With per-head norm and separate text projections, a head-masked LoRA here is exactly head-local.

Conditioning: the Qwen2.5-VL prompt embeddings and their mask (1000 tokens after the template crop), the byT5 glyph
embeddings and their mask (256 tokens; all zeros and masked when the prompt quotes no text), as the pipeline's
`encode_prompt` makes them. Text-to-video feeds the transformer 2C + 1 channels, [latents, zero condition latents,
zero mask], and 729 zero image tokens, as the pipeline does.

Positions. `HunyuanVideo15RotaryPosEmbed` builds its cos / sin tables from the latent grid: per axis (time, rows,
columns) `get_1d_rotary_pos_embed(rope_axes_dim[i], grid, rope_theta)`, concatenated. `PositionedRope` rebuilds the
same tables with the time axis at given (possibly fractional) frame positions; stock positions are bit-identical.

Planning: diffusers' forward branches on tensor values (whether the image tokens are all zero; the text tokens
reordered by boolean masks), which `fym plan`'s fake tensors do not have; while it traces, `on_fake_tensors` runs
`fixed_shape_forward` instead, the same values with every shape known beforehand.

Objective: rectified flow (FlowMatchEulerDiscreteScheduler), timestep sigma * 1000, the scheduler's `shift` as the
sampler shift. Guidance comes from the pipeline's `guider` component (ClassifierFreeGuidance), not a call argument.
LoRA files: the transformer's own PEFT loader (`load_lora_adapter`) reads them; the pipeline has no LoRA mixin.
ComfyUI's native model fuses the video stream's q, k, v into one `img_attn.qkv`: its files carry one fused LoRA per
block there (method/export.py), which only ComfyUI loads.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import numpy as np
import torch
from diffusers import HunyuanVideo15Pipeline
from diffusers.models.embeddings import apply_rotary_emb, get_1d_rotary_pos_embed
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.utils.peft_utils import apply_lora_scale
from safetensors.torch import load_file
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._pytree import tree_map_only

from ..errors import InputError
from .diffusers_base import DiffusersBackbone, PositionedRotary, attention_projection, self_attention_sites
from .experts import AttentionSite, Expert
from .inputs import Conditioning, VideoGeometry
from .loading import ModelLoadError, keep_file_values
from .lora_files import COMFY_PREFIX, PREFIX, loading_lora, lora_file_keys, write_diffusers_lora

IMAGE_TOKENS = 729  # HunyuanVideo15Pipeline.vision_num_semantic_tokens: zero SigLIP tokens for text-to-video
# diffusers' video-stream projection -> (ComfyUI module of the dual-stream block, (slot, slots) in it)
_COMFY_ROLE = {"to_q": ("img_attn.qkv", (0, 3)), "to_k": ("img_attn.qkv", (1, 3)), "to_v": ("img_attn.qkv", (2, 3)),
               "to_out.0": ("img_attn.proj", (0, 1))}


def _comfy_parts(module_name: str) -> tuple[str, str]:
    """(block index, projection) of a video-stream attention projection `transformer_blocks.N.attn.<projection>`."""
    return attention_projection(module_name, "attn", _COMFY_ROLE,
                                "a HunyuanVideo 1.5 video-stream attention projection")


class PositionedRope(PositionedRotary):
    """HunyuanVideo 1.5's 3D rotary embedding with replaceable positions: set, it builds the stock tables with the
    same float32 operations in the same order, the time axis of the grid at `frame_positions` (one per latent
    frame) and the rows and columns `spatial_stride` apart."""

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stock:
            return self.inner(hidden_states)
        rope = self.inner
        _, _, frames, height, width = hidden_states.shape
        tokens = frames // rope.patch_size_t
        device = hidden_states.device
        if self.frame_positions is None:
            times = torch.arange(0, tokens, device=device, dtype=torch.float32)
        elif len(self.frame_positions) != tokens:
            raise InputError(f"{len(self.frame_positions)} frame positions for {tokens} frames")
        else:
            times = self.frame_positions.detach().to(device, torch.float32)
        stride = self.spatial_stride
        axes = [times,
                torch.arange(0, height // rope.patch_size, device=device, dtype=torch.float32) * stride,
                torch.arange(0, width // rope.patch_size, device=device, dtype=torch.float32) * stride]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)
        freqs = [get_1d_rotary_pos_embed(rope.rope_dim[i], grid[i].reshape(-1), rope.theta, use_real=True)
                 for i in range(3)]
        return torch.cat([f[0] for f in freqs], dim=1), torch.cat([f[1] for f in freqs], dim=1)


def attention_sites(transformer: nn.Module) -> list[AttentionSite]:
    """Every dual-stream block's joint attention (`transformer_blocks.N.attn`): the video-stream projections, video
    tokens first and text after, q/k RMS-normalised per head."""
    return self_attention_sites(transformer, "transformer_blocks.{i}.attn", text_tokens="after", qk_norm="per_head")


def video_qk(attn: nn.Module, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor] | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The video tokens' q and k (B, S, heads, head_dim) exactly as `HunyuanVideo15AttnProcessor2_0` computes them:
    the projections, the split into heads, the per-head norm, then RoPE on the sequence axis."""
    q = attn.norm_q(attn.to_q(hidden).unflatten(2, (attn.heads, -1)))
    k = attn.norm_k(attn.to_k(hidden).unflatten(2, (attn.heads, -1)))
    if rotary is not None:
        q = apply_rotary_emb(q, rotary, sequence_dim=1)
        k = apply_rotary_emb(k, rotary, sequence_dim=1)
    return q, k


def joint_text(text: torch.Tensor, text_mask: torch.Tensor, text_2: torch.Tensor, text_mask_2: torch.Tensor,
               image: torch.Tensor, image_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens the video attends with and their mask, (B, image + byT5 + Qwen tokens, D) and (B, ...): per
    prompt, the valid image, byT5 and Qwen tokens, then the invalid ones, the invalid text tokens zeroed, as
    diffusers' forward orders them. Diffusers gathers each group by boolean indexing, whose size is a count of the
    mask's values; here a stable sort of the masks (valid first, each group in its order) gives the same values in
    the same places with a size known from the shapes alone."""
    tokens = torch.cat([image, text_2.masked_fill(~text_mask_2[..., None], 0),
                        text.masked_fill(~text_mask[..., None], 0)], dim=1)
    masks = torch.cat([image_mask, text_mask_2, text_mask], dim=1)
    order = torch.argsort(masks.logical_not().to(torch.uint8), dim=1, stable=True)
    return tokens.gather(1, order[..., None].expand_as(tokens)), masks.gather(1, order)


@apply_lora_scale("attention_kwargs")
def fixed_shape_forward(self: nn.Module, hidden_states: torch.Tensor, timestep: torch.Tensor,
                        encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor,
                        timestep_r: torch.Tensor | None = None, encoder_hidden_states_2: torch.Tensor | None = None,
                        encoder_attention_mask_2: torch.Tensor | None = None, image_embeds: torch.Tensor | None = None,
                        attention_kwargs: dict | None = None, return_dict: bool = True):
    """`HunyuanVideo15Transformer3DModel.forward` (diffusers 0.42) step for step, but for its two branches on tensor
    values: whether the image tokens are all zero (text-to-video) selects their values by `torch.where` instead of a
    Python `if`, and the text tokens are ordered by `joint_text` instead of boolean indexing. The same values
    (tests/test_hunyuan_video15.py compares the two bit for bit), with every shape known without them."""
    batch_size, _, num_frames, height, width = hidden_states.shape
    p_t, p_h, p_w = self.config.patch_size_t, self.config.patch_size, self.config.patch_size
    frames, rows, cols = num_frames // p_t, height // p_h, width // p_w
    image_rotary_emb = self.rope(hidden_states)
    temb = self.time_embed(timestep, timestep_r=timestep_r)
    hidden_states = self.x_embedder(hidden_states)

    def typed(tokens: torch.Tensor, kind: int) -> torch.Tensor:  # each stream plus its condition-type embedding
        return tokens + self.cond_type_embed(torch.full_like(tokens[:, :, 0], kind, dtype=torch.long))

    text = typed(self.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask), 0)
    text_2 = typed(self.context_embedder_2(encoder_hidden_states_2), 1)
    image = self.image_embedder(image_embeds)
    text_to_video = torch.all(image_embeds == 0)
    image = typed(torch.where(text_to_video, image * 0.0, image), 2)
    image_mask = text_to_video.logical_not().expand(batch_size, image.shape[1])
    encoder_hidden_states, encoder_attention_mask = joint_text(
        text, encoder_attention_mask.bool(), text_2, encoder_attention_mask_2.bool(), image, image_mask)

    for block in self.transformer_blocks:
        args = (hidden_states, encoder_hidden_states, temb, encoder_attention_mask, image_rotary_emb)
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            hidden_states, encoder_hidden_states = self._gradient_checkpointing_func(block, *args)
        else:
            hidden_states, encoder_hidden_states = block(*args)

    hidden_states = self.proj_out(self.norm_out(hidden_states, temb))
    hidden_states = hidden_states.reshape(batch_size, frames, rows, cols, -1, p_t, p_h, p_w)
    hidden_states = hidden_states.permute(0, 4, 1, 5, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(2, 3)
    return (hidden_states,) if not return_dict else Transformer2DModelOutput(sample=hidden_states)


def fake_forward(self: nn.Module, *args, **kwargs):
    """`fixed_shape_forward` with every real tensor among the inputs made a fake one of the parameters' mode, where
    the parameters are fake (`fym plan`): the masks come from the tokenizers as real tensors, and from the joint mask
    diffusers' attention processor builds (B, 1, S, S) masks in every block, which would otherwise be computed for
    real on the CPU (2.6 GB each at the recipe size). Counted alike: a fake tensor's bytes are a real one's."""
    mode = getattr(next(self.parameters()), "fake_mode", None)
    if mode is not None:
        args, kwargs = tree_map_only(torch.Tensor, lambda t: t if isinstance(t, FakeTensor) else mode.from_tensor(t),
                                     (args, kwargs))
    return fixed_shape_forward(self, *args, **kwargs)


class HunyuanVideo15Backbone(DiffusersBackbone):
    """HunyuanVideo 1.5 text-to-video through diffusers."""

    name = "hunyuan_video15"
    pipelines = (HunyuanVideo15Pipeline,)
    pipeline_kind = "a HunyuanVideo 1.5 text-to-video pipeline"
    # Untiled, its VAE holds about 140 GiB encoding the recipe's 121 x 480 x 848 clip (`fym plan`): tiled by default
    tiled_vae = True

    def __init__(self, pipe: HunyuanVideo15Pipeline, device: str | torch.device = "cpu", offload: bool = False,
                 blocks_to_swap: int = 0) -> None:
        transformer = pipe.transformer
        config = transformer.config
        if config.patch_size_t != 1 or config.use_meanflow:
            raise ModelLoadError("this HunyuanVideo 1.5 transformer (temporal patch or MeanFlow super-resolution) is "
                                 "not supported; use a base text-to-video checkpoint")
        transformer.rope = PositionedRope(transformer.rope)
        super().__init__(pipe, [Expert("", transformer, attention_sites(transformer))], device)
        self.take_fixed_shift("HunyuanVideo 1.5")
        self.geometry = self.config_geometry(dict(pipe.vae.config), dict(config))
        self.place(offload, blocks_to_swap)

    @classmethod
    def config_geometry(cls, vae: dict, transformer: dict) -> VideoGeometry:
        """The VAE's compression ratios (config entries) and the transformer's patch."""
        return VideoGeometry(temporal_stride=vae["temporal_compression_ratio"],
                             spatial_stride=vae["spatial_compression_ratio"],
                             patch=(1, transformer["patch_size"], transformer["patch_size"]))

    # -- encoding ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """The VAE latent's mode times `scaling_factor`: what the image-to-video pipeline does to its image, and what
        the pipeline's decode divides by."""
        vae = self.pipe.vae
        dist = vae.encode(video[None].to(vae.device, vae.dtype)).latent_dist
        return (dist.mode().float() * vae.config.scaling_factor).to(self.device)

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> Conditioning:
        """Both encoders' embeddings and masks, as the pipeline makes them: Qwen2.5-VL (`text`, `text_mask`) and the
        byT5 glyph encoder (`text_2`, `text_mask_2`; zeros and masked out when the prompt quotes no text)."""
        text, mask, text_2, mask_2 = self.pipe.encode_prompt(prompt, device=self.device, dtype=self.dtype)
        return Conditioning({"text": text, "text_mask": mask, "text_2": text_2, "text_mask_2": mask_2})

    # -- the transformer --------------------------------------------------------------------------------
    def transformer_output(self, expert: Expert, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning,
                           frame_positions: torch.Tensor | None, spatial_stride: int) -> torch.Tensor:
        """As one step of the pipeline: [latents, zero condition latents, zero mask] on the channel axis, the
        timestep on the 0..1000 scale in the model's dtype, both prompts with their masks, zero image tokens."""
        hidden = latents.to(self.dtype)
        b, c, f, h, w = hidden.shape
        hidden = torch.cat([hidden, hidden.new_zeros(b, c, f, h, w), hidden.new_zeros(b, 1, f, h, w)], dim=1)
        image_embeds = hidden.new_zeros(b, IMAGE_TOKENS, expert.module.config.image_embed_dim)
        t = cond.tensors
        return self.denoiser(expert)(
            hidden_states=hidden,
            timestep=timesteps.to(latents.device, self.dtype),
            encoder_hidden_states=t["text"].to(self.dtype),
            encoder_attention_mask=t["text_mask"],
            encoder_hidden_states_2=t["text_2"].to(self.dtype),
            encoder_attention_mask_2=t["text_mask_2"],
            image_embeds=image_embeds,
            return_dict=False,
        )[0]

    @contextlib.contextmanager
    def on_fake_tensors(self) -> Iterator[None]:
        """The transformer's forward swapped for `fixed_shape_forward` on fake inputs (`fake_forward`; what it was
        before, diffusers' or a hook's wrapper, is back after): diffusers' branches on the image tokens' and the masks'
        values, which fake tensors do not have."""
        transformers = [expert.module for expert in self.experts]
        before = [vars(transformer).get("forward") for transformer in transformers]  # a hook's wrapper, if any
        for transformer in transformers:
            transformer.forward = types.MethodType(fake_forward, transformer)
        try:
            yield
        finally:
            for transformer, forward in zip(transformers, before, strict=True):
                if forward is None:
                    del transformer.forward
                else:
                    transformer.forward = forward

    @staticmethod
    def attention_qk(attn: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The video tokens' q and k as the processor computes them (`video_qk`); video tokens come first and are
        frame-major, as the patch embedding flattens them."""
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        return video_qk(attn, hidden, kwargs.get("image_rotary_emb"))

    # -- LoRA files -------------------------------------------------------------------------------------
    @staticmethod
    def comfyui_key(module_name: str) -> str:
        """`transformer_blocks.N.attn.to_q|to_k|to_v` -> `diffusion_model.double_blocks.N.img_attn.qkv` (ComfyUI
        fuses them: see `comfyui_slot`) and `...attn.to_out.0` -> `...img_attn.proj`: ComfyUI's native model
        (comfy/ldm/hunyuan_video/model.py, `double_blocks` of Flux's `DoubleStreamBlock`), whose state-dict keys
        ComfyUI's LoRA loader takes as they are."""
        block, projection = _comfy_parts(module_name)
        return f"{COMFY_PREFIX}double_blocks.{block}.{_COMFY_ROLE[projection][0]}"

    @staticmethod
    def comfyui_slot(module_name: str) -> tuple[int, int]:
        """q, k, v are rows 0..D, D..2D, 2D..3D of ComfyUI's fused `img_attn.qkv`; the output projection is its own."""
        return _COMFY_ROLE[_comfy_parts(module_name)[1]][1]

    def save_diffusers_lora(self, path: str, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
        """diffusers' layout (`lora_files.write_diffusers_lora`): this pipeline has no `save_lora_weights`."""
        write_diffusers_lora(path, state_dict, metadata)

    def load_lora(self, expert: Expert, path: str, adapter: str) -> None:
        """A diffusers-format file through the transformer's `load_lora_adapter`, as users load it; its adapter
        config (rank, alpha) comes from the file's metadata."""
        if any(not key.startswith(f"{PREFIX}.") for key in lora_file_keys(path)):
            raise InputError(f"{path}: not a diffusers-format HunyuanVideo 1.5 LoRA (keys must start with "
                             f"'{PREFIX}.'); a ComfyUI-native file (fused qkv) is for ComfyUI: here, load the "
                             f"diffusers file (`fym export --format diffusers`)")
        with loading_lora(path, "a HunyuanVideo 1.5 LoRA"):
            # use_safetensors: without it diffusers' load_lora_adapter skips the file's metadata (alpha = rank)
            expert.module.load_lora_adapter(str(path), prefix=PREFIX, adapter_name=adapter, use_safetensors=True)
        # diffusers creates the adapter in the model's dtype; keep the file's exact float32 values instead, so a
        # reloaded LoRA computes what the trained one did (and can keep training).
        state = load_file(str(path))
        keep_file_values(expert.module, adapter, state)

    # -- generation -------------------------------------------------------------------------------------
    def sample(self, call: dict, guidance: float, guidance_2: float | None, image: np.ndarray | None
               ) -> np.ndarray:
        """HunyuanVideo15Pipeline itself. Guidance is the guider's: a copy of the pipeline's guider with
        `guidance_scale = guidance` for this call (1 switches classifier-free guidance off, as the guider does),
        the pipeline's own restored after."""
        guider = self.pipe.guider
        self.pipe.guider = guider.new(guidance_scale=guidance)
        try:
            return self.pipe(**call).frames[0]
        finally:
            self.pipe.guider = guider
