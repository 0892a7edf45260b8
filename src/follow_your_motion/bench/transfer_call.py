"""The one expensive call of a benchmark item: tune a run directory (resumably, timed) and generate a sample.

The Transfer of the current (case, method) unit stays open between its items, so its backbone and LoRAs are
loaded once; the time and CUDA peak of every tuning stage are recorded in the run directory
(``STAGE_STATS``) and repeated in every result of that run.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import TransferConfig
from ..runs import atomic_write_text

STAGE_STATS = "bench_stages.json"  # per run directory: seconds and CUDA peak of each tuning stage


@dataclass
class Generated:
    """What one generation gives the runner (the seam tests replace with a fake)."""

    frames: np.ndarray  # (T, H, W, 3) uint8, the result
    reference: np.ndarray  # (T, H, W, 3) uint8, the reference as the model saw it
    fps: float
    paths: dict[str, Path]  # "video" (required), "side_by_side", ...
    timings: dict[str, float | None] = field(default_factory=dict)  # classify, spatial, motion, generate
    cuda_peak_bytes: int | None = None


_OPEN: dict[str, Any] = {}  # the one open Transfer (its backbone stays loaded between items of a unit)


def close_jobs() -> None:
    """Drop the open Transfer and free its memory."""
    if _OPEN:
        _OPEN.clear()
        gc.collect()
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()


def _cuda_reset() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak() -> int | None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    return None


def tuning_stages(cfg: TransferConfig) -> list[str]:
    """The tuning stages a run of `cfg` records in ``STAGE_STATS``, in order."""
    return [*(["classify"] if cfg.heads.select == "classified" else []), *(["spatial"] if cfg.spatial.steps else []),
            "motion"]


def _tune(job: Any, tune: bool) -> dict:
    """Run the tuning stages that are not complete yet, adding their time to the run's stage record.

    A stage cut short by a kill is not recorded; its resumed run records only what it still had to do."""
    path = job.run.path(STAGE_STATS)
    stats = json.loads(path.read_text()) if path.exists() else {}
    if not tune:
        return stats
    calls = {"classify": job.classify, "spatial": job.tune_spatial, "motion": job.tune_motion}
    for name in tuning_stages(job.cfg):
        stage = calls[name]
        if job.stage_done(name):
            continue
        _cuda_reset()
        began = time.perf_counter()
        stage()
        old = stats.get(name, {})
        peaks = [p for p in (old.get("cuda_peak_bytes"), _cuda_peak()) if p is not None]
        stats[name] = {
            "seconds": old.get("seconds", 0.0) + time.perf_counter() - began,
            "cuda_peak_bytes": max(peaks) if peaks else None,
            "attempts": old.get("attempts", 0) + 1,
        }
        atomic_write_text(path, json.dumps(stats, indent=1))
    return stats


def run_transfer(cfg: TransferConfig, run_dir: Path, tune: bool, prompt: str, seed: int, name: str) -> Generated:
    """Tune (when `tune`; resuming or reusing the stages in `run_dir`) and generate `prompt` with `seed` as
    samples/<name>.mp4. The Transfer stays open for the next call with the same run directory."""
    key = (str(Path(run_dir).resolve()), cfg.model_dump_json())
    if _OPEN.get("key") != key:
        close_jobs()
        from ..transfer import Transfer

        job = Transfer(cfg, Path(run_dir))
        _OPEN.update(key=key, job=job, stats=_tune(job, tune))
    job, stats = _OPEN["job"], _OPEN["stats"]
    settings = cfg.generate.model_copy(update={"seed": seed})
    _cuda_reset()
    began = time.perf_counter()
    sample = job.generate(prompt, settings, name)
    seconds = time.perf_counter() - began
    ref = job.reference()
    peaks = [s.get("cuda_peak_bytes") for s in stats.values()] + [_cuda_peak()]
    peaks = [p for p in peaks if p is not None]
    timings = {s: stats[s]["seconds"] if s in stats else None for s in ("classify", "spatial", "motion")}
    return Generated(
        frames=sample.frames, reference=ref.frames, fps=ref.fps, paths=dict(sample.paths),
        timings=timings | {"generate": seconds}, cuda_peak_bytes=max(peaks) if peaks else None,
    )
