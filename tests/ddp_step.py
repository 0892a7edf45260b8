"""A short motion-LoRA training on the tiny Wan, run by tests/test_distributed.py.

    python ddp_step.py PIPE_DIR OUT_DIR
    python -m torch.distributed.run --standalone --nproc_per_node 2 ddp_step.py PIPE_DIR OUT_DIR [ddp|fsdp] [early-stop]

Every process builds the same backbone (bfloat16, as the Wan recipe loads it) and seeded masked float32
LoRA, trains it with `train_adapter` (which wraps the transformer in DDP when there are several processes)
with the recipe's bf16 autocast and gradient checkpointing, in the shared run directory OUT_DIR/run, and
writes its adapter state before and after training to OUT_DIR/{initial,final}-w<world>-r<rank>.safetensors
and how many of the base transformer's weights it holds to OUT_DIR/base-w<world>-r<rank>.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState
from safetensors.torch import save_file

from follow_your_motion.backbones.wan import WanBackbone
from follow_your_motion.config import EarlyStopSettings, MotionSettings
from follow_your_motion.method.lora import adapter_state, add_masked_lora
from follow_your_motion.method.train import motion_inputs, train_adapter
from follow_your_motion.runs import RunDir

SELECTION = {0: [0, 1], 1: [2]}
STEPS = 3


def main(pipe_dir: Path, out: Path, distributed: str = "ddp", early_stop: str = "") -> None:
    state = PartialState(cpu=True)
    world, rank = state.num_processes, state.process_index
    torch.manual_seed(1234)  # the same everywhere; train_adapter must not rely on it
    wan = WanBackbone.load(str(pipe_dir), dtype=torch.bfloat16)
    add_masked_lora(wan.experts[0], "motion", SELECTION, rank=4, alpha=4, seed=3)
    # cloned: on CPU adapter_state's tensors share storage with the live parameters
    initial = {key: value.clone() for key, value in adapter_state(wan.experts[0].module, "motion").items()}
    video = torch.rand(3, 9, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents, text = wan.encode_video(video), wan.encode_prompt("a tiger walks through snow")
    settings = MotionSettings(
        steps=STEPS, keep_frames=2, lr=1e-2, checkpoint_every=STEPS, seed=11, grad_checkpointing=True,
        mixed_precision="bf16", distributed=distributed,
        # "early-stop": a plateau after step 1 (no window can improve by 99%): every rank must stop at step 2
        early_stop=EarlyStopSettings(window=1, patience=1, min_improvement=0.99) if early_stop else None,
    )
    final = train_adapter(
        wan, wan.experts[0], RunDir(out / "run"), "motion", "motion", settings, motion_inputs(latents, text, settings),
        motion_weight=1.0,
    )
    base = [p for name, p in wan.experts[0].module.named_parameters() if ".lora_" not in name]
    held = {"total": sum(p.numel() for p in base),  # DTensors: the global size; their local shard: what is held
            "held": sum(getattr(p, "_local_tensor", p).numel() for p in base)}
    (out / f"base-w{world}-r{rank}.json").write_text(json.dumps(held))
    save_file(initial, str(out / f"initial-w{world}-r{rank}.safetensors"))
    save_file(final, str(out / f"final-w{world}-r{rank}.safetensors"))
    state.wait_for_everyone()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:])
