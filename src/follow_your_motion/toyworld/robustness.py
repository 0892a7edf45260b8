"""Robustness clips (issue 14): reference videos drawn outside the ShapesWorld renderer, from random programs.

The held-out ShapesWorld suites are drawn by ``render`` with its own programs, so a model tuned and judged
on them may lean on how that renderer draws. These clips share only its colour names and shape names: one
object in a *shade* of a named colour (each channel up to ``SHADE`` off the pure value), drawn with
anti-aliased edges (``SUPERSAMPLE``² samples per pixel, where the renderer draws hard edges) on black, at
any of several sizes, lengths and frame rates, following a random path of one ``KINDS``:

smooth       per axis a sum of two sinusoids of random low frequencies (0.5-2 cycles per clip) and phases:
             Lissajous-like curves, no two alike;
corners      constant speed along a polyline with sharp turns: a zigzag, a square or triangle loop, or a
             random polyline whose every turn is at least 60 degrees;
stop-and-go  along a random quadratic Bezier curve in two or three moves with pauses between them, each
             move accelerating from rest and braking to rest.

Bounds (fractions of the frame): object size 0.15-0.35 of min(H, W) (diameter,
side, or the triangle's base and height); amplitude (half the range of the centroid's path) at most 0.35
of the frame's width in x and of its height in y; speed (centroid step between consecutive frames) at most
0.25 of min(H, W); the object fully in frame. ``track`` is the exact centroid (x, y) in pixels (pixel
centres at integers, as ``render.track_colour`` counts them) of the drawn coverage in every frame.

Deterministic: clip ``index`` of seed ``seed`` draws from ``numpy.random.default_rng((seed, index))``, so
it is the same in a set of any size. The default seed (2026) has not been used to tune anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .render import COLOURS, SHAPES

KINDS: tuple[str, ...] = ("smooth", "corners", "stop-and-go")
SIZES: tuple[tuple[int, int], ...] = ((32, 32), (48, 48), (64, 64), (48, 64), (64, 48), (32, 48))  # (H, W)
FRAME_COUNTS: tuple[int, ...] = (9, 13, 17, 25)
FRAME_RATES: tuple[float, ...] = (8.0, 12.0, 24.0)
SHADE = 40  # 0..255 per channel: within segment_colour's tolerance of the pure colour, before any codec
OBJECT_SIZE = (0.15, 0.35)  # of min(H, W)
MIN_AMPLITUDE, MAX_AMPLITUDE = 0.1, 0.35  # half the path's range, of the frame's width (x) / height (y)
MAX_SPEED = 0.25  # centroid step per frame, of min(H, W)
SUPERSAMPLE = 8
DEFAULT_SEED = 2026
_SHRINK = 0.99  # a drawn track over a bound (rasterisation moves a centroid by hundredths of a pixel) is
#                 redrawn this much smaller about its centre until it is within


@dataclass(frozen=True)
class RobustClip:
    """One reference clip and what it was drawn from."""

    id: str
    kind: str
    colour: str  # the named colour the shade is of
    rgb: tuple[int, int, int]  # the shade drawn
    shape: str
    size: float  # object size, of min(H, W)
    fps: float
    frames: np.ndarray  # (T, H, W, 3) uint8
    track: np.ndarray  # (T, 2) exact centroid (x, y) of the drawn object, pixels
    centres: np.ndarray  # (T, 2) centre (x, y) of the object's bounding box, pixels
    target_colour: str
    target_shape: str

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape}"

    @property
    def target_prompt(self) -> str:
        return f"a {self.target_colour} {self.target_shape}"

    @property
    def shade_offset(self) -> int:
        """How far the shade is from its pure colour: the largest channel difference (0..255)."""
        return max(abs(v - p) for v, p in zip(self.rgb, COLOURS[self.colour], strict=True))

    @property
    def amplitude(self) -> tuple[float, float]:
        """Half the range of the track in x and y, of the frame's width and height."""
        h, w = self.frames.shape[1:3]
        half = (self.track.max(0) - self.track.min(0)) / 2
        return float(half[0] / w), float(half[1] / h)

    @property
    def speed(self) -> float:
        """The largest step of the track between consecutive frames, of min(H, W)."""
        return float(np.linalg.norm(np.diff(self.track, axis=0), axis=1).max() / min(self.frames.shape[1:3]))


# ------------------------------------------------------------------------------------------ the paths
# Each returns (T, 2) offsets scaled per axis to the range [-1, 1] (``_unit``); placement scales them later.


def _unit(path: np.ndarray) -> np.ndarray:
    lo, hi = path.min(0), path.max(0)
    return (path - (lo + hi) / 2) / np.maximum((hi - lo) / 2, 1e-9)


def _smooth(rng: np.random.Generator, u: np.ndarray) -> np.ndarray:
    axes = []
    for _ in range(2):
        f1, f2 = rng.choice((0.5, 1.0, 1.5, 2.0), size=2, replace=False)
        p1, p2 = rng.uniform(0, 2 * np.pi, size=2)
        axes.append(np.sin(2 * np.pi * f1 * u + p1) + rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * f2 * u + p2))
    return _unit(np.stack(axes, 1))


def _turns_sharp(vertices: np.ndarray, min_degrees: float = 60.0) -> bool:
    seg = np.diff(vertices, axis=0)
    cos = (seg[:-1] * seg[1:]).sum(1) / (np.linalg.norm(seg[:-1], axis=1) * np.linalg.norm(seg[1:], axis=1))
    return bool((cos <= np.cos(np.radians(min_degrees))).all())


def _polyline(rng: np.random.Generator) -> np.ndarray:
    """Vertices of a zigzag, a closed square or triangle loop, or a random polyline with sharp turns."""
    pattern = rng.choice(("zigzag", "square", "triangle", "polyline"))
    if pattern == "zigzag":
        n = int(rng.integers(3, 6))
        ys = np.where(np.arange(n + 1) % 2 == 0, 1.0, -1.0) * rng.choice((-1.0, 1.0))
        vertices = np.stack([np.linspace(-1, 1, n + 1), ys], 1)
        vertices = vertices[:, ::-1] if rng.random() < 0.5 else vertices  # vertical zigzag
    elif pattern in ("square", "triangle"):
        corners = ([(-1, -1), (1, -1), (1, 1), (-1, 1)] if pattern == "square" else [(0, -1), (1, 1), (-1, 1)])
        vertices = np.roll(np.asarray(corners, float), -int(rng.integers(len(corners))), axis=0)
        vertices = np.concatenate([vertices, vertices[:1]])  # closed
    else:
        while True:
            vertices = rng.uniform(-1, 1, size=(int(rng.integers(4, 6)), 2))
            if _turns_sharp(vertices) and (np.linalg.norm(np.diff(vertices, axis=0), axis=1) > 0.6).all():
                break
    return vertices[::-1] if rng.random() < 0.5 else vertices  # either direction


def _corners(rng: np.random.Generator, u: np.ndarray) -> np.ndarray:
    vertices = _polyline(rng)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(vertices, axis=0), axis=1))])
    s = u * arc[-1]  # constant speed along the polyline
    return _unit(np.stack([np.interp(s, arc, vertices[:, 0]), np.interp(s, arc, vertices[:, 1])], 1))


def _stop_and_go(rng: np.random.Generator, u: np.ndarray) -> np.ndarray:
    while True:
        start, control, end = rng.uniform(-1, 1, size=(3, 2))
        if np.linalg.norm(end - start) >= 1.0:
            break
    moves = int(rng.integers(2, 4))
    pause = rng.uniform(0.2, 0.4) / (moves - 1)  # each pause's share of the clip
    move = (1 - pause * (moves - 1)) / moves
    shares = rng.dirichlet(np.full(moves, 4.0))  # how much of the curve each move covers
    progress = np.zeros_like(u)
    done, t0 = 0.0, 0.0
    for share in shares:
        local = np.clip((u - t0) / move, 0.0, 1.0)
        progress = np.where(u >= t0, done + share * (3 * local**2 - 2 * local**3), progress)  # smoothstep
        done, t0 = done + share, t0 + move + pause
    b = progress[:, None]
    return _unit((1 - b) ** 2 * start + 2 * (1 - b) * b * control + b**2 * end)


_PATHS = {"smooth": _smooth, "corners": _corners, "stop-and-go": _stop_and_go}


# ------------------------------------------------------------------------------------------ drawing


def _inside(shape: str, xx: np.ndarray, yy: np.ndarray, x: float, y: float, r: float) -> np.ndarray:
    """Sample points inside the shape whose bounding box is the square of half-side `r` centred on (x, y)."""
    if shape == "circle":
        return (xx - x) ** 2 + (yy - y) ** 2 <= r * r
    if shape == "square":
        return (np.abs(xx - x) <= r) & (np.abs(yy - y) <= r)
    return (yy <= y + r) & (np.abs(xx - x) <= (yy - (y - r)) / 2)  # triangle: apex up, base 2r wide


def draw(shape: str, rgb: tuple[int, int, int], centres: np.ndarray, diameter: float, height: int, width: int
         ) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, H, W, 3) uint8, exact centroids (T, 2)): the shape anti-aliased on black at each centre.

    Pixel (i, j) covers [j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]; its value is the colour times the share of
    its ``SUPERSAMPLE``² sample points inside the shape, and the centroid is that coverage's mean position."""
    offsets = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE - 0.5
    ys = (np.arange(height)[:, None] + offsets[None, :]).reshape(-1)
    xs = (np.arange(width)[:, None] + offsets[None, :]).reshape(-1)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    frames, track = [], []
    for x, y in centres:
        inside = _inside(shape, xx, yy, float(x), float(y), diameter / 2).astype(np.float64)
        cover = inside.reshape(height, SUPERSAMPLE, width, SUPERSAMPLE).mean(axis=(1, 3))
        frames.append(np.rint(cover[..., None] * np.asarray(rgb, np.float64)).astype(np.uint8))
        total = cover.sum()
        track.append(((cover.sum(0) * np.arange(width)).sum() / total,
                      (cover.sum(1) * np.arange(height)).sum() / total))
    return np.stack(frames), np.asarray(track)


def shade(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    """The colour with every channel moved by up to ``SHADE``: inwards from 0 and 255 (so it stays in 0..255),
    either way otherwise."""
    out = []
    for value in COLOURS[colour]:
        step = int(rng.integers(0, SHADE + 1))
        sign = -1 if value == 255 else 1 if value == 0 else int(rng.choice((-1, 1)))
        out.append(value + sign * step)
    return out[0], out[1], out[2]


def _place(rng: np.random.Generator, path: np.ndarray, diameter: float, height: int, width: int) -> np.ndarray:
    """Bounding-box centres (T, 2) in pixels: the unit path at a random amplitude that fits the frame (and the
    speed bound), at a random place where the object stays fully in frame."""
    frame = np.asarray([width, height], np.float64)
    room = (frame - diameter) / 2  # the most half-range that keeps the box inside [-0.5, side - 0.5]
    amplitude = np.minimum(rng.uniform(MIN_AMPLITUDE, MAX_AMPLITUDE, size=2) * frame, room)
    offsets = path * amplitude
    step = np.linalg.norm(np.diff(offsets, axis=0), axis=1).max()
    limit = MAX_SPEED * min(height, width)
    if step > limit:
        offsets *= limit / step
    half = np.abs(offsets).max(0)
    lo, hi = diameter / 2 - 0.5 + half, frame - 0.5 - diameter / 2 - half
    return offsets + rng.uniform(lo, hi)


def make_clip(index: int, seed: int = DEFAULT_SEED) -> RobustClip:
    """Clip `index` of the set drawn with `seed` (its kind: ``KINDS[index % len(KINDS)]``)."""
    if index < 0 or seed < 0:
        raise InputError(f"clip index and seed must be >= 0, got index {index}, seed {seed}")
    rng = np.random.default_rng((seed, index))
    kind = KINDS[index % len(KINDS)]
    height, width = SIZES[int(rng.integers(len(SIZES)))]
    num_frames = int(rng.choice(FRAME_COUNTS))
    fps = float(rng.choice(FRAME_RATES))
    colour, target_colour = (str(c) for c in rng.choice(tuple(COLOURS), size=2, replace=False))
    shape, target_shape = (str(s) for s in rng.choice(SHAPES, size=2, replace=False))
    size = float(rng.uniform(*OBJECT_SIZE))
    diameter = size * min(height, width)
    rgb = shade(rng, colour)
    centres = _place(rng, _PATHS[kind](rng, np.linspace(0.0, 1.0, num_frames)), diameter, height, width)
    while True:
        frames, track = draw(shape, rgb, centres, diameter, height, width)
        clip = RobustClip(f"{index:03d}-{kind}", kind, colour, rgb, shape, size, fps, frames, track, centres,
                          target_colour, target_shape)
        if clip.speed <= MAX_SPEED and max(clip.amplitude) <= MAX_AMPLITUDE:
            return clip
        middle = (centres.max(0) + centres.min(0)) / 2
        centres = middle + _SHRINK * (centres - middle)


def make_set(count: int = 24, seed: int = DEFAULT_SEED) -> list[RobustClip]:
    """Clips 0 .. count - 1 of `seed`: the kinds take turns, so each has count / len(KINDS) of them."""
    if count < 1:
        raise InputError(f"count must be >= 1, got {count}")
    return [make_clip(i, seed) for i in range(count)]
