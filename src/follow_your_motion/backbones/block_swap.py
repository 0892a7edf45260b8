"""Block swapping (`model.blocks_to_swap: N`): the last N blocks of every transformer keep their frozen weights in
host memory and visit the device only while they run, so a transformer larger than the card tunes and samples on it.
Kin of musubi-tuner's `--blocks_to_swap`; written for this project's hooks, LoRA and plan.

How a block's weights get to the device. A forward pre-hook on each swapped block points every frozen parameter and
buffer it had when swapping was set up (`.data`) at a device copy of its host master; a forward hook points them back
at the masters, which drops the block's reference to the copy. Frozen weights never change, so nothing is copied
back. Gradient checkpointing (the recipes' `grad_checkpointing`, diffusers' `enable_gradient_checkpointing`, which
runs each block through `torch.utils.checkpoint` non-reentrant, by calling the module) calls the block again in
backward to recompute its activations: the same pre-hook brings its weights back, and the copy lives on in the
recomputed graph's saved tensors exactly until the block's backward is done. Non-reentrant checkpointing may stop
that recomputation early, before the forward hook runs (so may a pass that ends early, as stage 1's capture): so
every block's pre-hook first releases any other block still attached, and a callback at the end of each backward
pass releases the last one. Without gradient checkpointing the graph saves every block's device weights for backward,
so nothing is saved: tuning with block swapping needs it (`TransferConfig.check_block_swap` refuses otherwise, for
`fym transfer` and `fym plan`).

Memory. One block is prefetched ahead in the direction of the pass (towards the last block in a forward pass, the
first in backward): on CUDA from pinned host memory on a copy stream, non-blocking, which the compute stream waits
for (an event) before the block runs, and the copies are marked as used by the compute stream (`record_stream`) so
the allocator reuses their memory only once the block's kernels are done. So at most two swapped blocks are on the
device at a time, which is what `fym plan` counts. Swapping the last blocks (not the first) lets a forward pass
prefetch the first swapped block while the resident ones run.

LoRA. Adapter weights are small and trainable: they are not swapped, they stay on the device with their optimizer
state and gradients. `add_masked_lora` puts a new adapter on the transformer's device (PEFT would put it beside its
base weight, in host memory); an adapter loaded from a file lands there too, and the pre-hook moves it, once, for
good. Only the tensors recorded at setup are swapped, so the adapters never move back.

What it does not combine with: `model.offload` (diffusers moves whole components; both at once would fight over the
transformer), `model.compile` (a compiled block would trace the hooks, whose moves change its weights' devices),
several processes (DDP checks and broadcasts module states, FSDP owns the parameters' storage), DiTFlow guidance
(its guided step backpropagates through blocks without checkpointing, so a swapped block's backward would read the
host masters its weights point at again): each refused with the other setting named (`ModelSettings`; `Transfer`
for processes; `run_settings.check_guided_sampling` for DiTFlow). `keep_encoders` is independent: it concerns the
encoders, not the transformer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..errors import InputError
from .speed import same_device


class Slot:
    """One swapped tensor of a block: a parameter (its `.data` is pointed at a device copy or the master) or a
    buffer (`owner._buffers[name]` replaced)."""

    def __init__(self, owner: nn.Module, name: str, pin: bool) -> None:
        self.param = owner._parameters.get(name)
        self.owner, self.name = owner, name
        master = self.get().detach().to("cpu")
        self.master = master.pin_memory() if pin else master

    def get(self) -> torch.Tensor:
        return self.param.data if self.param is not None else self.owner._buffers[self.name]

    def set(self, tensor: torch.Tensor) -> None:
        if self.param is not None:
            self.param.data = tensor
        else:
            self.owner._buffers[self.name] = tensor


def block_slots(block: nn.Module, pin: bool) -> list[Slot]:
    """Every parameter and buffer of `block` (none is an adapter's yet: swapping is set up at load time)."""
    return [Slot(owner, name, pin) for owner in block.modules()
            for name, tensor in (*owner._parameters.items(), *owner._buffers.items()) if tensor is not None]


def check_count(count: int, blocks: int) -> None:
    """Refuse a `model.blocks_to_swap` the transformer cannot take: at least one block stays on the device."""
    if not 0 < count < blocks:
        raise InputError(f"model.blocks_to_swap {count}: this transformer has {blocks} blocks; swap from 1 to "
                         f"{blocks - 1} (at least one stays on the device), or 0 for none")


def offloaded_bytes(expert_blocks: list[nn.ModuleList], count: int) -> int:
    """Frozen parameter bytes that swapping the last `count` blocks of each expert keeps off the device (`fym plan`):
    all of them, less the two blocks at a time (the running one, the one staged ahead) of the expert that runs.
    Adapter weights stay on the device and are not counted."""
    def frozen(block: nn.Module) -> int:
        return sum(p.numel() * p.element_size() for name, p in block.named_parameters() if ".lora_" not in name)

    swapped = []
    for blocks in expert_blocks:
        check_count(count, len(blocks))
        swapped.append([frozen(block) for block in list(blocks)[len(blocks) - count:]])
    return sum(map(sum, swapped)) - max(sum(sorted(sizes)[-2:]) for sizes in swapped)


def in_backward() -> bool:
    """Whether autograd is running a backward pass now (a checkpointed block being recomputed): torch's graph-task
    id, -1 outside backward (a private function; tests/test_block_swap.py would catch a change of it)."""
    return torch._C._current_graph_task_id() != -1


class BlockSwap:
    """The last `count` of `blocks` swapped to host memory for one transformer whose compute device is `device`."""

    def __init__(self, blocks: nn.ModuleList, count: int, device: torch.device) -> None:
        check_count(count, len(blocks))
        self.blocks, self.device = list(blocks), device
        cuda = device.type == "cuda"
        self.slots = {i: block_slots(self.blocks[i], pin=cuda) for i in range(len(blocks) - count, len(blocks))}
        self.stream = torch.cuda.Stream(device) if cuda else None
        self.staged: dict[int, tuple[list[torch.Tensor], torch.cuda.Event | None]] = {}
        self.attached: set[int] = set()
        self.release_queued = False
        for slot in self.all_slots():
            slot.set(slot.master)
        for i, block in enumerate(self.blocks):
            block.register_forward_pre_hook(self.pre_hook(i))
            block.register_forward_hook(self.post_hook(i))

    def all_slots(self) -> Iterator[Slot]:
        for slots in self.slots.values():
            yield from slots

    @contextlib.contextmanager
    def emptied(self) -> Iterator[None]:
        """The swapped tensors replaced by empty ones for a block, so that `module.to(device)` moves the rest only."""
        for slot in self.all_slots():
            slot.set(torch.empty(0, dtype=slot.master.dtype))
        try:
            yield
        finally:
            for slot in self.all_slots():
                slot.set(slot.master)

    def pre_hook(self, i: int):
        def hook(block: nn.Module, args: tuple) -> None:
            backward = in_backward()
            for j in self.attached - {i}:  # a pass that stopped early (stage 1's capture, recomputation) left it
                self.detach(j)
            if i in self.slots:
                self.attach(i, block, backward)
            ahead = range(i - 1, -1, -1) if backward else range(i + 1, len(self.blocks))
            self.stage(next((j for j in ahead if j in self.slots), None))

        return hook

    def post_hook(self, i: int):
        def hook(block: nn.Module, args: tuple, output) -> None:
            if i in self.slots:
                self.detach(i)

        return hook

    def stage(self, i: int | None) -> None:
        """Start copying block `i`'s masters to the device (nothing for None or a block already staged or on)."""
        if i is None or i in self.staged or i in self.attached:
            return
        stream = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with stream:
            copies = [s.master.to(self.device, non_blocking=True, copy=True) for s in self.slots[i]]
            event = self.stream.record_event() if self.stream is not None else None
        self.staged[i] = (copies, event)

    def attach(self, i: int, block: nn.Module, backward: bool) -> None:
        """Block `i`'s weights on the device (waiting for their copy); adapter weights found elsewhere moved onto the
        device for good. In backward, everything is released when the pass ends."""
        if i not in self.attached:
            self.stage(i)
            copies, event = self.staged.pop(i)
            if event is not None:
                compute = torch.cuda.current_stream(self.device)
                compute.wait_event(event)
                for copy in copies:
                    copy.record_stream(compute)
            for slot, copy in zip(self.slots[i], copies, strict=True):
                slot.set(copy)
            self.attached.add(i)
            swapped = {id(s.param) for s in self.slots[i]}
            for param in block.parameters():
                if id(param) not in swapped and not same_device(param.device, self.device):
                    param.data = param.data.to(self.device)
        if backward and not self.release_queued:
            self.release_queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self.release)

    def detach(self, i: int) -> None:
        for slot in self.slots[i]:
            slot.set(slot.master)
        self.attached.discard(i)

    def release(self) -> None:
        """Every block back to host memory and nothing staged: the end of a backward pass."""
        for i in list(self.attached):
            self.detach(i)
        self.staged.clear()
        self.release_queued = False
