"""The work items of a suite and how the processes of a launch share them.

Under torchrun / accelerate launch with N processes, the (case, method) run directories are dealt out by
process index, method by method (see ``shard``; a method that reuses another's tuning goes with it), so each
work item runs exactly once and no run directory is shared. Each process then runs its Transfers as a single
process: ``Transfer`` trains with DDP whenever accelerate sees several processes, which would deadlock when
processes work on different items, so the launcher's RANK/WORLD_SIZE/LOCAL_RANK variables are hidden from
accelerate while items run (``device="cuda"`` becomes ``cuda:<local rank>``). At the end a gloo
barrier waits for every process, after which the main process merges the results.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from .manifest import Manifest
from .methods import Method

DIST_ENV = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
    "ROLE_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE",
)


@dataclass(frozen=True)
class WorkItem:
    case: str
    method: str
    prompt_index: int
    prompt: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.case}__{self.method}__p{self.prompt_index}__s{self.seed}"

    @property
    def sample(self) -> str:
        """The sample name in the run directory (samples/<sample>.mp4)."""
        return f"p{self.prompt_index}_s{self.seed}"


def work_items(manifest: Manifest, methods: Sequence[Method], seeds: Sequence[int]) -> list[WorkItem]:
    """Every item of the suite, grouped by (case, method) in manifest and method order."""
    return [
        WorkItem(case.id, method.name, k, prompt, seed)
        for case in manifest.cases
        for method in methods
        for k, prompt in enumerate(case.targets)
        for seed in seeds
    ]


def shard(items: Sequence[WorkItem], rank: int, world: int, tuning_from: Mapping[str, str] | None = None
          ) -> list[WorkItem]:
    """This process's items: whole (case, method) units (a run directory is never shared), dealt out round
    robin method by method, so each process gets its share of every method's (differently costly) units. A
    method that reuses another's tuning (`tuning_from`: method -> that method, ``reuse.tuning_sources``) goes
    with that method's unit of the same case, after it (items keep their order)."""
    tuning_from = tuning_from or {}

    def unit(item: WorkItem) -> tuple[str, str]:
        return item.case, tuning_from.get(item.method, item.method)

    methods = list(dict.fromkeys(i.method for i in items))
    units = sorted(dict.fromkeys(unit(i) for i in items), key=lambda u: methods.index(u[1]))
    mine = {u for n, u in enumerate(units) if n % world == rank}
    return [i for i in items if unit(i) in mine]


@dataclass(frozen=True)
class Processes:
    """This process's place in the launch (a single process: rank 0 of 1)."""

    rank: int
    world: int
    local_rank: int

    @classmethod
    def from_env(cls) -> Processes:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        return cls(rank, world, int(os.environ.get("LOCAL_RANK", str(rank))))

    def device(self, device: str) -> str:
        """The device this process runs on (``auto`` picked by ``devices.pick_device``): ``cuda`` becomes (and is
        set to) ``cuda:<local rank>``."""
        from ..devices import pick_device

        device = pick_device(device)
        if self.world > 1 and device == "cuda":
            import torch

            torch.cuda.set_device(self.local_rank)
            return f"cuda:{self.local_rank}"
        return device

    @contextlib.contextmanager
    def single_process_env(self) -> Iterator[None]:
        """Hide the launcher's variables from accelerate while this process runs its own items."""
        if self.world == 1:
            yield
            return
        from accelerate.state import PartialState

        if PartialState._shared_state and PartialState._shared_state.get("num_processes", 1) > 1:
            raise RuntimeError(
                "run_suite shards work items over processes itself, but accelerate's distributed state is already "
                "initialised in this process (Transfer would train with DDP across processes that run different "
                "items); call run_suite before anything creates PartialState/Accelerator"
            )
        saved = {k: os.environ.pop(k) for k in DIST_ENV if k in os.environ}
        try:
            yield
        finally:
            os.environ.update(saved)

    def barrier(self) -> None:
        """Wait for every process (gloo), e.g. before the main process merges the results."""
        if self.world == 1:
            return
        import torch.distributed as dist

        created = not dist.is_initialized()
        if created:  # processes may finish hours apart: the rendezvous has to wait that long
            dist.init_process_group("gloo", timeout=timedelta(days=7))
        try:
            dist.barrier()
        finally:
            if created:
                dist.destroy_process_group()
