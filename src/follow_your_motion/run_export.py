"""A finished run's LoRAs written in another format (`fym export`, the app's downloads).

Apart from the job (`transfer.py`) because it needs no model: it reads only the run's LoRA files and config.
"""

from __future__ import annotations

from pathlib import Path

from .backbones import backbone_class
from .errors import InputError
from .method.export import FORMATS, export_file
from .recipes import model_family
from .run_settings import open_config
from .runs import RunDir


def export_run(run: Path, fmt: str, out_dir: Path | None = None) -> list[Path]:
    """Write every tuned LoRA of the run (one per adapter and expert) in `fmt` (diffusers or comfyui) to
    `out_dir` (default <run>/export/<fmt>), reading only the run's LoRA files and config: no model is loaded."""
    if fmt not in FORMATS:
        raise InputError(f"unknown LoRA format {fmt!r} (choose from {', '.join(FORMATS)})")
    run_dir = RunDir(run)
    family = backbone_class(model_family(open_config(run).model.model_dump()))
    folder = Path(out_dir) if out_dir else run_dir.root / "export" / fmt
    written = []
    for adapter in ("spatial", "motion"):
        for source in sorted(run_dir.root.glob(f"{adapter}_lora*.safetensors")):
            suffix = source.name.removeprefix(f"{adapter}_lora").removesuffix(".safetensors")
            target = folder / f"{adapter}_lora{suffix}_{fmt}.safetensors"
            written.append(export_file(source, target, fmt, family, adapter))
    if not written:
        raise InputError(f"{run_dir.root}: no tuned LoRA to export (run the tuning stages first)")
    return written

