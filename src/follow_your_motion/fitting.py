"""Fit a reference clip to a backbone: at what rate, how many frames and what size to tune at, when the user did
not say.

Frames are taken at the model's rate (`video.fps`, the recipe's), or one for one from a clip that plays slower
(repeated frames would carry no motion); a clip longer than that window is cut to it from `video.start` on. A
clip shorter than the recipe's frame count uses the most frames it has that the backbone takes (Wan: 4k+1); a
clip of another shape keeps its orientation at about the recipe's pixel count. Each choice that differs from
the recipe, and a window or an enlargement the user may not expect, comes back as one line for the user; a clip
that cannot be used is refused naming the option that would help. Everything here works on a clip's
`VideoInfo`: nothing is decoded.
"""

from __future__ import annotations

import math

from .backbones.inputs import VideoGeometry
from .config import VideoSettings
from .errors import InputError
from .video import VideoInfo, round_half_up

ASPECT_TOLERANCE = 0.03  # a clip within 3% of the recipe's aspect (or its transpose) takes the recipe's size
UPSCALE_NOTE = 2.0  # a clip enlarged more than this many times per side to the working size gets a note


def available_frames(clip: VideoInfo, fps: float | None, start: float) -> int:
    """How many frames `video.frame_indices` can take from `clip` from `start` s on (at `fps`, if given)."""
    total = clip.num_frames
    if fps is None:
        return max(0, total - int(round_half_up(start * clip.fps)))
    n = max(0, math.floor(((total - 0.5) / clip.fps - start) * fps) + 2)
    while n > 0 and round_half_up((start + (n - 1) / fps) * clip.fps) > total - 1:
        n -= 1
    return n


def fit_rate(video: VideoSettings, clip: VideoInfo, name: str) -> tuple[float | None, str | None]:
    """(rate, note or None): `video.fps`, or the clip's own rate when it plays slower (its frames one for one:
    a frame repeated to reach the model's rate carries no motion, and would let a too-short clip pass)."""
    if video.fps is None or video.fps <= clip.fps:
        return video.fps, None
    return clip.fps, (f"{name}: clip plays at {clip.fps:g} fps, slower than the {video.fps:g} fps asked (video.fps, "
                      f"--fps): tuning on its own frames, so its motion will play {video.fps / clip.fps:.2g}x as fast")


def window_note(video: VideoSettings, clip: VideoInfo, frames: int, name: str) -> str | None:
    """A line naming the seconds of the clip tuned on, when that is not the whole clip (None otherwise)."""
    if video.fps is None or not (video.start or available_frames(clip, video.fps, video.start) > frames):
        return None
    end = video.start + frames / video.fps
    return (f"{name}: clip is {clip.seconds:.2f} s long: tuning on {video.start:.2f}-{end:.2f} s of it ({frames} "
            f"frames at {video.fps:g} fps); --start S tunes on another window, --fps R at another rate")


def upscale_note(clip: VideoInfo, height: int, width: int, name: str) -> str | None:
    """A line saying how much a clip much smaller than the working size is enlarged (None otherwise)."""
    scale = max(height / clip.height, width / clip.width)  # `video.resize_center_crop` covers the size
    if scale <= UPSCALE_NOTE:
        return None
    return (f"{name}: clip is {clip.height}x{clip.width}, upscaled {scale:.3g}x per side to {height}x{width}: it "
            "holds no detail at that size; use a larger clip or a smaller --size")


def _where(fps: float | None, start: float) -> str:
    parts = [f"at --fps {fps:g}"] if fps else []
    if start:
        parts.append(f"from --start {start:g}s")
    return f" ({' '.join(parts)})" if parts else ""


def fit_frames(video: VideoSettings, clip: VideoInfo, geometry: VideoGeometry, name: str) -> tuple[int, str | None]:
    """(frame count, note or None): the given count if the clip has it; else the recipe's, or fewer."""
    have = available_frames(clip, video.fps, video.start)
    largest = geometry.largest_valid_frames(have)
    skipping = video.fps if video.fps and video.fps < clip.fps else None  # a rate that leaves frames out
    where = _where(skipping, video.start)
    fixes = ["a longer clip"] + (["a higher --fps"] if skipping else []) + (["an earlier --start"] if video.start
                                                                             else [])
    if largest < geometry.min_frames:
        raise InputError(
            f"{name}: clip has {have} frames{where}, but motion transfer on this model needs at least "
            f"{geometry.min_frames} ({geometry.frames_rule}; fewer have no motion to learn): use {' or '.join(fixes)}"
        )
    if video.frames is not None:
        if video.frames > have:
            raise InputError(
                f"{name}: clip has {have} frames{where}, but --frames (video.frames) asks for {video.frames}: "
                f"pass --frames {largest} or fewer, or use {' or '.join(fixes)}"
            )
        return video.frames, None
    if largest >= video.auto_frames:
        return geometry.largest_valid_frames(video.auto_frames), None
    return largest, (f"{name}: clip has {have} frames{where}, fewer than the recipe's {video.auto_frames}: tuning on "
                     f"{largest} ({geometry.frames_rule}); --frames N chooses")


def nearest_size(height: int, width: int, pixels: int, multiple: int) -> tuple[int, int]:
    """The (height, width), multiples of `multiple`, closest to `pixels` pixels at the aspect width / height:
    of the four neighbours of the exact size, the one with the least relative error in area plus aspect."""
    aspect = width / height
    exact_h = math.sqrt(pixels / aspect)
    exact_w = exact_h * aspect

    def options(x: float) -> set[int]:
        return {max(multiple, math.floor(x / multiple) * multiple), max(multiple, math.ceil(x / multiple) * multiple)}

    def error(size: tuple[int, int]) -> float:
        h, w = size
        return abs(h * w / pixels - 1) + abs((w / h) / aspect - 1)

    return min(((h, w) for h in options(exact_h) for w in options(exact_w)), key=lambda s: (error(s), s))


def fit_size(video: VideoSettings, clip: VideoInfo, geometry: VideoGeometry, name: str
             ) -> tuple[tuple[int, int], str | None]:
    """((height, width), note or None): the given size; else the recipe's, transposed for a clip of the other
    orientation, or the nearest valid size at the clip's aspect when it is neither."""
    if video.height is not None and video.width is not None:
        return (video.height, video.width), None
    clip_h, clip_w = clip.height, clip.width
    rec_h, rec_w = video.auto_size
    aspect = clip_w / clip_h
    if abs(aspect / (rec_w / rec_h) - 1) <= ASPECT_TOLERANCE:
        return (rec_h, rec_w), None
    if abs(aspect / (rec_h / rec_w) - 1) <= ASPECT_TOLERANCE:
        size = (rec_w, rec_h)
    else:
        size = nearest_size(clip_h, clip_w, rec_h * rec_w, geometry.size_multiple)
    return size, (f"{name}: clip is {clip_h}x{clip_w} (height x width): tuning at {size[0]}x{size[1]}, the recipe's "
                  f"{rec_h}x{rec_w} pixel count at the clip's shape; --size HxW chooses")


def fit_video(video: VideoSettings, clip: VideoInfo, geometry: VideoGeometry, name: str
              ) -> tuple[VideoSettings, list[str]]:
    """`video` with the rate, frames, height and width all set for `clip`, and a line for each choice made for
    the user."""
    fps, rate_note = fit_rate(video, clip, name)
    video = video.model_copy(update={"fps": fps})
    frames, frames_note = fit_frames(video, clip, geometry, name)
    (height, width), size_note = fit_size(video, clip, geometry, name)
    fitted = video.model_copy(update={"frames": frames, "height": height, "width": width})
    VideoSettings.model_validate(fitted.model_dump())
    window = None if frames_note else window_note(fitted, clip, frames, name)  # a short clip is all used
    notes = (rate_note, window, frames_note, size_note, upscale_note(clip, height, width, name))
    return fitted, [note for note in notes if note]
