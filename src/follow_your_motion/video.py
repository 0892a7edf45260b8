"""Video input/output: read a user's reference clip, fit it to the model, write results.

Everything is decoded and encoded with PyAV so the same code reads mp4, webm, mov and gif. Frames travel as
uint8 RGB arrays of shape (T, H, W, 3); `to_tensor` / `from_tensor` convert to the (3, T, H, W) [-1, 1]
layout that video VAEs take. Bad input raises `VideoError` with a one-line message naming the file.

A reference is never decoded whole: `probe_video` learns its frame count, rate and size from the container's
packets (decoding one frame), and `read_frames` seeks to the window a run uses and keeps only the frames it
picks, each resized as it is decoded, so memory is bounded by the window at the working size whatever the
clip's length and resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from PIL import Image

from .errors import InputError
from .runs import atomic_write

MAX_SIDE = 8192  # wider/taller frames are almost surely corrupt metadata, and would not fit the model anyway
DEFAULT_FPS = 24.0  # used when neither the container nor the frame timestamps tell the rate (some gifs)

# suffix -> (container format, codec, pixel format, encoder options)
_ENCODERS = {
    # mbtree off: x264's macroblock-tree rate control made tiny videos differ from run to run
    ".mp4": ("mp4", "libx264", "yuv420p", {"crf": "18", "preset": "medium", "x264-params": "mbtree=0"}),
    ".webm": (
        "webm",
        "libvpx-vp9",
        "yuv420p",
        {"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8"},
    ),
    ".gif": ("gif", "gif", "pal8", {}),
}


class VideoError(InputError):
    """Bad video input; message names the file and the problem."""


@dataclass(frozen=True)
class VideoClip:
    """Decoded frames plus the rate they play at, so time-based frame selection stays possible."""

    frames: np.ndarray  # uint8, shape (T, H, W, 3), RGB
    fps: float

    @property
    def info(self) -> VideoInfo:
        return VideoInfo(len(self.frames), self.fps, *self.frames.shape[1:3])


@dataclass(frozen=True)
class VideoInfo:
    """What a clip is, known without decoding its pictures: frame count, rate and size; `timestamps`: each
    frame's presentation time in its stream's units, in order (None where the container does not tell them)."""

    num_frames: int
    fps: float
    height: int  # as displayed: a phone clip's rotation applied
    width: int
    timestamps: tuple[int, ...] | None = field(default=None, repr=False)
    rotation: int = 0  # quarter turns counter-clockwise that display the stored picture (a phone's display matrix)

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps


def _check_frames(frames: np.ndarray, what: str = "frames") -> None:
    """Reject anything that is not a non-empty uint8 (T, H, W, 3) video, before it reaches an encoder."""
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise ValueError(f"{what} must be a uint8 numpy array, got {getattr(frames, 'dtype', type(frames))}")
    if frames.ndim != 4 or frames.shape[3] != 3 or min(frames.shape) < 1:
        raise ValueError(f"{what} must have shape (T>=1, H>=1, W>=1, 3), got {frames.shape}")


def _check_size(path: Path, height: int, width: int) -> None:
    """Fail fast on empty or absurdly large frames (corrupt metadata) before decoding any."""
    if height < 1 or width < 1:
        raise VideoError(f"{path}: frames have zero size ({width}x{height})")
    if height > MAX_SIDE or width > MAX_SIDE:
        raise VideoError(f"{path}: frame size {width}x{height} exceeds the {MAX_SIDE} pixel limit")


def _check_path(path: Path) -> None:
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, not a video file")
    if not path.exists():
        raise VideoError(f"{path}: file not found")


def _unreadable(path: Path, err: av.FFmpegError) -> VideoError:
    reason = getattr(err, "strerror", None) or type(err).__name__
    return VideoError(f"{path}: not a readable video ({reason})")


def probe_video(path: str | Path) -> VideoInfo:
    """A video file's frame count, rate and size: every packet is read (not decoded) to count the frames
    exactly, and the first frame is decoded, so a file that does not decode is refused here."""
    path = Path(path)
    _check_path(path)
    stamps: list[int | None] = []
    first = None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: contains no video stream")
            stream = container.streams.video[0]
            if stream.codec_context.height and stream.codec_context.width:  # some containers only know it later
                _check_size(path, stream.codec_context.height, stream.codec_context.width)
            for packet in container.demux(stream):
                if not packet.size:  # the demuxer's closing empty packet
                    continue
                stamps.append(packet.pts)
                if first is None:
                    first = next(iter(packet.decode()), None)
            if first is None and stamps:  # a decoder that holds frames back until it is flushed
                first = next(iter(stream.codec_context.decode(None)), None)
            rate = float(stream.average_rate) if stream.average_rate else 0.0
            time_base = float(stream.time_base) if stream.time_base else 0.0
    except av.FFmpegError as e:
        raise _unreadable(path, e) from e
    if first is None:
        raise VideoError(f"{path}: no frames could be decoded")
    _check_size(path, first.height, first.width)
    known = None not in stamps and len(set(stamps)) == len(stamps)
    timestamps = tuple(sorted(stamps)) if known else None
    if not rate and timestamps and len(timestamps) > 1 and timestamps[-1] > timestamps[0] and time_base:
        rate = (len(timestamps) - 1) / ((timestamps[-1] - timestamps[0]) * time_base)
    turns = round((first.rotation or 0) / 90) % 4  # phones store portrait clips landscape, with a display matrix
    height, width = (first.width, first.height) if turns % 2 else (first.height, first.width)
    return VideoInfo(len(stamps), rate or DEFAULT_FPS, height, width, timestamps, turns)


class _Unplaced(Exception):
    """A decoded frame's timestamp is not one the probe saw: fall back to counting frames from the start."""


def read_frames(path: str | Path, info: VideoInfo, indices: np.ndarray | list[int],
                size: tuple[int, int] | None = None) -> np.ndarray:
    """Frames `indices` (0-based, in any order, repeats allowed) of the video `info` describes, each resized
    and centre-cropped to `size` (height, width) as soon as it is decoded: decoding starts at the keyframe
    before the first one wanted and stops after the last, and no other frame is converted or kept."""
    path = Path(path)
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0 or indices.min() < 0 or indices.max() >= info.num_frames:
        raise ValueError(f"frame indices must lie in [0, {info.num_frames}), got {indices.tolist()}")
    height, width = size or (info.height, info.width)
    out = np.empty((len(indices), height, width, 3), np.uint8)
    where: dict[int, list[int]] = {}
    for position, index in enumerate(indices.tolist()):
        where.setdefault(index, []).append(position)
    try:
        try:
            filled = _decode_into(path, info, where, out, size, seek=info.timestamps is not None)
        except _Unplaced:
            filled = _decode_into(path, info, where, out, size, seek=False)
    except av.FFmpegError as e:
        raise _unreadable(path, e) from e
    if filled != len(where):
        raise VideoError(f"{path}: frame {max(where)} could not be decoded (the file ends early)")
    return out


def _decode_into(path: Path, info: VideoInfo, where: dict[int, list[int]], out: np.ndarray,
                 size: tuple[int, int] | None, seek: bool) -> int:
    """Decode the frames of `where` into their rows of `out`; how many distinct frames were found."""
    last, filled = max(where), 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if seek:
            position = {stamp: i for i, stamp in enumerate(info.timestamps)}
            container.seek(info.timestamps[min(where)], stream=stream)  # the keyframe at or before it
        for count, frame in enumerate(container.decode(stream)):
            index = position.get(frame.pts) if seek else count
            if index is None:
                raise _Unplaced
            if index in where:
                rows = _rgb(frame, info)[None]
                out[where[index]] = resize_center_crop(rows, *size) if size else rows
                filled += 1
            if index >= last:
                break
    return filled


def _rgb(frame: av.VideoFrame, info: VideoInfo) -> np.ndarray:
    """One decoded frame as uint8 (H, W, 3) RGB at the clip's full size, turned as it is displayed (the only
    full-size copy a read holds)."""
    stored = (info.width, info.height) if info.rotation % 2 else (info.height, info.width)
    rgb = frame.reformat(width=stored[1], height=stored[0], format="rgb24").to_ndarray()
    return np.ascontiguousarray(np.rot90(rgb, info.rotation)) if info.rotation else rgb


def read_video(path: str | Path, max_frames: int | None = None) -> VideoClip:
    """Decode (at most `max_frames` of) a video file to RGB frames at full size; any PyAV-readable format works.
    For a clip a run tunes on, `load_reference` decodes only its window."""
    path = Path(path)
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    info = probe_video(path)
    count = min(info.num_frames, max_frames or info.num_frames)
    return VideoClip(read_frames(path, info, np.arange(count)), info.fps)


def read_image(path: str | Path) -> np.ndarray:
    """An image file (any format Pillow reads) as uint8 (H, W, 3) RGB; bad input raises VideoError naming it."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            frame = np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as err:
        raise VideoError(f"{path}: not a readable image ({err})") from err
    _check_size(path, *frame.shape[:2])
    return frame


def round_half_up(x: np.ndarray) -> np.ndarray:
    """Round half up (not to even), with slack for float noise such as 0.1 * 30 = 3.0000000000000004."""
    return np.floor(np.asarray(x) + 0.5 + 1e-9).astype(np.int64)


def frame_indices(total: int, src_fps: float, num_frames: int, fps: float | None = None, start: float = 0.0
                  ) -> tuple[np.ndarray, float]:
    """(indices, rate): which `num_frames` of a clip of `total` frames at `src_fps` to take from `start` s on:
    spread over the rest of the clip, or at `fps`. Without `fps` the rate keeps the selection's real-time
    duration (sparser picks play slower)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if start < 0 or not math.isfinite(start):
        raise ValueError(f"start must be a finite number of seconds >= 0, got {start}")
    if fps is None:
        first = int(round_half_up(start * src_fps))
        if total - first < num_frames:
            after = f" ({max(total - first, 0)} after {start:g}s)" if first else ""
            raise VideoError(f"clip has {total} frames{after}, but {num_frames} are needed")
        idx = round_half_up(np.linspace(first, total - 1, num_frames))
        span = idx[-1] - idx[0]
        return idx, src_fps * (num_frames - 1) / span if span else src_fps
    if fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a finite number > 0, got {fps}")
    last_t = start + (num_frames - 1) / fps
    idx = round_half_up((start + np.arange(num_frames) / fps) * src_fps)
    if idx[-1] > total - 1:
        raise VideoError(
            f"clip is {total / src_fps:.3f}s long ({total} frames at {src_fps:g} fps), but {num_frames} frames "
            f"at {fps:g} fps from {start:g}s need a frame at {last_t:.3f}s"
        )
    return idx, float(fps)


def select_frames(clip: VideoClip, num_frames: int, fps: float | None = None, start: float = 0.0) -> VideoClip:
    """Pick exactly `num_frames` frames of a decoded clip from `start` s on (`frame_indices`)."""
    idx, rate = frame_indices(len(clip.frames), clip.fps, num_frames, fps, start)
    return VideoClip(clip.frames[idx], rate)


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize every frame; area averaging when shrinking avoids aliasing, cubic keeps edges when enlarging."""
    if frames.shape[1:3] == (height, width):
        return frames
    shrink = height * width < frames.shape[1] * frames.shape[2]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale to cover (height, width) keeping the aspect ratio, then crop the center: no bars, no stretch."""
    _check_frames(frames)
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be > 0, got {height}x{width}")
    h, w = frames.shape[1:3]
    scale = max(height / h, width / w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    frames = resize_frames(frames, new_h, new_w)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return np.ascontiguousarray(frames[:, top : top + height, left : left + width])


def load_reference(
    path: str | Path, num_frames: int, height: int, width: int, fps: float | None = None, start: float = 0.0,
    info: VideoInfo | None = None,
) -> VideoClip:
    """A reference video's window as the model takes it: `num_frames` frames from `start` s on (at `fps`, else
    spread over the rest of the clip), each decoded alone and resized to (height, width); errors name the file.
    `info`: the file's `probe_video`, when it was probed already."""
    info = info or probe_video(path)
    try:
        if height < 1 or width < 1:
            raise ValueError(f"height and width must be > 0, got {height}x{width}")
        idx, rate = frame_indices(info.num_frames, info.fps, num_frames, fps=fps, start=start)
    except ValueError as e:
        raise VideoError(f"{path}: {e}") from e
    return VideoClip(read_frames(path, info, idx, (height, width)), rate)


def _palette_frame(frame: np.ndarray) -> av.VideoFrame:
    """Quantize a frame to its own 256-colour palette (GIF's limit): a pal8 frame for PyAV's gif encoder."""
    image = Image.fromarray(frame).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    rgb = np.asarray(image.getpalette()[: 3 * 256], dtype=np.uint8).reshape(-1, 3)
    palette = np.zeros((256, 4), dtype=np.uint8)  # ARGB, opaque
    palette[:, 0] = 255
    palette[: len(rgb), 1:] = rgb
    return av.VideoFrame.from_ndarray((np.asarray(image), palette), format="pal8")


def _encode(path: Path, fmt: str, frames: np.ndarray, fps: float, suffix: str) -> None:
    """Encode `frames` into `path` with the codec chosen for `suffix`."""
    _, codec, pix_fmt, options = _ENCODERS[suffix]
    if pix_fmt == "yuv420p":  # 4:2:0 chroma needs even sides; replicate the edge so 33x33 toys still encode
        frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)), "edge")
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(float(fps)).limit_denominator(1001), options=options)
        stream.height, stream.width, stream.pix_fmt = frames.shape[1], frames.shape[2], pix_fmt
        for frame in frames:
            palette = pix_fmt == "pal8"
            av_frame = _palette_frame(frame) if palette else av.VideoFrame.from_ndarray(frame, format="rgb24")
            container.mux(stream.encode(av_frame))
        container.mux(stream.encode())


def write_video(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """Write uint8 (T, H, W, 3) RGB frames as .mp4 (H.264), .webm (VP9) or .gif, chosen by suffix.

    The file is encoded next to its destination and moved into place, so a failed write never leaves a
    half-overwritten result. GIF stores delays in 1/100 s, so its fps is only exact for divisors of 100.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _ENCODERS:
        formats = ", ".join(_ENCODERS)
        raise VideoError(f"{path}: unsupported output format {suffix or '(no suffix)'}; use one of {formats}")
    _check_frames(frames)
    if not fps > 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a finite number > 0, got {fps}")
    return atomic_write(path, lambda tmp: _encode(tmp, _ENCODERS[suffix][0], frames, fps, suffix))


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 4) -> np.ndarray:
    """Place two videos next to each other for comparison, matching heights and lengths, black gap between."""
    _check_frames(left, "left")
    _check_frames(right, "right")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    height = left.shape[1]
    if right.shape[1] != height:
        right = resize_frames(right, height, max(1, round(right.shape[2] * height / right.shape[1])))
    length = max(len(left), len(right))
    left, right = (np.concatenate([v, np.repeat(v[-1:], length - len(v), axis=0)]) for v in (left, right))
    black = np.zeros((length, height, gap, 3), dtype=np.uint8)
    return np.concatenate([left, black, right], axis=2)


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (3, T, H, W) in [-1, 1], the layout video VAEs take (no batch dim)."""
    _check_frames(frames)
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float()
    return (video / 127.5 - 1.0).contiguous()


def from_tensor(video: torch.Tensor) -> np.ndarray:
    """float (3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3); out-of-range values are clamped, then rounded."""
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"video must have shape (3, T, H, W), got {tuple(video.shape)}")
    pixels = ((video.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).contiguous().numpy()
