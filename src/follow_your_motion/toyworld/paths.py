"""Random paths for the toy model's motion prior: clips whose objects move along paths from broad families,
captioned with their appearance only, so that an appearance-only prompt can draw many different motions (as a
real text-to-video model can) and a motion LoRA steers a motion the model already knows how to draw.

A path is a shape in time and a timing along it. Shapes (``FAMILIES``):

curve     per axis a sum of two or three sinusoids of random frequency (0.25-1.25 cycles per clip) and phase;
ellipse   an arc of a circle or ellipse: 0.25 to 1.25 turns either way, any start angle, axis ratio 0.3-1, any tilt;
polyline  constant speed along 2 to 6 random vertices (2: a straight line in any direction; more: corners);
bounce    a straight line reflecting off the walls of a random box (1 to 3 box widths of travel).

Timings (``TIMINGS``), how far along the shape the object is at each time: ``steady`` (uniform), ``speed-change``
(two or three spells of random speed, 5 to 1 at most between them) and ``stop-and-go`` (one or two pauses of
10-30% of the clip each). The scale: half of the path's larger range is ``AMPLITUDE`` (of the frame), at most
what keeps the object in frame, and the path is shrunk until no step between frames exceeds ``MAX_STEP``.

Every draw that comes within ``exclusion.EXCLUSION_DISTANCE`` of an evaluation path is drawn again
(``exclusion.distance_to_evaluation``), so evaluation motions stay out of pretraining by a stated distance.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .exclusion import EXCLUSION_DISTANCE, distance_to_evaluation

FAMILIES: tuple[str, ...] = ("curve", "ellipse", "polyline", "bounce")
TIMINGS: tuple[str, ...] = ("steady", "speed-change", "stop-and-go")
AMPLITUDE = (0.03, 0.4)  # half the larger range of the path, of the frame, before it is fitted
MAX_STEP = 0.2  # of the frame: the largest centre step between consecutive frames
_FINE = 256  # the timing is integrated on this grid


def _curve(rng: np.random.Generator, s: np.ndarray) -> np.ndarray:
    axes = []
    for _ in range(2):
        terms = int(rng.integers(2, 4))
        freq = rng.uniform(0.25, 1.25, terms)
        phase = rng.uniform(0, 2 * np.pi, terms)
        weight = rng.uniform(0.2, 1, terms)
        axes.append((weight[:, None] * np.sin(2 * np.pi * freq[:, None] * s + phase[:, None])).sum(0))
    return np.stack(axes, 1)


def _ellipse(rng: np.random.Generator, s: np.ndarray) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi) + rng.choice((-1.0, 1.0)) * 2 * np.pi * rng.uniform(0.25, 1.25) * s
    ratio, tilt = rng.uniform(0.3, 1.0), rng.uniform(0, np.pi)
    x, y = np.cos(angle), ratio * np.sin(angle)
    return np.stack([x * np.cos(tilt) - y * np.sin(tilt), x * np.sin(tilt) + y * np.cos(tilt)], 1)


def _polyline(rng: np.random.Generator, s: np.ndarray) -> np.ndarray:
    while True:
        vertices = rng.uniform(-1, 1, size=(int(rng.integers(2, 7)), 2))
        lengths = np.linalg.norm(np.diff(vertices, axis=0), axis=1)
        if (lengths > 0.3).all():
            break
    arc = np.concatenate([[0.0], np.cumsum(lengths)])
    return np.stack([np.interp(s * arc[-1], arc, vertices[:, k]) for k in range(2)], 1)


def _reflect(x: np.ndarray) -> np.ndarray:
    """x folded into [-1, 1] as a ball bouncing between walls at -1 and 1."""
    y = (x + 1) % 4
    return np.where(y > 2, 4 - y, y) - 1


def _bounce(rng: np.random.Generator, s: np.ndarray) -> np.ndarray:
    start = rng.uniform(-1, 1, size=2)
    heading = rng.uniform(0, 2 * np.pi)
    travel = 2 * rng.uniform(1.0, 3.0)  # box widths are 2
    box = np.array([1.0, rng.uniform(0.4, 1.0)])[:: int(rng.choice((-1, 1)))]
    return box * _reflect(start + travel * s[:, None] * np.array([np.cos(heading), np.sin(heading)]))


_SHAPES = {"curve": _curve, "ellipse": _ellipse, "polyline": _polyline, "bounce": _bounce}


def timing(rng: np.random.Generator, kind: str, u: np.ndarray) -> np.ndarray:
    """Progress along the shape (0 to 1, never decreasing) at times `u` in [0, 1]."""
    grid = (np.arange(_FINE) + 0.5) / _FINE
    speed = np.ones(_FINE)
    if kind == "speed-change":
        cuts = np.sort(rng.uniform(0.15, 0.85, int(rng.integers(1, 3))))
        speed = rng.uniform(0.2, 1.0, len(cuts) + 1)[np.searchsorted(cuts, grid)]
    elif kind == "stop-and-go":
        for _ in range(int(rng.integers(1, 3))):
            length = rng.uniform(0.1, 0.3)
            start = rng.uniform(0.0, 1.0 - length)
            speed[(grid >= start) & (grid < start + length)] = 0.0
    elif kind != "steady":
        raise InputError(f"unknown timing {kind!r}; valid: {', '.join(TIMINGS)}")
    progress = np.concatenate([[0.0], np.cumsum(speed)])
    return np.interp(u, np.linspace(0, 1, _FINE + 1), progress / progress[-1])


def draw_path(rng: np.random.Generator, num_frames: int, room: tuple[float, float], family: str | None = None,
              kind: str | None = None) -> np.ndarray:
    """(num_frames, 2) centre offsets, fractions of the frame's width and height, centred on 0: a random shape
    (`family`, default any) at a random timing (`kind`, default any), scaled to `AMPLITUDE` within `room` (the
    largest half-range that keeps the object in frame, per axis) and `MAX_STEP`. No exclusion here (see
    `draw_prior_path`)."""
    family = family or str(rng.choice(FAMILIES))
    kind = kind or str(rng.choice(TIMINGS))
    if family not in _SHAPES:
        raise InputError(f"unknown path family {family!r}; valid: {', '.join(FAMILIES)}")
    u = np.linspace(0.0, 1.0, num_frames)
    shape = _SHAPES[family](rng, timing(rng, kind, u))
    shape = shape - (shape.max(0) + shape.min(0)) / 2
    half = np.abs(shape).max(0)
    path = shape * rng.uniform(*AMPLITUDE) / max(half.max(), 1e-9)
    path *= min(1.0, *(r / max(h, 1e-12) for r, h in zip(room, np.abs(path).max(0), strict=True)))
    step = np.linalg.norm(np.diff(path, axis=0), axis=1).max() if num_frames > 1 else 0.0
    return path * min(1.0, MAX_STEP / max(step, 1e-12))


def room_for(size: float, height: int, width: int) -> tuple[float, float]:
    """The largest half-range of a centre path, per axis as a fraction of the frame, that keeps an object of
    diameter `size` (of min(H, W)) in frame (a hair less, for rounding)."""
    diameter = size * min(height, width)
    return tuple(0.999 * (side - 1 - diameter) / (2 * side) for side in (width, height))


def draw_prior_path(rng: np.random.Generator, num_frames: int, room: tuple[float, float]) -> np.ndarray:
    """`draw_path`, drawn again until it lies at least `EXCLUSION_DISTANCE` from every evaluation path."""
    while True:
        path = draw_path(rng, num_frames, room)
        if distance_to_evaluation(path, cap=EXCLUSION_DISTANCE) >= EXCLUSION_DISTANCE:
            return path
