"""The app's loaded model, kept between jobs: loading a real checkpoint takes minutes, and jobs on one model
are what a session of the app is. One model at a time (jobs run one at a time); another model's job replaces
it. Each job gets it without adapters: whatever a job loaded or trained is deleted when it ends."""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

import torch

from ..backbones import load_backbone
from ..backbones.base import Backbone
from ..config import ModelSettings

# Settings a loaded model keeps (what it was loaded with, and how its attention runs); the others are set per job.
KEY_FIELDS = ("source", "family", "dtype", "device", "offload", "blocks_to_swap", "attention_backend", "compile")


class ModelCache:
    """At most one loaded backbone, keyed by the settings it was loaded with."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._backbone: Backbone | None = None
        self._lock = threading.Lock()
        self.loads = 0  # how many times a model was loaded (the app's log; the tests count it)

    @contextlib.contextmanager
    def lease(self, model: ModelSettings) -> Iterator[Backbone]:
        """The model for `model`'s settings, loaded now unless it is the one held; its adapters are deleted when
        the block ends, also when it fails."""
        with self._lock:
            key = tuple(getattr(model, name) for name in KEY_FIELDS)
            if key != self._key:
                self._drop()
                self._backbone = load_backbone(model.source, model.family, model.dtype, model.device, model.offload,
                                               model.blocks_to_swap)
                self._key = key
                self.loads += 1
            backbone = self._backbone
            try:
                yield backbone
            finally:
                backbone.unload_adapters()

    def _drop(self) -> None:
        """Let the held model go before another is loaded (two may not fit in memory)."""
        self._key = self._backbone = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
