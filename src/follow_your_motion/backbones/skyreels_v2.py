"""SkyReels-V2 (diffusers `SkyReelsV2Pipeline`, `SkyReelsV2ImageToVideoPipeline`, `SkyReelsV2Transformer3DModel`)
behind the backbone interface: Wan2.1's architecture fine-tuned at 24 fps, so everything but the pipeline classes
and the sampler shift is Wan's (`WanBackbone`): the self-attention sites `blocks.N.attn1`, q/k RMS-normalised
across heads, the rotary embedding with its temporal, row and column parts (`PositionedRope` replaces them), the
image-to-video condition (mask channels and first-frame latents beside the noisy latents, CLIP image embeddings),
the LoRA loader (`SkyReelsV2LoraLoaderMixin` reads diffusers and Wan-format keys alike) and ComfyUI's Wan keys
(the released checkpoints carry Wan2.1's key names).

The diffusion-forcing pipelines (per-frame noise levels, causal blocks) are refused by name in the registry.
"""

from __future__ import annotations

import torch
from diffusers import SkyReelsV2ImageToVideoPipeline, SkyReelsV2Pipeline, UniPCMultistepScheduler

from .wan import WanBackbone

# The release's sampler shift (SkyworkAI/SkyReels-V2 README and diffusers' SkyReels-V2 pipeline examples:
# "8.0 for T2V, 5.0 for I2V"), set on the scheduler as diffusers' examples do, so training noise levels and
# sampling share it.
RELEASE_SHIFT = {SkyReelsV2Pipeline: 8.0, SkyReelsV2ImageToVideoPipeline: 5.0}

SkyReelsV2Pipelines = SkyReelsV2Pipeline | SkyReelsV2ImageToVideoPipeline


class SkyReelsV2Backbone(WanBackbone):
    """SkyReels-V2 text- or image-to-video: Wan's backbone on SkyReels-V2's pipelines."""

    name = "skyreels_v2"
    title = "SkyReels-V2"
    pipelines = (SkyReelsV2Pipeline, SkyReelsV2ImageToVideoPipeline)
    pipeline_kind = "a SkyReels-V2 text- or image-to-video pipeline"

    def __init__(self, pipe: SkyReelsV2Pipelines, device: str | torch.device = "cpu", offload: bool = False,
                 blocks_to_swap: int = 0, text_length: int = 512) -> None:
        pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config,
                                                             flow_shift=RELEASE_SHIFT[type(pipe)])
        super().__init__(pipe, device=device, offload=offload, blocks_to_swap=blocks_to_swap, text_length=text_length)
        self.image_mode = "required" if isinstance(pipe, SkyReelsV2ImageToVideoPipeline) else "none"
