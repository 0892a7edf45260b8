"""The processes of one job: a run started by torchrun or `accelerate launch` is one job of N processes, on the
CPU (gloo) as on accelerators."""

from __future__ import annotations

from accelerate import PartialState


def job_state(device: str) -> PartialState:
    """accelerate's view of this process's job, for a run on `device`. accelerate's state is made once per
    process and shared by every later `PartialState` and `Accelerator`; on the CPU it joins the launch's processes
    only when made with `cpu=True`, so a state made first without it leaves every process of a CPU launch a job of
    one (each training the whole job alone and writing the same run directory)."""
    return PartialState(cpu=str(device).split(":")[0] == "cpu")
