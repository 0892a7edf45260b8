"""What a backbone takes: the conditioning its transformer gets besides the noisy latents (`Conditioning`, opaque
to the method), and the video sizes it accepts (`VideoGeometry`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..errors import InputError


@dataclass
class Conditioning:
    """What a transformer takes besides the noisy latents, made once per prompt (and image): named tensors with
    the batch first. The method only batches it (`expand`) and cuts it to the kept frames (`select_frames`);
    what the names mean is the family's business. `frame_axis` names the tensors that run along the latent
    frames (image-to-video condition latents) and their frame axis. `fixed_frames` are latent frames the model
    is given clean rather than denoising (Wan2.2-TI2V's first frame): sparse sampling always keeps them, and
    the losses leave them out."""

    tensors: dict[str, torch.Tensor]
    frame_axis: dict[str, int] = field(default_factory=dict)
    fixed_frames: tuple[int, ...] = ()

    def expand(self, batch: int) -> Conditioning:
        return replace(self, tensors={k: v.expand(batch, *v.shape[1:]) for k, v in self.tensors.items()})

    def select_frames(self, indices: torch.Tensor) -> Conditioning:
        cut = {k: v.index_select(self.frame_axis[k], indices.to(v.device)) if k in self.frame_axis else v
               for k, v in self.tensors.items()}
        fixed = tuple(i for i, frame in enumerate(indices.tolist()) if frame in self.fixed_frames)
        return replace(self, tensors=cut, fixed_frames=fixed)

    def take(self, indices: torch.Tensor) -> Conditioning:
        """The entries `indices` of a batch of conditionings (one per frame or clip, batch first in every tensor)."""
        return replace(self, tensors={k: v.index_select(0, indices.to(v.device)) for k, v in self.tensors.items()})

    @staticmethod
    def stacked(parts: list[Conditioning]) -> Conditioning:
        """Conditionings of the same kind as one batch (in order), e.g. every frame's of a clip."""
        tensors = {k: torch.cat([p.tensors[k] for p in parts]) for k in parts[0].tensors}
        return Conditioning(tensors, parts[0].frame_axis, parts[0].fixed_frames)

    def without_fixed(self) -> Conditioning:
        """The same conditioning with no frame given clean (stage 2's single frames are all learnt)."""
        return replace(self, fixed_frames=())

    def merged(self, other: Conditioning) -> Conditioning:
        """Both conditionings' tensors in one (a prompt's and an image's)."""
        return Conditioning(self.tensors | other.tensors, self.frame_axis | other.frame_axis,
                            tuple(sorted(set(self.fixed_frames) | set(other.fixed_frames))))

    def to(self, device: torch.device | str) -> Conditioning:
        return replace(self, tensors={k: v.to(device) for k, v in self.tensors.items()})


@dataclass(frozen=True)
class VideoGeometry:
    """What sizes of video a backbone accepts and how pixels map to latent frames and tokens."""

    temporal_stride: int  # pixel frames per latent frame (after the first)
    spatial_stride: int  # pixels per latent cell
    patch: tuple[int, int, int]  # transformer patch (t, h, w) in latent cells

    @property
    def size_multiple(self) -> int:
        return self.spatial_stride * self.patch[1]

    def valid_frames(self, pixel_frames: int) -> bool:
        return pixel_frames >= 1 and (pixel_frames - 1) % self.temporal_stride == 0

    def latent_frames(self, pixel_frames: int) -> int:
        return (pixel_frames - 1) // self.temporal_stride + 1

    def pixel_frames(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.temporal_stride + 1

    def token_grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(frames, rows, cols) of the transformer's tokens for a clip of this many pixel frames and pixels."""
        pt, ph, pw = self.patch
        stride = self.spatial_stride
        return self.latent_frames(frames) // pt, height // stride // ph, width // stride // pw

    def latent_grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(frames, rows, columns) of the latents (the method's layout, `encode_video`) of a clip of this size."""
        return self.latent_frames(frames), height // self.spatial_stride, width // self.spatial_stride

    @property
    def frames_rule(self) -> str:
        """The pixel frame counts the backbone takes, as users read them ("4k+1")."""
        return f"{self.temporal_stride}k+1" if self.temporal_stride > 1 else "any count"

    @property
    def min_frames(self) -> int:
        """Fewest pixel frames with motion: two latent frames (a family may need more, e.g. CogVideoX)."""
        return self.pixel_frames(2)

    def largest_valid_frames(self, pixel_frames: int) -> int:
        """The most pixel frames the backbone takes that fit in `pixel_frames` (0 if none)."""
        return self.pixel_frames(self.latent_frames(pixel_frames)) if pixel_frames >= 1 else 0

    def check(self, frames: int, height: int, width: int) -> None:
        """Raise ValueError naming the first size this backbone cannot take."""
        if not self.valid_frames(frames):
            lo = self.pixel_frames(max(1, self.latent_frames(frames)))
            raise InputError(
                f"frames must be {self.frames_rule} (got {frames}; nearest valid: {lo} or "
                f"{lo + self.temporal_stride})"
            )
        m = self.size_multiple
        for name, value in (("height", height), ("width", width)):
            if value <= 0 or value % m:
                raise InputError(f"{name} must be a positive multiple of {m} (got {value})")
