"""`model.blocks_to_swap` (backbones/block_swap.py): the swapped blocks' weights are on the compute device exactly
while the block runs (forward, and its recomputation in backward under gradient checkpointing) and on their host
masters otherwise, and a whole `fym transfer` (stages 2 and 3, generation) computes bit for bit what it computes
without swapping.

On the CPU both places are the CPU, so where a weight is is told by its storage: a swapped block's weight is its
master (`data_ptr` of the host copy) outside its forward, and a fresh copy (another storage) inside it. A hook that
forgot to bring a block's weights, or to put them back, or kept them after backward, fails these tests; what a GPU
adds (pinned memory, the copy stream, weights crossing PCIe) is not exercised here."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from diffusers.models.transformers.transformer_wan import WanTransformerBlock
from safetensors.torch import load_file
from test_cli import moving_square, ok
from torch import nn
from torch.utils.checkpoint import checkpoint

from follow_your_motion.backbones import load_backbone
from follow_your_motion.backbones.block_swap import BlockSwap, in_backward
from follow_your_motion.config import TransferConfig
from follow_your_motion.errors import InputError
from follow_your_motion.video import read_video, write_video


def placement(swaps: list[BlockSwap]) -> dict[int, bool]:
    """id(block) -> whether every weight of that swapped block is its host master now."""
    return {id(swap.blocks[i]): all(s.get().data_ptr() == s.master.data_ptr() for s in slots)
            for swap in swaps for i, slots in swap.slots.items()}


def watch_swaps(monkeypatch: pytest.MonkeyPatch, block_class: type[nn.Module]) -> tuple[list[BlockSwap], Counter]:
    """Record every `BlockSwap` made, and assert inside each run of a `block_class` block that its weights are device
    copies (swapped blocks) and that no other swapped block is still attached; counts the runs in forward and in
    backward (recomputation)."""
    swaps: list[BlockSwap] = []
    runs: Counter[str] = Counter()
    init, forward = BlockSwap.__init__, block_class.forward

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        swaps.append(self)

    def checking_forward(block, *args, **kwargs):
        on_master = placement(swaps)
        if id(block) in on_master:
            assert not on_master.pop(id(block)), "a swapped block runs on its host masters"
            runs["backward" if in_backward() else "forward"] += 1
        assert all(on_master.values()), "another swapped block is still on the device"
        return forward(block, *args, **kwargs)

    monkeypatch.setattr(BlockSwap, "__init__", recording_init)
    monkeypatch.setattr(block_class, "forward", checking_forward)
    return swaps, runs


def transfer(root: Path, pipe: Path, name: str, swap: int) -> Path:
    config = root / f"{name}.yaml"
    checkpointed = tiny_config(2).replace("{steps: 2,", "{steps: 2, grad_checkpointing: true,")
    assert checkpointed.count("grad_checkpointing") == 2
    config.write_text(checkpointed + f"model: {{blocks_to_swap: {swap}}}\n")
    ok("transfer", root / "ref.mp4", "-p", "a robot walks", "--out", root / name, "--model", pipe, "--config", config)
    return root / name


def test_swapped_blocks_tune_and_generate_as_without(tiny_wan_dir, tmp_path, monkeypatch: pytest.MonkeyPatch):
    write_video(tmp_path / "ref.mp4", moving_square(9), 8)
    swaps, runs = watch_swaps(monkeypatch, WanTransformerBlock)
    swapped = transfer(tmp_path, tiny_wan_dir, "swapped", swap=1)
    assert len(swaps) == 1 and list(swaps[0].slots) == [1]  # the last of the tiny transformer's 2 blocks
    # stage 1, 2 x 2 training steps, 2 x 2 generation steps (with guidance: 2 calls each) ran the swapped block,
    # and every training step ran it again in backward (gradient checkpointing's recomputation)
    assert runs["forward"] > 2 * 2 + 2 * 2 and runs["backward"] >= 2 * 2
    assert all(placement(swaps).values())  # back on the host once the run is done
    assert not swaps[0].staged and not swaps[0].attached
    plain = transfer(tmp_path, tiny_wan_dir, "plain", swap=0)
    assert len(swaps) == 1

    for adapter in ("spatial", "motion"):
        a, b = (load_file(run / f"{adapter}_lora.safetensors") for run in (swapped, plain))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), adapter
    videos = [read_video(run / "samples" / "result.mp4").frames for run in (swapped, plain)]
    assert np.array_equal(*videos)
    transfer(tmp_path, tiny_wan_dir, "swapped", swap=0)  # where blocks wait is no tuned setting: the run reopens


class Residual(nn.Module):
    """x + tanh(linear(x)) * scale, `scale` a trainable weight added later (an adapter's part), or 1."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.scale: nn.Parameter | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.linear(x))
        return x + (y if self.scale is None else y * self.scale)


class Chain(nn.Module):
    """Frozen blocks run one after the other, each checkpointed as diffusers' transformers run them while training;
    `trained` blocks get a trainable `scale` once swapping is set up, as adapters join after loading."""

    def __init__(self, blocks: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(Residual() for _ in range(blocks))
        self.blocks.requires_grad_(False)

    def train_blocks(self, trained: list[int]) -> list[nn.Parameter]:
        for i in trained:
            self.blocks[i].scale = nn.Parameter(torch.linspace(0.5, 1.5, 4))
        return [self.blocks[i].scale for i in trained]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False)
        return x


def test_blocks_are_staged_ahead_in_the_direction_of_the_pass(monkeypatch: pytest.MonkeyPatch):
    events: list[tuple[str, int]] = []
    for name in ("stage", "attach", "detach"):
        original = getattr(BlockSwap, name)

        def recording(self, i, *args, _name=name, _original=original, **kwargs):
            if i is not None and not (_name == "stage" and (i in self.staged or i in self.attached)):
                events.append((_name, i))
            return _original(self, i, *args, **kwargs)

        monkeypatch.setattr(BlockSwap, name, recording)
    x = torch.randn(3, 4)
    reference = Chain(4)
    reference_scales = reference.train_blocks([2, 3])
    expected = reference(x)
    expected.sum().backward()
    chain = Chain(4)
    swap = BlockSwap(chain.blocks, 2, torch.device("cpu"))
    trained = chain.train_blocks([2, 3])  # backward runs blocks 3 and 2 only: nothing runs after 2 to release it

    out = chain(x)
    assert events == [("stage", 2), ("attach", 2), ("stage", 3), ("detach", 2), ("attach", 3), ("detach", 3)]
    assert all(placement([swap]).values())
    events.clear()
    out.sum().backward()
    # backward recomputes 3 (copied as it is attached: nothing staged it), then 2, staged while 3 runs; what is left
    # on the device is released at its end
    assert [e for e in events if e[0] != "detach"] == [("attach", 3), ("stage", 3), ("stage", 2), ("attach", 2)]
    assert all(placement([swap]).values()) and not swap.attached and not swap.staged
    assert torch.equal(out, expected)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(trained, reference_scales, strict=True))


def test_refusals(tiny_wan_dir):
    with pytest.raises(InputError, match="this transformer has 2 blocks; swap from 1 to 1"):
        load_backbone(str(tiny_wan_dir), blocks_to_swap=2)
    with pytest.raises(InputError, match="the toy model has no blocks to swap"):
        load_backbone(None, blocks_to_swap=1)
    for model, words in (({"offload": True}, "choose one"), ({"compile": True}, "leave one of them off")):
        with pytest.raises(ValueError, match=words):
            TransferConfig.model_validate({"model": {"blocks_to_swap": 1, **model}})
    with pytest.raises(InputError, match="set motion.grad_checkpointing: true$"):
        TransferConfig.model_validate({"model": {"blocks_to_swap": 1}, "spatial": {"grad_checkpointing": True}}
                                      ).check_block_swap()
    TransferConfig.model_validate({"model": {"blocks_to_swap": 1}, "spatial": {"steps": 0}, "motion": {"steps": 0}}
                                  ).check_block_swap()


FAMILIES = {
    "wan": ("tiny_wan", "build_tiny_wan_pipeline", {}),
    "wan2.2-a14b": ("tiny_wan", "build_tiny_wan_pipeline", {"boundary_ratio": 0.5}),  # two experts, both swapped
    "ltx": ("tiny_ltx", "build_tiny_ltx_pipeline", {}),
    "cogvideox": ("tiny_cogvideox", "build_tiny_cogvideox_pipeline", {}),
    "hunyuan_video15": ("tiny_hunyuan_video15", "build_tiny_hunyuan_video15_pipeline", {}),
    "kandinsky5": ("tiny_kandinsky5", "build_tiny_kandinsky5_pipeline", {}),
    "skyreels_v2": ("tiny_skyreels_v2", "build_tiny_skyreels_v2_pipeline", {}),
    "ltx2": ("tiny_ltx2", "build_tiny_ltx2_pipeline", {}),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_samples_with_swapped_blocks_as_without(family, tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Each family's blocks (`blocks_attribute`) are found and swapped through the shared base, and two sampling steps
    of its own pipeline gives the unswapped frames bit for bit, the swapped block run on its device copies."""
    import importlib

    module, builder, options = FAMILIES[family]
    pipe = str(getattr(importlib.import_module(module), builder)(tmp_path / "pipe", **options))
    frames = []
    for swap in (0, 1):
        backbone = load_backbone(pipe, blocks_to_swap=swap)
        blocks = backbone.expert_blocks(backbone.experts[0])
        assert isinstance(blocks, nn.ModuleList) and len(blocks) >= 2
        swaps, runs = watch_swaps(monkeypatch, type(blocks[-1]))
        if swap:
            expert_blocks = [list(backbone.expert_blocks(e)) for e in backbone.experts]
            assert [s.blocks for s in backbone.block_swaps] == expert_blocks
            assert all(list(s.slots) == [len(blocks) - 1] for s in backbone.block_swaps)
            swaps.extend(backbone.block_swaps)
        g = backbone.geometry
        frames.append(backbone.generate("a robot walks", negative_prompt="", num_frames=9,
                                        height=2 * g.size_multiple, width=2 * g.size_multiple, steps=2,
                                        guidance=1.0, seed=0, adapter_scales={}))
        assert runs["forward"] >= swap * len(backbone.experts) and (runs["forward"] > 0) == bool(swap)
        assert all(placement(swaps).values())
        monkeypatch.undo()
    assert np.array_equal(*frames)
