"""Tuning shared between methods: one tuning per case for methods that differ only in how they sample.

``fym``, ``fym-spatial-on``, ``fym+ditflow`` and ``fym+flow-guidance`` tune the same LoRAs and differ only at
sampling time; tuning each from scratch would repeat the suite's costliest work. A tuned method whose settings
that decide tuning (``tuning_key``) equal an earlier tuned method's in the suite reuses that method's tuning
(``tuning_sources``): before its first item, the finished tuning of the case (stage 1's head map, the LoRA
files, the stage times) is linked into its own run directory (``reuse_tuning``), where ``Transfer`` finds every
stage complete and only samples. Its run directory stays a complete run (``fym generate --run`` works on it), and
its results carry the stage times of the tuning they reused and the method that did it (``tuning_from``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..config import TransferConfig
from ..runs import RunDir, atomic_write, atomic_write_text
from .methods import Method
from .transfer_call import STAGE_STATS, tuning_stages

REUSED = "bench_tuning_from.json"  # in a run directory that reuses another's tuning: which one
SAMPLING_SECTIONS = {"generate", "guidance", "target_prompt"}
"""Settings read only while sampling. Stricter than ``run_settings.UNTUNED`` (what a run directory accepts):
every ``model`` setting counts, and so does ``generate.image``, which decides whether a model that takes both
(Wan2.2-TI2V) tunes on the reference's first frame (``run_settings.first_frame_condition``)."""


def tuning_key(cfg: TransferConfig) -> str:
    """Every setting that can change what tuning `cfg` produces, as one string: equal keys, equal LoRAs."""
    data = cfg.model_dump(mode="json", exclude=SAMPLING_SECTIONS)
    data["generate.image"] = cfg.generate.image
    return json.dumps(data, sort_keys=True)


def tuning_sources(methods: Sequence[Method], settings: dict) -> dict[str, str]:
    """{method: the earlier method whose tuning it reuses} for every tuned method whose ``tuning_key`` equals an
    earlier tuned method's (the first of them tunes, the later ones reuse)."""
    first: dict[str, str] = {}
    sources = {}
    for method in methods:
        if not method.tune:
            continue
        key = tuning_key(method.config(settings))
        if key in first:
            sources[method.name] = first[key]
        else:
            first[key] = method.name
    return sources


def _tuning_files(run: RunDir) -> list[Path]:
    """The files of a run directory that hold its tuning's results (not checkpoints or caches)."""
    names = ("heads*.json", "heads*.png", "spatial_lora*.safetensors", "motion_lora*.safetensors", STAGE_STATS)
    return sorted(p for pattern in names for p in run.root.glob(pattern) if p.is_file())


def tuning_finished(run: RunDir, cfg: TransferConfig) -> bool:
    """Whether `run` holds the finished tuning of `cfg`, judged without the model: every stage's time recorded
    (the bench records a stage once it returned) and its results on disk."""
    if not run.path(STAGE_STATS).is_file():
        return False
    stats = json.loads(run.path(STAGE_STATS).read_text())
    files = {"classify": run.heads.is_file(), "spatial": bool(run.loras("spatial")),
             "motion": bool(run.loras("motion")) or not cfg.motion.steps}
    return all(stage in stats and files[stage] for stage in tuning_stages(cfg))


def _link(source: Path, target: Path) -> None:
    """`source` at `target` without copying its bytes where the file system allows (a hard link); else a copy.
    Tuning files are only ever replaced by a rename, never written in place, so a link cannot change under
    either run."""
    try:
        os.link(source, target)
    except OSError:
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


def reuse_tuning(source: Path, run_dir: Path, method: str, cfg: TransferConfig) -> bool:
    """Put the finished tuning of `source` (the run directory of `method`, same ``tuning_key`` as `cfg`) into
    `run_dir`; whether `run_dir` reuses it. Not when `run_dir` has recorded tuning of its own (a run from before
    reuse, resumed as it was) or `source` holds no finished tuning (then `run_dir` tunes itself). Idempotent: a
    resumed run finds its marker and links only what is missing."""
    run, marker = RunDir(run_dir), Path(run_dir) / REUSED
    if not marker.exists():
        if run.path(STAGE_STATS).exists() or not tuning_finished(RunDir(source), cfg):
            return False
        atomic_write_text(marker, json.dumps({"method": method, "run": str(Path(source).resolve())}, indent=1))
    for path in _tuning_files(RunDir(source)):
        if not (run.root / path.name).exists():
            _link(path, run.root / path.name)
    return True

