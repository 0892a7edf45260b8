"""The run directory: where every artifact, cache, checkpoint and log of one transfer lives.

Layout:
  config.yaml  heads.json  heads.png  spatial_lora.safetensors  motion_lora.safetensors
  cache/<what>-<key>.safetensors   checkpoints/<stage>/step-XXXXXXX/   samples/   log.jsonl
Every write goes to a temporary file in the same directory and is renamed into place, so a kill at any
moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .errors import InputError

CHECKPOINT_PREFIX = "step-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give results the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning any failure into one clear ValueError naming the file."""
    try:
        return load_file(str(path))
    except (OSError, SafetensorError, ValueError) as err:
        raise InputError(f"{path}: not a readable safetensors file ({err})") from err


def read_metadata(path: Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty if it has none)."""
    try:
        with safe_open(str(path), "pt") as f:
            return f.metadata() or {}
    except (OSError, SafetensorError) as err:
        raise InputError(f"{path}: not a readable safetensors file ({err})") from err


def digest(*parts: object) -> str:
    """Short stable hash of JSON-serialisable parts, used to key caches."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunDir:
    """Paths and bookkeeping of one run directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def heads(self) -> Path:
        return self.root / "heads.json"

    def lora(self, adapter: str, expert_suffix: str = "") -> Path:
        """An adapter's LoRA file (diffusers format); one per expert of a model with several."""
        return self.root / f"{adapter}_lora{expert_suffix}.safetensors"

    def loras(self, adapter: str) -> list[Path]:
        """Every expert's LoRA file of an adapter, as they exist (for readers that load no model)."""
        return sorted(self.root.glob(f"{adapter}_lora*.safetensors"))

    def stage_finished(self, adapter: str) -> bool:
        """Whether an adapter's stage has written its LoRA files, judged without the model: a file exists, and
        every expert that started training (a checkpoint folder) has its file."""
        started = [d.name.removeprefix(adapter) for d in self.root.glob(f"checkpoints/{adapter}*") if d.is_dir()]
        return bool(self.loras(adapter)) and all(self.lora(adapter, suffix).exists() for suffix in started)

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    def cache(self, what: str, key: str) -> Path:
        return self.root / "cache" / f"{what}-{key}.safetensors"

    def log(self, event: str, **fields: object) -> None:
        """Append one JSON line to log.jsonl (flushed, so a kill loses at most the line being written)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "log.jsonl", "a") as f:
            f.write(json.dumps({"time": round(time.time(), 3), "event": event, **fields}) + "\n")

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint_dir(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage

    def checkpoints(self, stage: str) -> list[tuple[int, Path]]:
        """Complete checkpoints of a stage, oldest first."""
        folder = self.checkpoint_dir(stage)
        if not folder.is_dir():
            return []
        found = []
        for entry in folder.iterdir():
            if entry.name.startswith(CHECKPOINT_PREFIX) and (entry / "COMPLETE").exists():
                found.append((int(entry.name[len(CHECKPOINT_PREFIX) :]), entry))
        return sorted(found)

    def save_checkpoint(self, stage: str, step: int, write: Callable[[Path], None], keep: int = 2) -> Path:
        """Write a checkpoint through `write(tmp_dir)` and publish it with one rename; keep the last `keep`."""
        folder = self.checkpoint_dir(stage)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"{CHECKPOINT_PREFIX}{step:07d}"
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
        try:
            write(tmp)
            (tmp / "COMPLETE").write_text(str(step))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        for _, old in self.checkpoints(stage)[:-keep]:
            shutil.rmtree(old)
        return final
