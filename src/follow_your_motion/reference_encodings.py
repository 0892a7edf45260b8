"""A run's encodings of its reference: latents, caption and first-frame conditioning, stage 2's single frames,
stage 3's shrunk clip, the guidance's latents; each computed once and cached in the run directory, keyed on
everything that determines it.

Apart from the stages (`transfer.py`) because it is the one place that decides what an encoding depends on: a
stage asks for an encoding and gets the cached one whenever its inputs are unchanged.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .backbones.base import Backbone
from .backbones.inputs import Conditioning
from .config import TransferConfig
from .errors import InputError
from .progress import announced, progress
from .run_settings import REFERENCE_COPY
from .runs import RunDir, atomic_save_tensors, digest, load_tensors, read_metadata
from .stage_inputs import clip_condition, conditions_own_frames, own_first_frame
from .video import VideoClip, load_reference, resize_frames, to_tensor

if TYPE_CHECKING:  # for annotations only
    from accelerate import PartialState

# what each cached encoding is, for its progress line (the per-frame ones show a bar over the frames instead)
ENCODING = {"latents": "encode the reference (VAE)", "text": "encode the caption (text encoder)",
            "image": "encode the first frame (image condition)"}


@dataclass
class Reference:
    frames: np.ndarray  # (T, H, W, 3) uint8, as the model sees it
    fps: float
    latents: torch.Tensor  # (1, C, F, h, w), on the backbone's device
    cond: Conditioning  # the caption's conditioning, on the backbone's device


class ReferenceEncodings:
    """`Transfer`'s encodings, as methods of its base class; `Transfer.__init__` sets the attributes they read."""

    cfg: TransferConfig
    run: RunDir
    backbone: Backbone
    state: PartialState
    clip: VideoClip
    _exact: VideoClip | None
    _reference: Reference | None
    _motion_reference: Reference | None
    _key: str

    def _cached(self, what: str, key: str, compute) -> torch.Tensor:
        return self._cached_conditioning(what, key, lambda: Conditioning({what: compute()})).tensors[what]

    def _cached_conditioning(self, what: str, key: str, compute) -> Conditioning:
        """`compute()` once per key: the named tensors (and which run along frames) are kept in cache/."""
        path = self.run.cache(what, key)
        if path.exists():
            meta = read_metadata(path)
            cond = Conditioning(load_tensors(path), json.loads(meta.get("frame_axis", "{}")),
                                tuple(json.loads(meta.get("fixed_frames", "[]"))))
        else:
            with self.backbone.encoders_ready(), announced(ENCODING[what]) if what in ENCODING else nullcontext():
                cond = compute()
            if self.state.is_main_process:
                atomic_save_tensors(path, cond.tensors, {"frame_axis": json.dumps(cond.frame_axis),
                                                         "fixed_frames": json.dumps(cond.fixed_frames)})
        return cond.to(self.backbone.device)

    def reference(self) -> Reference:
        """The reference as frames, latents and caption conditioning (computed once, cached on disk)."""
        if self._reference is None:
            cfg, source = self.cfg, Path(self.cfg.reference)
            v = cfg.video
            if not source.is_file():
                raise InputError(f"{source}: reference video not found; {self.run.root} needs it to tune (its "
                                 "finished stages, generation and export do not)")
            if self._exact is None:
                self._exact = load_reference(source, v.frames, v.height, v.width, fps=v.fps, start=v.start)
            clip = self._exact
            stat = source.stat()
            self._key = digest(self._model_key, str(source.resolve()), stat.st_size, stat.st_mtime_ns, v.model_dump())
            self._reference = self._encoded(clip, self._key)
        return self._reference

    @property
    def _model_key(self) -> tuple[str | None, str | None, str]:
        m = self.cfg.model
        return m.source, m.family, m.dtype

    def _encoded(self, clip: VideoClip, key: str) -> Reference:
        """`clip` as the tuning stages take it: its latents, and the caption's conditioning (with its first
        frame's for an image-to-video run), each encoded once and cached under `key`."""
        cfg, v = self.cfg, self.cfg.video
        frames = to_tensor(clip.frames)
        latents = self._cached("latents", key, lambda: self.backbone.encode_video(frames))
        cond = self._cached_conditioning("text", digest(self._model_key, cfg.prompt),
                                         lambda: self.backbone.encode_prompt(cfg.prompt))
        if v.first_frame_condition:  # image-to-video: tuned on the reference's own first frame
            first = self._cached_conditioning("image", key, lambda: clip_condition(self.backbone, clip.frames,
                                                                                   v.frames))
            cond = cond.merged(first)
        return Reference(clip.frames, clip.fps, latents, cond)

    def motion_reference(self) -> Reference:
        """The reference stage 3 tunes on: the reference itself, or with `motion.downsample` s > 1 its frames
        area-averaged to 1/s of each side and encoded as the full clip is (motion is low-frequency; the
        backbone spaces their tokens as the full size's)."""
        ref, factor = self.reference(), self.cfg.motion.downsample
        if factor == 1:
            return ref
        if self._motion_reference is None:
            v = self.cfg.video
            small = VideoClip(resize_frames(ref.frames, v.height // factor, v.width // factor), ref.fps)
            self._motion_reference = self._encoded(small, digest(self._key, factor))
        return self._motion_reference

    def frame_latents(self) -> torch.Tensor:
        """Every pixel frame of the reference encoded on its own, (T, C, 1, h, w), for stage 2."""
        ref = self.reference()
        frames = to_tensor(ref.frames)

        def encode() -> torch.Tensor:
            return torch.cat([self.backbone.encode_video(frames[:, i : i + 1])
                              for i in progress(range(frames.shape[1]), desc="encode single frames (VAE)")])

        return self._cached("frame_latents", self._key, encode)

    def frame_conditions(self) -> Conditioning | None:
        """Image-to-video, for stage 2: every pixel frame's conditioning as its own first frame (batch T), cached;
        None where stage 2 does not condition on the frames (`conditions_own_frames`)."""
        ref = self.reference()
        if not conditions_own_frames(self.cfg, ref.cond):
            return None
        return self._cached_conditioning("frame_images", self._key, lambda: Conditioning.stacked(
            [own_first_frame(self.backbone, frame)
             for frame in progress(ref.frames, desc="encode single frames as first frames")]))

    def guidance_reference(self) -> torch.Tensor:
        """The reference latents a guidance follows: the tuning stages' (from the original video) while it is at
        its path, else the run's copy (`REFERENCE_COPY`, the reference as the model saw it) encoded once."""
        if self.cfg.reference and Path(self.cfg.reference).is_file():
            return self.reference().latents
        copy = self.run.path(REFERENCE_COPY)
        key = digest(self._model_key, REFERENCE_COPY, copy.stat().st_size, copy.stat().st_mtime_ns,
                     self.cfg.video.model_dump())
        return self._cached("latents", key, lambda: self.backbone.encode_video(to_tensor(self.clip.frames)))
