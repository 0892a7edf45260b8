"""The "Runs" view: every run directory in the runs folder (the app's and the CLI's alike), with its reference,
prompts and newest result, and the one safe way to turn a name picked in the page back into a directory."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..config import TransferConfig
from ..errors import InputError
from ..run_settings import REFERENCE_COPY
from ..runs import RunDir
from .uploads import inside

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a single path component that cannot be "..", "." or hidden


@dataclass(frozen=True)
class RunEntry:
    name: str
    path: Path
    modified: float
    caption: str
    target_prompt: str
    status: str  # "tuned", "stopped (resumable)" or "not tuned"
    reference: Path | None
    result: Path | None
    result_prompt: str  # the prompt of `result` (a regenerated sample may differ from the run's target prompt)


def is_run(folder: Path) -> bool:
    return folder.is_dir() and (folder / "config.yaml").is_file()


def samples(run_dir: Path) -> list[Path]:
    """The run's generated videos (not the side-by-sides), newest first."""
    found = [p for p in (Path(run_dir) / "samples").glob("*.mp4") if not p.stem.endswith("_side_by_side")]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def run_status(run_dir: Path) -> str:
    if RunDir(run_dir).stage_finished("motion"):
        return "tuned"
    if any((run_dir / "checkpoints").glob("*/step-*/COMPLETE")):
        return "stopped (resumable)"
    return "not tuned"


def sample_prompt(sample: Path, default: str) -> str:
    """The prompt the app recorded beside a sample (<name>_metrics.json), else `default`."""
    try:
        return str(json.loads(sample.with_name(sample.stem + "_metrics.json").read_text())["prompt"])
    except (OSError, ValueError, KeyError, TypeError):
        return default


def entry(run_dir: Path) -> RunEntry:
    """One run's row; an unreadable config.yaml shows as such instead of hiding the run."""
    try:
        cfg = TransferConfig.load(run_dir / "config.yaml")
        caption, target = cfg.prompt, cfg.target_prompt or cfg.prompt
    except InputError:
        caption, target = "(unreadable config.yaml)", ""
    reference = run_dir / REFERENCE_COPY
    found = samples(run_dir)
    result = found[0] if found else None
    return RunEntry(run_dir.name, run_dir, (run_dir / "config.yaml").stat().st_mtime, caption, target,
                    run_status(run_dir), reference if reference.is_file() else None, result,
                    sample_prompt(result, target) if result else "")


def list_runs(runs_root: Path) -> list[RunEntry]:
    """Every run directory directly in `runs_root`, newest first (the app's own hidden folders are skipped)."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    runs = [entry(p) for p in root.iterdir() if NAME.fullmatch(p.name) and is_run(p)]
    return sorted(runs, key=lambda r: r.modified, reverse=True)


def resolve_run(runs_root: Path, name: str | None) -> Path:
    """The run directory called `name` directly inside `runs_root`; InputError for anything else (paths, `..`,
    links that lead out of the runs folder, folders that are not runs)."""
    if not name or not NAME.fullmatch(name):
        raise InputError(f"{name!r}: pick a run from the list")
    folder = inside(runs_root, Path(runs_root) / name)
    if folder.parent != Path(runs_root).resolve() or not is_run(folder):
        raise InputError(f"{name!r}: not a run in {runs_root}")
    return folder
