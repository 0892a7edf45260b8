"""Predicted peak accelerator memory of the tuning stages on Wan2.1-1.3B and 14B at 81 frames of 480x832: what
each memory option buys, and what a smaller card needs. Predictions, not measurements: `real_scale` measures
the same stages on a GPU.

A stage's peak is its resident bytes plus its activations: the transformer's weights (bf16, the modules diffusers
keeps in float32 at 4 bytes), the LoRAs (float32; the trained one with its gradient and AdamW's two moments: 16
bytes a parameter, 10 with 8-bit moments; stage 3's frozen spatial LoRA 4), the encoders unless they are parked
(UMT5-XXL in bf16, the Wan2.1 VAE in float32; their parameter counts from their published configs, instantiated
on the meta device), and the cost model's activation memory (`cost_model.activation_bytes`, bf16 autocast).
Block offload (not implemented) is counted as keeping only the non-block weights and two blocks on the device.
Not counted: the allocator's fragmentation, kernels' workspaces, the step's transient copies.

    python -m benchmarks.memory_plan     # writes benchmarks/results/memory_plan.{json,md}
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from . import cost_model as cm

# google/umt5-xxl's encoder, as Wan2.1/2.2 ship it (models_t5_umt5-xxl-enc-bf16; the diffusers checkpoints'
# text_encoder/config.json)
UMT5_XXL = {"vocab_size": 256384, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
            "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128, "tie_word_embeddings": False}
GB = 1e9
OPTIONS = {  # name: (gradient checkpointing, encoders parked, 8-bit AdamW moments, block offload)
    "bf16 base, checkpointing, encoders kept (before parking)": (True, False, False, False),
    "bf16 base, checkpointing, encoders parked (the default)": (True, True, False, False),
    "without checkpointing, encoders parked": (False, True, False, False),
    "+ 8-bit AdamW moments (not implemented)": (True, True, True, False),
    "+ block offload (not implemented)": (True, True, False, True),
}


def umt5_xxl(device: str | torch.device = "meta", dtype: torch.dtype = torch.bfloat16):
    """UMT5-XXL's encoder with random (meta: no) weights."""
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device(device):
        return UMT5EncoderModel._from_config(UMT5Config(**UMT5_XXL), dtype=dtype)


def encoder_bytes() -> dict[str, int]:
    """Parameter bytes of what parking moves off the device: UMT5-XXL in bf16, the Wan2.1 VAE in float32."""
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        vae = AutoencoderKLWan()
    text = umt5_xxl()
    return {"text_encoder": sum(p.numel() * 2 for p in text.parameters()),
            "vae": sum(p.numel() * 4 for p in vae.parameters())}


def transformer_bytes(cfg: cm.WanConfig) -> tuple[int, int]:
    """(all weights, the non-block weights plus two blocks) in bf16, diffusers' float32 modules at 4 bytes."""
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(**cfg.transformer_kwargs())
    keep = model._keep_in_fp32_modules or []
    sizes = {n: p.numel() * (4 if any(k in n for k in keep) else 2) for n, p in model.named_parameters()}
    block = sum(b for n, b in sizes.items() if n.startswith("blocks.0."))
    outside = sum(b for n, b in sizes.items() if not n.startswith("blocks."))
    return sum(sizes.values()), outside + 2 * block


def plan(key: str, encoders: dict[str, int]) -> list[dict]:
    """Every stage x option of one model at its recipe size: the parts of the predicted peak, in bytes."""
    cfg, recipe = cm.MODELS[key], cm.RECIPES[key]
    weights, offloaded = transformer_bytes(cfg)
    lora = cm.lora_parameter_count(cfg, recipe.rank)
    frames, rows, cols = cfg.token_grid(recipe.frames, recipe.height, recipe.width)
    base = cm.Shapes(frames, rows, cols, text_length=recipe.text_length, rank=recipe.rank)
    stages = {"stage 2 (1 frame)": (replace(base, frames=1), False),
              f"stage 3 sparse ({recipe.keep} of {frames})": (replace(base, frames=recipe.keep,
                                                                      frozen_rank=recipe.rank), True),
              f"stage 3 dense ({frames} frames)": (replace(base, frozen_rank=recipe.rank), True)}
    rows_out = []
    for stage, (shapes, frozen_lora) in stages.items():
        for option, (checkpointing, parked, adam8, block_offload) in OPTIONS.items():
            parts = {"transformer": offloaded if block_offload else weights,
                     "loras": lora * ((10 if adam8 else 16) + (4 if frozen_lora else 0)),
                     "encoders": 0 if parked else sum(encoders.values()),
                     "activations": cm.activation_bytes(cfg, shapes, checkpointing)}
            rows_out.append({"model": cfg.name, "stage": stage, "option": option, "parts": parts,
                             "total": sum(parts.values())})
    return rows_out


def markdown(data: dict) -> str:
    from .common import markdown_table

    enc = data["encoder_bytes"]
    head = (f"Parking frees {sum(enc.values()) / GB:.2f} GB: UMT5-XXL {enc['text_encoder'] / GB:.2f} GB (bf16) + "
            f"Wan2.1 VAE {enc['vae'] / GB:.2f} GB (float32). Predictions (GB = 1e9 bytes), pending `real_scale` "
            "on a GPU.\n\n")
    rows = [[r["model"], r["stage"], r["option"], *(f"{r['parts'][k] / GB:.1f}" for k in
                                                     ("transformer", "loras", "encoders", "activations")),
             f"**{r['total'] / GB:.1f}**", " / ".join("yes" if r["total"] <= card * GB else "no" for card in
                                                      data["cards_gb"])]
            for r in data["rows"]]
    cards = " / ".join(f"{c} GB" for c in data["cards_gb"])
    return head + markdown_table(["model", "stage", "option", "transformer", "LoRAs + AdamW", "encoders",
                                  "activations", "predicted peak GB", f"fits {cards}"], rows) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from .common import write_result

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="wan2.1-1.3b,wan2.1-14b")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/memory_plan"))
    args = parser.parse_args(argv)
    encoders = encoder_bytes()
    data = {"encoder_bytes": encoders, "cards_gb": [24, 48, 80],
            "rows": [row for key in args.models.split(",") for row in plan(key, encoders)]}
    write_result(args.out, data, markdown(data), "memory_plan", argv)
    return data


if __name__ == "__main__":
    main()
