"""LTX-2 (diffusers `LTX2Pipeline`, `LTX2ImageToVideoPipeline`, `LTX2VideoTransformer3DModel`) behind the backbone
interface: one audio-video transformer for all noise levels, text-to-video, and image-to-video on the same checkpoint.

The transformer runs two streams side by side in each block `transformer_blocks.N`: the video tokens (`attn1`
self-attention, `attn2` cross-attention to the prompt, `ff`) and the audio tokens (`audio_attn1`, `audio_attn2`,
`audio_ff`), joined by two cross-attentions (`audio_to_video_attn`: video queries on audio keys;
`video_to_audio_attn`: the reverse). Only the VIDEO stream's self-attention is a site: `attn1`'s to_q / to_k / to_v /
to_out.0, q and k RMS-normalised across all heads, then rotated over the whole inner width ("interleaved" channel
pairs, or "split" halves per head: the config's `rope_type`). The audio stream, both audio-video cross-attentions and
the text path stay the base model's.

Audio while tuning. The reference is a video; its sound (if any) is not what the method learns. Lightricks' own
trainer (LTX-2 repository, packages/ltx-trainer, `training_strategies/text_to_video.py`) trains video-only LoRAs with
`with_audio: false`: it gives the transformer no audio modality, and its block (`ltx_core` BasicAVTransformerBlock)
then skips the audio-to-video cross-attention (`run_a2v` needs both streams). `predict` does the same through
diffusers: `isolate_modalities=True` turns both audio-video cross-attentions off, so the video output does not depend
on the audio stream at all, which is fed one zero token (the forward needs one) with the prompt's audio embeddings.
Sampling is the pipeline's own, audio included and cross-attention on, exactly as its users run it; its audio
waveform is not written (`generate` returns frames only, as every family's). A motion LoRA changes no audio module,
but the sampled audio still follows the video it is generated with (the video-to-audio cross-attention reads it).

Positions. The transformer takes `video_coords`: per token, [start, end) bounds in pixel space of its patch along
(time, rows, columns), time in seconds (the causal first frame shifted, `prepare_video_coords`). `video_coords`
builds the same bounds with the latent frame grid replaced by `frame_positions` (possibly fractional) and each row and
column of a shrunk clip spanning `spatial_stride` cells of the full-size one; with no replacement `predict` leaves
them to the transformer (stock, bit-identical). The audio-video cross-attention's time axis is read from the same
coordinates, so it follows the kept frames too.

Image-to-video, as `LTX2ImageToVideoPipeline` runs it: the first latent frame holds the image's clean latents (the
image re-compressed as H.264 at the pipeline's CRF first) and its tokens get timestep 0 (a fixed frame); the audio
timestep stays the clip's. An `LTX2Pipeline` checkpoint animates a picture when given one (the same weights, run as
the image-to-video pipeline); a directory saved as `LTX2ImageToVideoPipeline` always needs one.

Objective: rectified flow (FlowMatchEulerDiscreteScheduler), timestep sigma * 1000; the sampler shifts by the token
count (`LightricksBackbone.clip_shift`, with LTX2Pipeline's defaults). LoRA files: `LTX2Pipeline.load_lora_weights`
reads diffusers' keys; ComfyUI's LTX-AV model (comfy/ldm/lightricks/av_model.py) names its video self-attention
`transformer_blocks.N.attn1.to_q` etc. as diffusers does, under `diffusion_model.`, which diffusers' own LTX-2 key
converter reads back.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import LTX2ImageToVideoPipeline, LTX2Pipeline
from diffusers.models.transformers.transformer_ltx2 import apply_interleaved_rotary_emb, apply_split_rotary_emb
from diffusers.pipelines.ltx2.utils import apply_image_conditioning_crf, resolve_default_image_crf
from PIL import Image
from torch import nn

from ..errors import InputError
from ..video import resize_center_crop, to_tensor
from .diffusers_base import attention_projection, self_attention_sites
from .experts import Expert
from .inputs import Conditioning
from .lora_files import COMFY_PREFIX
from .ltx import LightricksBackbone

FRAME_RATE = 24.0  # LTX2Pipeline.__call__'s default `frame_rate`: the RoPE's time axis is in seconds of it
TEXT_LENGTH = 1024  # LTX2Pipeline.__call__'s default `max_sequence_length` of the Gemma 3 prompt
# LTX2Pipeline's calculate_shift arguments where its scheduler config has none (base_image_seq_len,
# max_image_seq_len, base_shift, max_shift)
SHIFT_DEFAULTS = (1024, 4096, 0.95, 2.05)
SHIFT_FRAMES, SHIFT_SIZE = 121, (512, 768)  # the recipe's clip: where no clip is known, training noise follows it
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
ROTATIONS = {"interleaved": apply_interleaved_rotary_emb, "split": apply_split_rotary_emb}


def video_coords(rope: nn.Module, batch: int, grid: tuple[int, int, int], fps: float, device: torch.device,
                 frame_positions: torch.Tensor | None = None, spatial_stride: int = 1) -> torch.Tensor:
    """(B, 3, tokens, 2) patch bounds as `LTX2AudioVideoRotaryPosEmbed.prepare_video_coords` makes them for a latent
    `grid` (frames, rows, cols), in the same float32 operations, with the latent frames at `frame_positions` (one per
    latent frame) and each row and column spanning `spatial_stride` cells: stock positions give its tensor bit for
    bit."""
    frames, rows, cols = grid
    pt, p, s = rope.patch_size_t, rope.patch_size, spatial_stride
    if frame_positions is None:
        grid_f = torch.arange(0, frames, pt, dtype=torch.float32, device=device)
    elif len(frame_positions) != frames:
        raise InputError(f"{len(frame_positions)} frame positions for {frames} latent frames")
    else:
        grid_f = frame_positions.detach().to(device, torch.float32)[::pt]
    grid_h = torch.arange(0, rows, p, dtype=torch.float32, device=device) * s
    grid_w = torch.arange(0, cols, p, dtype=torch.float32, device=device) * s
    starts = torch.stack(torch.meshgrid(grid_f, grid_h, grid_w, indexing="ij"), dim=0)
    ends = starts + torch.tensor((pt, p * s, p * s), dtype=torch.float32, device=device).view(3, 1, 1, 1)
    coords = torch.stack([starts, ends], dim=-1).flatten(1, 3).unsqueeze(0).repeat(batch, 1, 1, 1)
    pixels = coords * torch.tensor(rope.scale_factors, device=device).view(1, -1, 1, 1)
    pixels[:, 0, ...] = (pixels[:, 0, ...] + rope.causal_offset - rope.scale_factors[0]).clamp(min=0)
    pixels[:, 0, ...] = pixels[:, 0, ...] / fps
    return pixels


class LTX2Backbone(LightricksBackbone):
    """LTX-2 through diffusers. `frame_rate` is the rate the RoPE's time axis assumes in tuning and sampling
    (LTX2Pipeline's default 24); `text_length` the padded Gemma 3 prompt length (1024)."""

    name = "ltx2"
    pipelines = (LTX2Pipeline, LTX2ImageToVideoPipeline)
    pipeline_kind = "an LTX-2 text- or image-to-video pipeline"
    lora_pipeline = LTX2Pipeline  # the image-to-video pipeline has the same loader and helpers
    lora_kind = "an LTX-2 LoRA"
    shift_defaults = SHIFT_DEFAULTS

    def __init__(self, pipe: LTX2Pipeline | LTX2ImageToVideoPipeline, device: str | torch.device = "cpu",
                 offload: bool = False, blocks_to_swap: int = 0, frame_rate: float = FRAME_RATE,
                 text_length: int = TEXT_LENGTH) -> None:
        transformer = pipe.transformer
        sites = self_attention_sites(transformer, "transformer_blocks.{i}.attn1", text_tokens="none",
                                     qk_norm="across_heads")
        super().__init__(pipe, [Expert("", transformer, sites)], device)
        self.frame_rate = frame_rate
        self.text_length = text_length
        self.image_mode = "required" if isinstance(pipe, LTX2ImageToVideoPipeline) else "optional"
        self.geometry = self.config_geometry(dict(pipe.vae.config), dict(transformer.config))
        self.flow_shift = self.clip_shift(SHIFT_FRAMES, *SHIFT_SIZE)
        self.place(offload, blocks_to_swap)

    # -- encoding ---------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> Conditioning:
        """As the pipeline encodes a prompt: Gemma 3's stacked hidden states through the text connectors, which give
        the video stream's embeddings (`text`), the audio stream's (`audio_text`) and their mask (`text_mask`)."""
        embeds, mask, _, _ = self.pipe.encode_prompt(prompt, do_classifier_free_guidance=False,
                                                     max_sequence_length=self.text_length, device=self.device)
        video, audio, mask = self.pipe.connectors(embeds, mask, padding_side=self.pipe.tokenizer.padding_side)
        return Conditioning({"text": video.to(self.dtype), "audio_text": audio.to(self.dtype), "text_mask": mask})

    @torch.no_grad()
    def encode_image(self, image: np.ndarray, num_frames: int, height: int, width: int) -> Conditioning:
        """The first-frame condition as LTX2ImageToVideoPipeline makes it: the image (H, W, 3) uint8 fitted to the
        size, re-compressed at the pipeline's CRF, its latents as `first_frame`, given clean in place of latent frame
        0 (a fixed frame)."""
        self.check_image(True)
        frame = resize_center_crop(image[None], height, width)[0]
        frame = apply_image_conditioning_crf(frame, resolve_default_image_crf(self.pipe.text_encoder))
        latents = self.encode_video(to_tensor(frame[None]))
        return Conditioning({"first_frame": latents.to(self.dtype)}, fixed_frames=(0,))

    # -- the transformer --------------------------------------------------------------------------------
    def transformer_output(self, expert: Expert, latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning,
                           frame_positions: torch.Tensor | None, spatial_stride: int) -> torch.Tensor:
        """As one step of the pipeline on the video stream, with the audio-video cross-attentions off (see the module
        docstring): packed tokens, the timestep on the 0..1000 scale (per token where a frame is fixed), the video
        coordinates where positions are replaced, one zero audio token."""
        hidden = latents.to(self.dtype)
        per_sample = timesteps.to(latents.device)
        video_timesteps = per_sample.expand(hidden.shape[0])
        if cond.fixed_frames:  # image-to-video: the clean first frame in place, with timestep 0 on its tokens
            hidden, video_timesteps = self.fix_frames(hidden, per_sample, cond)
        transformer = expert.module
        grid = self.token_grid(hidden)
        coords = None
        if frame_positions is not None or spatial_stride != 1:
            coords = video_coords(transformer.rope, hidden.shape[0], grid, self.frame_rate, hidden.device,
                                  frame_positions, spatial_stride)
        pt, p, _ = self.geometry.patch
        audio = hidden.new_zeros(hidden.shape[0], 1, transformer.config.audio_in_channels)
        out = self.denoiser(expert)(
            hidden_states=LTX2Pipeline._pack_latents(hidden, p, pt),
            audio_hidden_states=audio,
            encoder_hidden_states=cond.tensors["text"].to(self.dtype),
            audio_encoder_hidden_states=cond.tensors["audio_text"].to(self.dtype),
            timestep=video_timesteps,
            audio_timestep=per_sample.expand(hidden.shape[0]),
            sigma=per_sample.expand(hidden.shape[0]),
            encoder_attention_mask=cond.tensors["text_mask"],
            audio_encoder_attention_mask=cond.tensors["text_mask"],
            num_frames=grid[0],
            height=grid[1],
            width=grid[2],
            fps=self.frame_rate,
            audio_num_frames=1,
            video_coords=coords,
            isolate_modalities=True,
            return_dict=False,
        )[0]
        return LTX2Pipeline._unpack_latents(out, *grid, p, pt)

    @staticmethod
    def attention_qk(attn: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """What LTX2AudioVideoAttnProcessor computes before attention: norm_q(to_q(h)) and norm_k(to_k(h)), the
        rotation of the module's `rope_type` over the inner width, then the split into heads; frame-major tokens."""
        hidden = args[0] if args else kwargs["hidden_states"]
        rotary = args[3] if len(args) > 3 else kwargs.get("query_rotary_emb")
        q, k = attn.norm_q(attn.to_q(hidden)), attn.norm_k(attn.to_k(hidden))
        if rotary is not None:
            rotate = ROTATIONS[attn.rope_type]
            q, k = rotate(q, rotary), rotate(k, rotary)
        return q.unflatten(2, (attn.heads, -1)), k.unflatten(2, (attn.heads, -1))

    # -- LoRA files -------------------------------------------------------------------------------------
    @staticmethod
    def comfyui_key(module_name: str) -> str:
        """`transformer_blocks.N.attn1.<projection>` under `diffusion_model.`: ComfyUI's LTX-AV model
        (comfy/ldm/lightricks/av_model.py, BasicAVTransformerBlock) names the video self-attention as diffusers
        does; nothing else is a site here."""
        attention_projection(module_name, "attn1", PROJECTIONS, "an LTX-2 video self-attention projection")
        return COMFY_PREFIX + module_name

    # -- generation -------------------------------------------------------------------------------------
    def sample(self, call: dict, guidance: float, guidance_2: float | None, image: np.ndarray | None
               ) -> np.ndarray:
        """The pipeline itself at `frame_rate` with its own audio, STG and modality guidance defaults (an image: the
        image-to-video pipeline on the same components); the video's frames."""
        pipe, extra = self.pipe, {}
        if image is not None:
            extra["image"] = Image.fromarray(resize_center_crop(image[None], call["height"], call["width"])[0])
            if not isinstance(pipe, LTX2ImageToVideoPipeline):
                pipe = LTX2ImageToVideoPipeline(**pipe.components)
        return pipe(**call, frame_rate=self.frame_rate, guidance_scale=guidance, max_sequence_length=self.text_length,
                    **extra).frames[0]
