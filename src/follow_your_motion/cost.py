"""Cost model of a Wan transformer: the FLOPs of a forward, a training step and stage 1, split into linear layers,
attention and LoRA, from a transformer's config alone. `fym` uses it to say how long a run would take on the CPU;
benchmarks/cost_model.py adds activation memory and checks it against measured steps.

What is counted (diffusers `WanTransformer3DModel`, Wan2.1 and Wan2.2 share it): every matrix product, at
2 FLOPs per multiply-add, exactly as `torch.utils.flop_counter.FlopCounterMode` counts them (the tests check
this on a tiny model). Normalisations, RoPE, softmax, GELU and the optimizer are not counted.
  linear    patch embedding, time and text embedders, per block q/k/v/o of self-attention, q/o of
            cross-attention on the video tokens and k/v on the text tokens, the FFN, the output projection;
  attention q k^T and p v of self-attention (S x S) and of cross-attention (S x text);
  lora      x A^T and (x A^T) B^T of every LoRA module (q/k/v/o of self-attention). A head-masked LoRA costs
            what a full one does: PEFT computes the whole low-rank product, the masked rows are zeros.
A training step freezes the base model, so a frozen linear costs 1x its forward in the backward (gradient of
its input only), none at all where its input needs no gradient (block 0's q/k/v, the text path, the
embedders); attention costs 2.5x (four gradient products and the recomputed q k^T of flash attention); a
trained LoRA costs 2x (input and weight gradients), a frozen one (stage 3's spatial LoRA) 1x. Gradient
checkpointing recomputes every block's forward once more. Stage 1 is a forward plus, per layer, the q/k the
capture hook recomputes and the sampled query rows against all keys.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .config import TransferConfig


@dataclass(frozen=True)
class WanConfig:
    """The sizes of a Wan transformer that set its cost (the `WanTransformer3DModel` arguments) and its VAE."""

    name: str
    layers: int
    heads: int
    head_dim: int
    ffn_dim: int
    text_dim: int = 4096
    in_channels: int = 16
    out_channels: int = 16
    patch: tuple[int, int, int] = (1, 2, 2)
    freq_dim: int = 256
    temporal_stride: int = 4  # VAE: pixel frames per latent frame (after the first)
    spatial_stride: int = 8  # VAE: pixels per latent cell

    @property
    def dim(self) -> int:
        return self.heads * self.head_dim

    def transformer_kwargs(self, rope_max_seq_len: int = 1024) -> dict:
        """Arguments that build this transformer with `WanTransformer3DModel(**kwargs)`."""
        return {
            "patch_size": self.patch, "num_attention_heads": self.heads, "attention_head_dim": self.head_dim,
            "in_channels": self.in_channels, "out_channels": self.out_channels, "text_dim": self.text_dim,
            "freq_dim": self.freq_dim, "ffn_dim": self.ffn_dim, "num_layers": self.layers, "cross_attn_norm": True,
            "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": rope_max_seq_len,
        }

    def token_grid(self, pixel_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(latent frames, token rows, token columns) of a video of that size."""
        pt, ph, pw = self.patch
        frames = (pixel_frames - 1) // self.temporal_stride + 1
        return frames // pt, height // self.spatial_stride // ph, width // self.spatial_stride // pw


# Published configs (the diffusers checkpoints' transformer/config.json and VAE strides).
MODELS: dict[str, WanConfig] = {
    "wan2.1-1.3b": WanConfig("Wan2.1-T2V-1.3B", layers=30, heads=12, head_dim=128, ffn_dim=8960),
    "wan2.1-14b": WanConfig("Wan2.1-T2V-14B", layers=40, heads=40, head_dim=128, ffn_dim=13824),
    "wan2.2-ti2v-5b": WanConfig("Wan2.2-TI2V-5B", layers=30, heads=24, head_dim=128, ffn_dim=14336, in_channels=48,
                                out_channels=48, spatial_stride=16),
}


@dataclass(frozen=True)
class Shapes:
    """What one transformer call sees: the token grid, batch, text length and the LoRAs on its self-attention."""

    frames: int  # latent frames given to the transformer (K when sparse)
    rows: int  # token rows per frame (after the patch)
    cols: int
    batch: int = 1
    text_length: int = 512
    rank: int = 0  # rank of the LoRA being trained (0: none)
    frozen_rank: int = 0  # rank of an active frozen LoRA (stage 3 runs with the spatial LoRA on)
    lora_out: bool = True  # LoRA on the output projection too (the method's default)
    per_token_timesteps: bool = False  # Wan2.2-TI2V's sampler embeds a timestep per token

    @property
    def tokens(self) -> int:
        return self.frames * self.rows * self.cols

    @property
    def lora_modules(self) -> int:
        return 4 if self.lora_out else 3


@dataclass(frozen=True)
class Flops:
    """FLOPs by kind (2 per multiply-add)."""

    linear: int = 0
    attention: int = 0
    lora: int = 0

    @property
    def total(self) -> int:
        return self.linear + self.attention + self.lora

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.linear + other.linear, self.attention + other.attention, self.lora + other.lora)

    def times(self, factor: int) -> Flops:
        return Flops(self.linear * factor, self.attention * factor, self.lora * factor)


def embedding_flops(cfg: WanConfig, s: Shapes) -> Flops:
    """Patch embedding, time embedder + projection (per sample, or per token), text embedder."""
    d, b = cfg.dim, s.batch
    patch = cfg.in_channels * math.prod(cfg.patch)
    time_rows = b * s.tokens if s.per_token_timesteps else b
    time = 2 * time_rows * (cfg.freq_dim * d + d * d + d * 6 * d)
    text = 2 * b * s.text_length * (cfg.text_dim * d + d * d)
    return Flops(linear=2 * b * s.tokens * patch * d + time + text)


def output_flops(cfg: WanConfig, s: Shapes) -> Flops:
    return Flops(linear=2 * s.batch * s.tokens * cfg.dim * cfg.out_channels * math.prod(cfg.patch))


def block_flops(cfg: WanConfig, s: Shapes) -> Flops:
    """Forward FLOPs of one transformer block."""
    d, n, t, b = cfg.dim, s.tokens, s.text_length, s.batch
    linear = b * (2 * n * d * d * 4  # self-attention q, k, v, o
                  + 2 * n * d * d * 2  # cross-attention q, o on the video tokens
                  + 2 * t * d * d * 2  # cross-attention k, v on the text tokens
                  + 2 * n * d * cfg.ffn_dim * 2)  # FFN up and down
    attention = b * (4 * n * n * d + 4 * n * t * d)  # (q k^T, p v) of self- and cross-attention
    lora = b * 4 * n * d * (s.rank + s.frozen_rank) * s.lora_modules
    return Flops(linear, attention, lora)


def forward_flops(cfg: WanConfig, s: Shapes) -> Flops:
    """FLOPs of one forward pass of the transformer."""
    return embedding_flops(cfg, s) + block_flops(cfg, s).times(cfg.layers) + output_flops(cfg, s)


def backward_block_flops(cfg: WanConfig, s: Shapes, input_grad: bool) -> Flops:
    """Backward FLOPs of one block with a frozen base; `input_grad`: the block's input needs a gradient."""
    d, n, b = cfg.dim, s.tokens, s.batch
    fwd = block_flops(cfg, s)
    qkv = 3 * 2 * n * d * d if input_grad else 0
    linear = b * (qkv + 2 * n * d * d + 2 * 2 * n * d * d + 2 * 2 * n * d * cfg.ffn_dim)  # self o, cross q/o, FFN
    rows = 3 if input_grad else 0  # q/k/v LoRA modules whose input needs a gradient
    trained = s.rank * (6 * 3 + 2 * rows + 8 * (s.lora_modules - 3))  # x 2nd: dB, d(xA), dA, (dx)
    frozen = s.frozen_rank * (4 * rows + 4 * (s.lora_modules - 3))  # d(xA), dx
    return Flops(linear, fwd.attention * 5 // 2, b * n * d * (trained + frozen))


def train_flops(cfg: WanConfig, s: Shapes, checkpointing: bool = False, input_grad: bool = False) -> Flops:
    """FLOPs of one training step (forward + backward, + recomputed blocks with gradient checkpointing).

    The base model is frozen; gradients flow from the first LoRA on: block 0's own input needs none unless
    `input_grad` (a backward that reaches the patch embedding's output, what a LoRA-free baseline measures).
    Without a trained LoRA and without `input_grad` there is nothing to differentiate: the step is a forward."""
    total = forward_flops(cfg, s)
    if s.rank == 0 and not input_grad:
        return total
    total += output_flops(cfg, s)
    for layer in range(cfg.layers):
        total += backward_block_flops(cfg, s, input_grad=input_grad or layer > 0)
    if checkpointing:
        total += block_flops(cfg, s).times(cfg.layers)
    return total


def classify_flops(cfg: WanConfig, s: Shapes, queries: int) -> Flops:
    """Stage 1: one forward pass, plus per layer the q/k projections the capture hook recomputes and the
    sampled query rows q k^T against all keys."""
    n, d = s.tokens, cfg.dim
    extra = Flops(linear=s.batch * 2 * 2 * n * d * d, attention=s.batch * 2 * min(queries, n) * n * d)
    return forward_flops(cfg, s) + extra.times(cfg.layers)


# hub ids of the published Wan checkpoints -> their transformer's config (the image-to-video ones and
# Wan2.2-A14B's experts are 14B transformers; one expert runs per step)
HUB_MODELS = {
    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers": "wan2.1-1.3b",
    "Wan-AI/Wan2.1-T2V-14B-Diffusers": "wan2.1-14b",
    "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers": "wan2.1-14b",
    "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers": "wan2.1-14b",
    "Wan-AI/Wan2.2-T2V-A14B-Diffusers": "wan2.1-14b",
    "Wan-AI/Wan2.2-I2V-A14B-Diffusers": "wan2.1-14b",
    "Wan-AI/Wan2.2-TI2V-5B-Diffusers": "wan2.2-ti2v-5b",
}


def wan_config(source: str) -> WanConfig | None:
    """The cost model's config of a Wan checkpoint: from its transformer/config.json (local or cached), else a
    published one by hub id; None when neither is known."""
    from .backbones import component_config

    t = component_config(source, "transformer/config.json")
    if t is None:
        return MODELS.get(HUB_MODELS.get(source, ""))
    if not {"num_layers", "num_attention_heads", "attention_head_dim", "ffn_dim"} <= t.keys():
        return None  # not a Wan transformer (a checkpoint run with --family wan may be laid out otherwise)
    vae = component_config(source, "vae/config.json") or {}
    return WanConfig(source, layers=t["num_layers"], heads=t["num_attention_heads"], head_dim=t["attention_head_dim"],
                     ffn_dim=t["ffn_dim"], text_dim=t.get("text_dim", 4096), in_channels=t.get("in_channels", 16),
                     out_channels=t.get("out_channels", 16), patch=tuple(t.get("patch_size", (1, 2, 2))),
                     freq_dim=t.get("freq_dim", 256), temporal_stride=vae.get("scale_factor_temporal", 4),
                     spatial_stride=vae.get("scale_factor_spatial", 8))


def transfer_flops(model: WanConfig, cfg: TransferConfig, text_length: int = 512) -> int:
    """FLOPs of a run's transformer work at its settings (the recipe's frames and size where the clip is not
    fitted yet): stage 1, every stage 2 and stage 3 step, and generation with classifier-free guidance. The
    encoders, the VAE and the optimizer are not counted."""
    frames, height, width = cfg.video.target()
    latent, rows, cols = model.token_grid(frames, height, width)
    clip = Shapes(latent, rows, cols, text_length=text_length)
    s, m, g = cfg.spatial, cfg.motion, cfg.generate
    keep = min(m.keep_frames or latent, latent)
    total = classify_flops(model, clip, cfg.heads.num_queries).total
    total += s.steps * s.batch_size * train_flops(model, Shapes(1, rows, cols, text_length=text_length, rank=s.rank),
                                                  s.grad_checkpointing).total
    motion = Shapes(keep, rows // m.downsample, cols // m.downsample, text_length=text_length, rank=m.rank,
                    frozen_rank=s.rank if s.steps else 0)
    total += m.steps * m.batch_size * train_flops(model, motion, m.grad_checkpointing).total
    total += g.steps * (2 if g.guidance > 1 else 1) * forward_flops(model, clip).total
    return total


def matmul_rate(dtype: str, seconds: float = 0.05, size: int = 512) -> float:
    """FLOP/s this CPU multiplies `size`-square matrices at in `dtype`, measured for about `seconds`."""
    a = torch.randn(size, size).to(getattr(torch, dtype))
    a @ a  # warm up
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        a @ a
        count += 1
    return 2 * size**3 * count / elapsed


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def cpu_note(source: str, family: str, cfg: TransferConfig) -> str:
    """What a real checkpoint on the CPU will cost, as one line: the cost model's FLOPs for the run at the rate
    this CPU multiplies matrices, for a Wan model; for other families, that no time can be predicted."""
    model = wan_config(source) if family == "wan" else None
    if model is None:
        return (f"{source} runs on the CPU: the cost model predicts Wan transformers only, so no time is given; "
                "a GPU (--device cuda) is what these models are made for")
    flops = transfer_flops(model, cfg)
    rate = matmul_rate(cfg.model.dtype)
    return (f"{source} runs on the CPU: the cost model predicts {flops / 1e12:.3g} TFLOP of transformer work for "
            f"this run, about {_duration(flops / rate)} at the {rate / 1e9:.3g} GFLOP/s this CPU multiplies "
            f"{cfg.model.dtype} matrices at (encoders and VAE not counted); --device cuda if there is a GPU")
