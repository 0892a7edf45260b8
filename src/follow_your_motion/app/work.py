"""What a job does on the worker thread: drive `Transfer` stage by stage (tuning, or generation from a saved run),
report progress, stop on cancel, score the result, and write the downloads.

Everything is the public API the CLI uses (`Transfer`, `export_run`), so a run made here is an ordinary run
directory: `fym transfer`, `fym generate` and `fym export` work on it too.
"""

from __future__ import annotations

import json
import shlex
import zipfile
from pathlib import Path

from ..backbones.base import Backbone
from ..config import GUIDANCE_METHODS, GenerateSettings, TransferConfig
from ..errors import InputError
from ..precedence import resolve_config
from ..run_export import export_run
from ..run_settings import REFERENCE_COPY, open_config
from ..runs import RunDir, atomic_write, atomic_write_text, digest
from ..transfer import Transfer
from .jobs import Cancelled, Job
from .models import ModelCache
from .scoring import result_metrics
from .uploads import Staged, discard_run, discard_upload

DOWNLOADS = ("Motion LoRA (diffusers)", "Motion LoRA (ComfyUI)", "Run config")


def resume_command(cfg: TransferConfig, run_dir: Path) -> str:
    """The `fym transfer` line that resumes (or repeats) this run from its config.yaml."""
    return shlex.join(["fym", "transfer", cfg.reference, "--prompt", cfg.prompt, "--out", str(run_dir),
                       "--config", str(Path(run_dir) / "config.yaml")])


def tuning_plan(cfg: TransferConfig, run: RunDir) -> dict[str, int]:
    """The tuning stages still to train, with their steps (finished LoRAs are skipped by Transfer)."""
    plan = {"spatial": cfg.spatial.steps, "motion": cfg.motion.steps}
    return {stage: steps for stage, steps in plan.items() if steps and not run.stage_finished(stage)}


def tuning_finished(cfg: TransferConfig, run: RunDir) -> bool:
    return all(not steps or run.stage_finished(stage)
               for stage, steps in (("spatial", cfg.spatial.steps), ("motion", cfg.motion.steps)))


def downloads(run_dir: Path) -> dict[str, Path]:
    """The files behind the three download buttons (those that exist): LoRAs exported without loading a model."""
    run_dir = Path(run_dir)
    found: dict[str, Path] = {}
    for label, fmt in (("Motion LoRA (diffusers)", "diffusers"), ("Motion LoRA (ComfyUI)", "comfyui")):
        if not RunDir(run_dir).loras("motion"):
            continue
        files = [p for p in export_run(run_dir, fmt) if p.name.startswith("motion_")]
        found[label] = files[0] if len(files) == 1 else zip_files(files, run_dir / "export" / f"motion_lora_{fmt}.zip")
    if (run_dir / "config.yaml").is_file():
        found["Run config"] = run_dir / "config.yaml"
    return found


def zip_files(files: list[Path], target: Path) -> Path:
    """One download for a model with several experts' files (Wan2.2-A14B: high- and low-noise)."""
    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as archive:
            for path in files:
                archive.write(path, path.name)

    return atomic_write(target, write)


def result_record(run_dir: Path, sample_paths: dict[str, Path], metrics: dict, prompt: str) -> dict:
    """What the page shows for a finished job, also saved beside the sample as <name>_metrics.json."""
    record = {
        "run": str(run_dir), "prompt": prompt, "reference": str(Path(run_dir) / REFERENCE_COPY),
        "result": str(sample_paths["video"]), "side_by_side": str(sample_paths["side_by_side"]),
        "heads": next((str(p) for p in sorted(Path(run_dir).glob("heads*.png"))), None),
        "metrics": metrics,
    }
    atomic_write_text(Path(sample_paths["video"]).with_name(Path(sample_paths["video"]).stem + "_metrics.json"),
                      json.dumps(record, indent=1) + "\n")
    return record | {"downloads": {k: str(v) for k, v in downloads(run_dir).items()}}


def _validated(cfg: TransferConfig, staged: Staged, upload_root: Path | None, backbone: Backbone) -> Transfer:
    """Open the run and check everything the user gave before any tuning: the video fits the model, both prompts
    encode (the toy model refuses unknown words). Failing here removes a run directory this job made (nothing was
    tuned in it yet); a video the model refuses is deleted from the uploads too, and named as the user named it."""
    try:
        job = Transfer(cfg, staged.run_dir, backbone)
        job.reference()
        if cfg.target_prompt:
            job.backbone.encode_prompt(cfg.target_prompt)
        return job
    except InputError as err:
        discard_run(staged)
        if str(staged.video) not in str(err):
            raise
        if staged.source is not None and upload_root is not None:
            discard_upload(staged.source, upload_root)
        name = staged.source.name if staged.source is not None else staged.video.name
        raise InputError(str(err).replace(str(staged.video), name)) from err
    except BaseException:
        discard_run(staged)
        raise


def transfer_work(cfg: TransferConfig, staged: Staged, models: ModelCache, upload_root: Path | None = None):
    """The work of a "Transfer" job: stages 1-3 (resuming what exists), generation, metrics, downloads."""

    def work(job: Job) -> dict:
        job.set_stage("loading model")
        with models.lease(cfg.model) as backbone:
            return run_transfer(job, _validated(cfg, staged, upload_root, backbone))

    return work


def run_transfer(job: Job, transfer: Transfer) -> dict:
    """Tune what is left, stopping where the job is cancelled, then generate, score and export."""
    run = transfer.run
    job.progress.plan = tuning_plan(transfer.cfg, run)
    transfer.on_step = job.report
    job.set_stage("classify heads")
    transfer.encode()  # every encoding of the run at once, before the encoders leave the accelerator
    transfer.classify()
    if not job.cancel_requested.is_set():
        transfer.tune_motion()
    if job.cancel_requested.is_set() and not tuning_finished(transfer.cfg, run):
        stage, step, total = job.progress.stage, job.progress.step, job.progress.total
        where = f" at {stage} step {step} / {total}" if total else ""
        raise Cancelled(f"cancelled{where}; {run.root} keeps its checkpoints. Resume with the same inputs and "
                        f"Transfer, or: {resume_command(transfer.cfg, run.root)}")
    job.set_stage("generate")
    prompt = transfer.cfg.target_prompt or transfer.cfg.prompt
    sample = transfer.generate()
    job.set_stage("metrics")
    metrics = result_metrics(transfer.cfg, transfer.clip.frames, sample.frames, prompt)
    return result_record(run.root, sample.paths, metrics, prompt)


def generation_settings(run_dir: Path, seed: int | None, motion_scale: float | None, spatial_scale: float | None
                        ) -> GenerateSettings:
    """The one precedence, as `fym generate` takes it: recipe < the run's config.yaml < the fields given."""
    given = {"seed": seed, "motion_scale": motion_scale, "spatial_scale": spatial_scale}
    return resolve_config({"generate": {k: v for k, v in given.items() if v is not None}},
                          Path(run_dir) / "config.yaml").generate


def generate_work(run_dir: Path, prompt: str, seed: int | None, motion_scale: float | None,
                  spatial_scale: float | None, models: ModelCache, device: str | None = None,
                  guidance: str | None = None):
    """The work of a "Generate" job on a saved run: its LoRAs with a new prompt, seed or scales, and `guidance`
    (None: the run's); no tuning."""
    if guidance is not None and guidance not in GUIDANCE_METHODS:
        raise InputError(f"unknown guidance {guidance!r} (choose from {', '.join(GUIDANCE_METHODS)})")

    def work(job: Job) -> dict:
        job.set_stage("loading model")
        cfg = open_config(run_dir)
        if not tuning_finished(cfg, RunDir(run_dir)):
            raise InputError(f"{run_dir.name}: its tuning was stopped before the LoRAs were saved; transfer it again "
                             "to resume (same inputs), then generate")
        settings = generation_settings(run_dir, seed, motion_scale, spatial_scale)
        text = (prompt or "").strip() or cfg.target_prompt or cfg.prompt
        model = cfg.model if device is None else cfg.model.model_copy(update={"device": device})
        with models.lease(model) as backbone:
            transfer = Transfer.open(run_dir, device, backbone)
            if guidance is not None:
                transfer.cfg.guidance.method = guidance
            job.set_stage("generate")
            guided = [transfer.cfg.guidance.model_dump()] if transfer.cfg.guidance.method != "none" else []
            sample = transfer.generate(text, settings, "app-" + digest(text, settings.model_dump(), *guided)[:10])
        job.set_stage("metrics")
        metrics = result_metrics(cfg, transfer.clip.frames, sample.frames, text)
        return result_record(transfer.run.root, sample.paths, metrics, text)

    return work
