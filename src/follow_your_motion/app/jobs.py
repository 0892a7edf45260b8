"""One job at a time per process: a queue with a single worker thread, progress a page can poll, and cancel.

A model fills the accelerator on its own, so jobs (tuning and generation alike) run one after another; waiting
jobs know their place in line. Cancel never kills anything: a running job's step callback returns True at the
next optimizer step, and the training loop checkpoints there, so the run directory resumes.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

log = logging.getLogger("follow_your_motion.app")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = frozenset({DONE, FAILED, CANCELLED})
INTERNAL_ERROR = "internal error (the traceback is in the server console)"
OUT_OF_MEMORY = ("out of memory: lower the steps' memory with a YAML run config (grad_checkpointing, mixed_precision, "
                 "model.offload, model.blocks_to_swap), a smaller sparse K, or a smaller model")


class Cancelled(Exception):  # noqa: N818 - a stop the user asked for, not an error
    """Raised by a job's work when it stopped on request; its message says how to resume."""


@dataclass
class Progress:
    """What the page shows while a job runs. `plan` lists the tuning stages still to come with their steps, so the
    time left covers them too."""

    stage: str = QUEUED
    step: int = 0
    total: int = 0
    losses: list[tuple[str, int, float]] = field(default_factory=list)  # (stage, step, loss)
    plan: dict[str, int] = field(default_factory=dict)
    eta_s: float | None = None
    _since: tuple[float, int] | None = None  # (time, step) of the current stage's first report

    def remaining_steps(self) -> int:
        later = list(self.plan)
        after = later[later.index(self.stage) + 1 :] if self.stage in later else later
        return (self.total - self.step) + sum(self.plan[s] for s in after)


@dataclass
class Job:
    """One unit of work (a transfer or a generation) and everything the page needs to follow it."""

    work: Callable[[Job], dict]
    kind: str = "transfer"
    run_dir: Path | None = None
    id: str = ""
    state: str = QUEUED
    message: str = ""
    result: dict | None = None
    progress: Progress = field(default_factory=Progress)
    listeners: list[Callable[[Job], None]] = field(default_factory=list)  # called after every step report
    on_dropped: Callable[[], None] | None = None  # called if the job is cancelled before it started
    clock: Callable[[], float] = time.monotonic
    started: float | None = None
    finished: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_stage(self, stage: str, total: int = 0) -> None:
        with self._lock:
            self.progress.stage, self.progress.step, self.progress.total = stage, 0, total
            self.progress._since = None

    def report(self, stage: str, step: int, total: int, parts: dict[str, float]) -> bool:
        """`Transfer.on_step`: record the step and its loss, update the time left; True = stop here (cancel)."""
        now = self.clock()
        with self._lock:
            p = self.progress
            if stage != p.stage or p._since is None:
                p._since = (now, step)
            p.stage, p.step, p.total = stage, step, total
            p.losses.append((stage, step, float(parts.get("fm", 0.0)) + float(parts.get("motion", 0.0))))
            began, first = p._since
            p.eta_s = (now - began) / (step - first) * p.remaining_steps() if step > first else None
        for listener in list(self.listeners):
            listener(self)
        return self.cancel_requested.is_set()

    def snapshot(self) -> tuple[str, str, Progress]:
        """A consistent copy of (state, message, progress) for a page to render."""
        with self._lock:
            p = self.progress
            copy = Progress(p.stage, p.step, p.total, list(p.losses), dict(p.plan), p.eta_s)
            return self.state, self.message, copy


class JobQueue:
    """First in, first out, one worker thread; started on the first submit, a daemon so it never holds the
    process open."""

    def __init__(self) -> None:
        self._waiting: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._current: Job | None = None
        self._ids = itertools.count(1)
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, job: Job) -> Job:
        with self._cv:
            job.id = job.id or f"job-{next(self._ids)}"
            self._jobs[job.id] = job
            self._waiting.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="fym-app-worker", daemon=True)
                self._thread.start()
            self._cv.notify_all()
        return job

    def get(self, job_id: str | None) -> Job | None:
        with self._cv:
            return self._jobs.get(job_id or "")

    def position(self, job: Job) -> int:
        """1, 2, ... for a waiting job (1 = next); 0 once it runs or has finished."""
        with self._cv:
            for place, waiting in enumerate(self._waiting, start=1):
                if waiting is job:
                    return place
            return 0

    def busy(self, run_dir: Path) -> bool:
        """Whether a waiting or running job uses `run_dir` (identical submissions share one)."""
        with self._cv:
            return any(job.run_dir == run_dir and job.state not in FINISHED for job in self._jobs.values())

    def cancel(self, job_id: str | None) -> bool:
        """A waiting job leaves the line at once; a running one stops at its next step. False if unknown/over."""
        with self._cv:
            job = self._jobs.get(job_id or "")
            if job is None or job.state in FINISHED:
                return False
            job.cancel_requested.set()
            dropped = job in self._waiting
            if dropped:
                self._waiting.remove(job)
                job.state, job.message = CANCELLED, "cancelled before it started"
                job.finished = job.clock()
                self._cv.notify_all()
        if dropped and job.on_dropped is not None:
            job.on_dropped()
        return True

    def wait(self, job: Job, timeout: float | None = None) -> bool:
        """Block until `job` has finished; False on timeout (for tests and shutdown)."""
        with self._cv:
            return self._cv.wait_for(lambda: job.state in FINISHED, timeout)

    def _loop(self) -> None:
        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self._waiting))
                job = self._waiting.popleft()
                self._current = job
                job.state, job.started = RUNNING, job.clock()
            state, message, result = self._run(job)
            with self._cv:
                job.state, job.message, job.result = state, message, result
                job.finished = job.clock()
                self._current = None
                self._cv.notify_all()

    @staticmethod
    def _run(job: Job) -> tuple[str, str, dict | None]:
        """Run the work: bad input becomes its one-line message, anything else a logged bug."""
        try:
            return DONE, "", job.work(job)
        except Cancelled as stop:
            return CANCELLED, str(stop), None
        except (InputError, OSError) as err:  # what `fym` reports as one line, too
            return FAILED, str(err), None
        except Exception as err:
            if type(err).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch here
                log.exception("job %s ran out of memory", job.id)
                return FAILED, OUT_OF_MEMORY, None
            log.exception("job %s (%s, %s) failed", job.id, job.kind, job.run_dir)
            return FAILED, INTERNAL_ERROR, None
