"""Peak memory and FLOPs of code run on fake tensors: what `fym plan` measures.

`MemoryTrace` is a TorchDispatchMode: every operation's output storage that none of its inputs owns is counted once
when it is made and uncounted when it is freed (a `weakref.finalize` on the storage), so `live` is the bytes the
traced code holds beyond what existed before, and `peak` its maximum. Under torch's `FakeTensorMode` nothing is
allocated or computed, yet every size is the real one. FLOPs come from torch's own formulas
(`torch.utils.flop_counter`), with the CPU flash-attention kernel (what SDPA runs here) counted as the CUDA ones.
"""

from __future__ import annotations

import time
import weakref

import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _shapes(*tensors: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in tensors]


def count_flops(func, args: tuple, kwargs: dict, out) -> int:
    """FLOPs of one aten call (0 for operations torch has no formula for: elementwise work is not counted)."""
    packet = func.overloadpacket
    if packet is aten._scaled_dot_product_flash_attention_for_cpu:
        return sdpa_flop_count(*_shapes(*args[:3]))
    if packet is aten._scaled_dot_product_flash_attention_for_cpu_backward:
        return sdpa_backward_flop_count(*_shapes(*args[:4]))
    formula = flop_registry.get(packet)
    return int(formula(*args, **kwargs, out_val=out)) if formula is not None else 0


def _storages(values) -> list[torch.UntypedStorage]:
    leaves, _ = tree_flatten(values)
    return [t.untyped_storage() for t in leaves if isinstance(t, torch.Tensor)]


class MemoryTrace(TorchDispatchMode):
    """Live bytes of the storages made while active, and per record (`begin(key)` starts one, ending the last) the
    bytes live when it began, its peak and its FLOPs (matrix products and attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.records: dict[object, dict[str, int]] = {}
        self._current: dict[str, int] = {"start": 0, "peak": 0, "flops": 0}
        self._counted: set[int] = set()

    def begin(self, key: object) -> dict[str, int]:
        """Start the record `key`: from now on its peak and FLOPs count."""
        now = time.perf_counter()
        self._current["seconds"] = now - self._current.pop("began", now)
        self._current = self.records[key] = {"start": self.live, "peak": self.live, "flops": 0, "began": now}
        return self._current

    def end(self) -> None:
        """End the current record (its `seconds`: how long tracing it took)."""
        self.begin(None)
        del self.records[None]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self._current["flops"] += count_flops(func, args, kwargs, out)
        owned = {id(s) for s in _storages((args, kwargs))}
        for storage in _storages(out):
            key = id(storage)
            if key in owned or key in self._counted:
                continue  # a view or an in-place result: its storage is its input's
            size = storage.nbytes()
            self._counted.add(key)
            self.live += size
            weakref.finalize(storage, self._freed, key, size)
        self._current["peak"] = max(self._current["peak"], self.live)
        return out

    def _freed(self, key: int, size: int) -> None:
        self._counted.discard(key)
        self.live -= size


class ZeroReads(TorchDispatchMode):
    """A fake tensor's value read on the host (`.item()`, `float(t)`) answered with 0 instead of refused: for code
    that reads values only to log them (a guidance's losses), where no value exists to log. Anything that
    branches on a value must not run under it: it would take one branch as if the value were 0."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is aten._local_scalar_dense.default and isinstance(args[0], FakeTensor):
            dtype = args[0].dtype
            return False if dtype == torch.bool else 0.0 if dtype.is_floating_point else 0
        return func(*args, **(kwargs or {}))
