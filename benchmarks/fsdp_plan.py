"""Per-process memory of Wan2.1-T2V-14B's stage 3 under `distributed: fsdp` on 1, 2 and 4 processes: its weights
cut by the project's own sharding code, the rest predicted as `memory_plan` predicts it.

The transformer is built from its published config on the meta device (no weights: bf16, diffusers' float32
modules at 4 bytes) and sharded by `backbones.speed.shard_frozen_base`, the function `fym` runs, over a fake
process group of N ranks (torch's `fake` backend: no other process, no communication), so the shard each
process would hold is the real one (FSDP2 cuts every weight's first axis into N, padded). To it are added: FSDP2's
unsharded blocks during a step (the block running and the one prefetched: 2 whole blocks), the replicated LoRAs
(the trained one with its gradient and AdamW's two moments, 16 bytes a parameter, and the frozen spatial LoRA, 4),
and the cost model's activations of one process's micro-batch (`cost_model.activation_bytes`, bf16 autocast,
gradient checkpointing), which sharding does not divide. The encoders are parked (0). A prediction, not a
measurement: not counted are the allocator's fragmentation, kernels' workspaces, the gradient all-reduce's
buffers and the step's transient copies; and every process still reads the whole checkpoint into CPU memory.

    python -m benchmarks.fsdp_plan     # writes benchmarks/results/fsdp_plan.{json,md}
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from follow_your_motion.backbones.speed import shard_frozen_base

from . import cost_model as cm

GB = 1e9
UNSHARDED_BLOCKS = 2  # FSDP2: the block that runs and the next one, prefetched


def wan_transformer(cfg: cm.WanConfig) -> torch.nn.Module:
    """The transformer of `cfg` on the meta device, in bf16 but for the modules diffusers keeps in float32."""
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(**cfg.transformer_kwargs())
    keep = model._keep_in_fp32_modules or []
    for name, param in model.named_parameters():
        if not any(k in name for k in keep):
            param.data = param.data.to(torch.bfloat16)
    return model


def held_bytes(cfg: cm.WanConfig, processes: int) -> dict[str, int]:
    """One process's share of the transformer's weights under `shard_frozen_base` with `processes` ranks, the
    whole weights, and one whole block's."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.testing._internal.distributed.fake_pg import FakeStore

    model = wan_transformer(cfg)
    block = sum(p.numel() * p.element_size() for p in model.blocks[0].parameters())
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if processes == 1:
        return {"shard": total, "total": total, "block": block}
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=processes)
    try:
        shard_frozen_base(model, init_device_mesh("cpu", (processes,)), set())
        shard = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
    finally:
        dist.destroy_process_group()
    return {"shard": shard, "total": total, "block": block}


def plan(key: str, processes: list[int]) -> list[dict]:
    """Stage 3 (sparse, the recipe's K of F latent frames, rank 128) per process, for each process count."""
    cfg, recipe = cm.MODELS[key], cm.RECIPES[key]
    frames, rows, cols = cfg.token_grid(recipe.frames, recipe.height, recipe.width)
    shapes = replace(cm.Shapes(frames, rows, cols, text_length=recipe.text_length, rank=recipe.rank),
                     frames=recipe.keep, frozen_rank=recipe.rank)
    lora = cm.lora_parameter_count(cfg, recipe.rank)
    out = []
    for n in processes:
        held = held_bytes(cfg, n)
        parts = {"weights (shard)": held["shard"],
                 "unsharded blocks": 0 if n == 1 else UNSHARDED_BLOCKS * held["block"],
                 "LoRAs + grad + AdamW": lora * (16 + 4),
                 "activations": cm.activation_bytes(cfg, shapes, checkpointing=True)}
        out.append({"model": cfg.name, "stage": f"stage 3 sparse ({recipe.keep} of {frames})", "processes": n,
                    "held": held, "parts": parts, "total": sum(parts.values())})
    return out


def markdown(data: dict) -> str:
    from .common import markdown_table

    keys = ["weights (shard)", "unsharded blocks", "LoRAs + grad + AdamW", "activations"]
    cards = data["cards_gb"]
    rows = [[r["model"], r["stage"], r["processes"], *(f"{r['parts'][k] / GB:.2f}" for k in keys),
             f"**{r['total'] / GB:.1f}**", " / ".join("yes" if r["total"] <= c * GB else "no" for c in cards)]
            for r in data["rows"]]
    return markdown_table(["model", "stage", "processes", *keys, "predicted peak GB per process",
                           f"fits {' / '.join(f'{c} GB' for c in cards)}"], rows) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from .common import write_result

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wan2.1-14b")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fsdp_plan"))
    args = parser.parse_args(argv)
    data = {"cards_gb": [24, 32, 48, 80],
            "rows": plan(args.model, [int(n) for n in args.processes.split(",")])}
    write_result(args.out, data, markdown(data), "fsdp_plan", argv)
    return data


if __name__ == "__main__":
    main()
