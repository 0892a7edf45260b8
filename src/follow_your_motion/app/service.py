"""The app's operations without the web page: start a transfer, regenerate from a saved run, cancel, and say where
a job stands. The Gradio layer (ui.py) only turns these into page updates; tests call them directly."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..runs import digest
from ..toyworld.examples import EXAMPLES, write_examples
from .jobs import CANCELLED, DONE, FAILED, FINISHED, QUEUED, Job, JobQueue, Progress
from .models import ModelCache
from .runs_index import resolve_run
from .settings import TransferRequest, resolve_request
from .uploads import (
    EXAMPLES_DIR,
    UPLOAD_DIR,
    Staged,
    accepted_file,
    discard_run,
    discard_upload,
    file_sha256,
    stage_image,
    stage_reference,
)
from .work import generate_work, transfer_work


@dataclass(frozen=True)
class JobView:
    """A job as the page shows it: one status line, the loss curve, and the result once done."""

    job_id: str
    state: str
    text: str
    losses: list[tuple[str, int, float]]
    result: dict | None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED


def format_seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def progress_text(progress: Progress) -> str:
    """The running job's line, e.g. "Stage: motion · Step: 12 / 60 · about 5 s of tuning left"."""
    parts = [f"**Stage:** {progress.stage}"]
    if progress.total:
        parts.append(f"**Step:** {progress.step} / {progress.total}")
    if progress.eta_s is not None:
        parts.append(f"about {format_seconds(progress.eta_s)} of tuning left")
    return " · ".join(parts)


class AppService:
    """One per process: the runs folder, the folders the app owns inside it, and the job queue."""

    def __init__(self, runs_root: Path, queue: JobQueue | None = None) -> None:
        self.runs_root = Path(runs_root).resolve()
        self.runs_root.mkdir(parents=True, exist_ok=True)
        self.upload_root = self.runs_root / UPLOAD_DIR
        self.examples_root = self.runs_root / EXAMPLES_DIR
        self.queue = queue or JobQueue()
        self._staging = threading.Lock()  # two identical submissions share one run directory
        self.models = ModelCache()  # the last job's model, reused by the next job on the same model

    # -- inputs -----------------------------------------------------------------------------------------
    def examples(self) -> dict[str, tuple[Path, str]]:
        """The bundled ShapesWorld examples, rendered into the runs folder once: name -> (video, caption)."""
        if not all((self.examples_root / f"{name}.mp4").is_file() for name in EXAMPLES):
            write_examples(self.examples_root)
        return {name: (self.examples_root / f"{name}.mp4", (self.examples_root / f"{name}.txt").read_text().strip())
                for name in EXAMPLES}

    def start_transfer(self, request: TransferRequest) -> Job:
        """Validate the request (settings first, then the video), stage the upload in its run directory and queue
        the job. Raises InputError with the CLI's message; a refused upload is deleted, no run directory made."""
        cfg = resolve_request(request)
        if not request.reference:
            raise InputError("no reference video given: upload one or pick a bundled example")
        upload = accepted_file(request.reference, [self.upload_root, self.examples_root])
        picture = accepted_file(request.image, [self.upload_root]) if request.image else None
        key = digest(file_sha256(upload), picture and file_sha256(picture),
                     cfg.model_dump(mode="json", exclude={"reference"}))[:12]
        with self._staging:
            try:
                staged = stage_reference(upload, self.runs_root, key)
            except InputError:
                discard_upload(upload, self.upload_root)
                raise
            if picture is not None:
                try:
                    image = stage_image(picture, staged)
                except InputError:
                    discard_upload(picture, self.upload_root)
                    raise
                cfg = cfg.model_copy(update={"generate": cfg.generate.model_copy(update={"image": str(image)})})
        cfg = cfg.model_copy(update={"reference": str(staged.video)})
        work = transfer_work(cfg, staged, self.models, self.upload_root)
        return self.queue.submit(Job(work, kind="transfer", run_dir=staged.run_dir,
                                     on_dropped=lambda: self._dropped(staged)))

    def _dropped(self, staged: Staged) -> None:
        """A transfer cancelled while waiting: remove its run directory unless another job still uses it."""
        if not self.queue.busy(staged.run_dir):
            discard_run(staged)

    def start_generate(self, run_name: str | None, prompt: str, seed: int | None = None,
                       motion_scale: float | None = None, spatial_scale: float | None = None,
                       device: str | None = None, guidance: str | None = None) -> Job:
        """Queue a generation from a saved run's LoRAs (no tuning) with a new prompt, seed or LoRA scales, and
        optionally a training-free guidance (`guidance.method`: ditflow, flow) on top."""
        run_dir = resolve_run(self.runs_root, run_name)
        work = generate_work(run_dir, prompt, seed, motion_scale, spatial_scale, self.models, device, guidance)
        return self.queue.submit(Job(work, kind="generate", run_dir=run_dir))

    # -- following a job ----------------------------------------------------------------------------------
    def cancel(self, job_id: str | None) -> bool:
        return self.queue.cancel(job_id)

    def view(self, job_id: str | None) -> JobView | None:
        job = self.queue.get(job_id)
        if job is None:
            return None
        state, message, progress = job.snapshot()
        if state == QUEUED:
            place = self.queue.position(job)
            text = f"**Queued:** position {place} (one job runs at a time)"
        elif state == DONE:
            took = (job.finished or 0) - (job.started or 0)
            text = f"**Done** in {format_seconds(took)}: run `{job.run_dir.name if job.run_dir else ''}`"
        elif state == FAILED:
            text = f"**Error:** {message}"
        elif state == CANCELLED:
            text = f"**Cancelled:** {message}"
        else:
            text = progress_text(progress)
        return JobView(job.id, state, text, progress.losses, job.result if state == DONE else None)
