"""Early stopping of a tuning stage on a loss plateau (`spatial/motion.early_stop`; off by default).

The rule, on the loss the training loop already reads once a step (no extra host-device sync): the steps are cut
into windows of `window` steps; at the end of each, the window's mean loss is compared with the best window mean
so far. A window improves when its mean is below best x (1 - min_improvement); `patience` windows in a row that
do not improve stop the stage at the end of the last of them. The first window sets the best, so the earliest
stop is after (patience + 1) x window steps. The state travels in every checkpoint, so a resumed run stops at
the step the uninterrupted one does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import EarlyStopSettings


@dataclass
class Plateau:
    """The rule's state: the best window mean, how many windows since it, the current window's losses."""

    settings: EarlyStopSettings
    best: float = math.inf
    stale: int = 0  # windows in a row without improvement
    losses: list[float] = field(default_factory=list)  # the current window's, in step order
    stopped: bool = False

    def update(self, loss: float, mean_over_processes: Callable[[float], float] = float) -> bool:
        """Add one step's loss; True when the stage should stop after this step. `mean_over_processes` makes
        every process of a multi-process run decide on the same mean."""
        self.losses.append(float(loss))
        if len(self.losses) < self.settings.window:
            return False
        mean = mean_over_processes(sum(self.losses) / len(self.losses))
        self.losses = []
        if mean < self.best * (1 - self.settings.min_improvement):
            self.best, self.stale = mean, 0
        else:
            self.stale += 1
        self.stopped = self.stale >= self.settings.patience
        return self.stopped

    def state_dict(self) -> dict:
        return {"best": self.best, "stale": self.stale, "losses": list(self.losses), "stopped": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.stale = float(state["best"]), int(state["stale"])
        self.losses, self.stopped = [float(x) for x in state["losses"]], bool(state["stopped"])
