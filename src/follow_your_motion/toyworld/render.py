"""ShapesWorld renderer: procedural tiny videos of coloured shapes with exact ground-truth tracks.

Everything is drawn with hard edges (pixel-centre sampling, no anti-aliasing) in pure numpy, so a pixel
either has an object's exact RGB or not; colour segmentation is then exact and the ground-truth centroid
(computed from the drawn, visible mask) can be recovered from the frames alone. Rendering is a pure
function of the ``SceneSpec``; random scenes are drawn in ``toyworld.scenes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

COLOURS: dict[str, tuple[int, int, int]] = {  # saturated; pairwise >= 127 apart on some channel
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "white": (255, 255, 255),
    "purple": (160, 0, 255),
    "orange": (255, 128, 0),
    "cyan": (0, 255, 255),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
FIGURE = "figure"  # the articulated stick figure of the `human` category
LINE_PROGRAMS = ("left", "right", "up", "down", "up-left", "up-right", "down-left", "down-right")
PRETRAIN_PROGRAMS: tuple[str, ...] = ("static", *LINE_PROGRAMS)
HELDOUT_PROGRAMS = ("zigzag", "orbit-cw", "orbit-ccw", "bounce", "figure-eight", "spiral", "grow-shrink")
HUMAN_PROGRAMS: tuple[str, ...] = ("wave", "jump", "walk")
FREE_PROGRAM = "free"  # the object follows ObjectSpec.path (toyworld.paths draws such paths for pretraining)
CAMERA_PROGRAMS: tuple[str, ...] = tuple(f"pan-{d}" for d in LINE_PROGRAMS) + ("zoom-in", "zoom-out")
CATEGORIES: tuple[str, ...] = ("single", "multi", "camera", "human")
DIM_BACKGROUNDS: tuple[str, ...] = tuple(f"dim-{c}" for c in COLOURS)  # plain, each at half its colour's value
BACKGROUNDS: tuple[str, ...] = ("black", "textured", *DIM_BACKGROUNDS)

_DIRS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
_LINE_TRAVEL, _DIAG_TRAVEL, _PAN_TRAVEL, _ZOOM = 0.45, 0.35, 0.3, 1.5  # fractions of the frame / factor
_STRIPE = 0.5  # stripe height as a fraction of the object's radius: 4 bands across its diameter
_OBJECT_MOTION_WORDS = ("moves", "stays", "still", "left", "right", "up", "down")
_MOTION_WORDS = (*_OBJECT_MOTION_WORDS, "the", "camera", "pans", "over", "zooms", "in", "on", "out", "from")
VOCABULARY: tuple[str, ...] = tuple(sorted({"a", "and", *_MOTION_WORDS, *COLOURS, *SHAPES, FIGURE}))


@dataclass(frozen=True)
class ObjectSpec:
    """One object. ``size`` is the diameter (figure: height) as a fraction of min(H, W). ``anchor`` places
    the path inside the range of positions that keep the object fully in frame (0 = left/top-most,
    1 = right/bottom-most), so any anchor is valid. ``phase`` in [0, 1) offsets periodic programs
    (orbit/spiral/figure-eight start angle, zigzag phase, bounce diagonal = quadrant of phase). ``stripes``, a
    second colour, draws the object in horizontal bands of ``colour`` and ``stripes`` that move and scale with
    it (an appearance the captions cannot name, for leakage tests); its name and caption keep ``colour``.
    ``path``, with the program ``FREE_PROGRAM`` only: the centre offset (dx, dy) in every frame, as fractions of
    the frame's width and height (placed like any program's offsets; the caption names no motion)."""

    shape: str
    colour: str
    program: str
    size: float = 0.25
    anchor: tuple[float, float] = (0.5, 0.5)
    phase: float = 0.0
    stripes: str | None = None
    path: tuple[tuple[float, float], ...] | None = None

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def colours(self) -> tuple[str, ...]:
        """Every colour the object is drawn in: its mask is the union of their masks."""
        return (self.colour,) if self.stripes is None else (self.colour, self.stripes)


@dataclass(frozen=True)
class SceneSpec:
    """A clip description; objects are drawn in order, so later objects occlude earlier ones."""

    objects: tuple[ObjectSpec, ...]
    num_frames: int = 9
    height: int = 32
    width: int = 32
    background: str = "black"
    camera: str | None = None


@dataclass
class Track:
    """Ground truth of one object: centroid (T, 2) as (x, y) = mean of its visible pixels' coordinates and
    inclusive bbox (T, 4) as (x0, y0, x1, y1); NaN in frames where the object is fully occluded."""

    centroid: np.ndarray
    bbox: np.ndarray


@dataclass
class Clip:
    """Rendered frames (T, H, W, 3) uint8 RGB, the motion caption, and tracks keyed by "colour shape"."""

    frames: np.ndarray
    caption: str
    tracks: dict[str, Track]


def check(kind: str, value: object, valid: tuple[str, ...] | list[str]) -> None:
    if value not in valid:
        raise InputError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")


def _validate(scene: SceneSpec) -> None:
    if not scene.objects:
        raise InputError("scene needs at least one object")
    if scene.num_frames < 1:
        raise InputError(f"num_frames must be >= 1, got {scene.num_frames}")
    if scene.height < 16 or scene.width < 16:
        raise InputError(f"height and width must be >= 16, got {scene.height}x{scene.width}")
    check("background", scene.background, BACKGROUNDS)
    if scene.camera is not None:
        check("camera", scene.camera, CAMERA_PROGRAMS)
    names = [o.name for o in scene.objects]
    if len(set(names)) != len(names):
        raise InputError(f"objects must have distinct colour+shape names, got {names}")
    for o in scene.objects:
        check("shape", o.shape, (*SHAPES, FIGURE))
        check("colour", o.colour, tuple(COLOURS))
        if o.stripes is not None:
            check(f"stripes colour of the {o.name}", o.stripes, tuple(COLOURS))
            if o.stripes == o.colour:
                raise InputError(f"the {o.name}'s stripes are its own colour {o.colour!r}: give another colour "
                                 "or leave stripes out")
        valid = HUMAN_PROGRAMS if o.shape == FIGURE else (*PRETRAIN_PROGRAMS, *HELDOUT_PROGRAMS, FREE_PROGRAM)
        check(f"program for {o.shape}", o.program, valid)
        if (o.path is not None) != (o.program == FREE_PROGRAM):
            raise InputError(f"the {o.name}: a path goes with the program {FREE_PROGRAM!r} and that program needs "
                             f"one (program {o.program!r}, path {'given' if o.path is not None else 'missing'})")
        if o.path is not None and np.shape(o.path) != (scene.num_frames, 2):
            raise InputError(f"the {o.name}'s path has shape {np.shape(o.path)}; it needs one (dx, dy) per frame: "
                             f"({scene.num_frames}, 2)")
        if not 0.0 < o.size <= 1.0:
            raise InputError(f"size must be in (0, 1], got {o.size}")
        if o.size * min(scene.height, scene.width) < 3.0:
            raise InputError(f"size {o.size} is below 3 px at {scene.height}x{scene.width}")
        if not all(0.0 <= a <= 1.0 for a in o.anchor):
            raise InputError(f"anchor must be in [0, 1]^2, got {o.anchor}")


def _program(program: str, u: np.ndarray, phase: float, h: int, w: int) -> tuple[np.ndarray, ...]:
    """Centre offset (dx, dy) in pixels and scale factor per frame; the absolute offset is irrelevant
    because placement fits the whole path into the frame afterwards."""
    zero, one = np.zeros_like(u), np.ones_like(u)
    th = 2 * np.pi * (phase + u)
    if program in ("static", "wave", "walk", "bounce"):  # bounce is solved in _object_path
        return zero, zero, one
    if program in LINE_PROGRAMS:
        parts = program.split("-")
        travel = _DIAG_TRAVEL if len(parts) == 2 else _LINE_TRAVEL
        dx = sum(_DIRS[p][0] for p in parts) * travel * w * u
        dy = sum(_DIRS[p][1] for p in parts) * travel * h * u
        return dx, dy, one
    if program == "zigzag":  # rightwards with a triangle wave (2 cycles) up and down
        tri = 2 * np.abs(((2 * u + phase) % 1.0) - 0.5) - 0.5
        return 0.4 * w * u, 0.3 * h * tri, one
    if program in ("orbit-cw", "orbit-ccw"):  # image y points down: increasing angle is clockwise on screen
        s = 1.0 if program == "orbit-cw" else -1.0
        return 0.2 * w * np.cos(s * th), 0.2 * h * np.sin(s * th), one
    if program == "figure-eight":
        return 0.22 * w * np.sin(th), 0.12 * h * np.sin(2 * th), one
    if program == "spiral":  # outward spiral, 1.5 turns
        r = 0.03 + 0.17 * u
        a = 2 * np.pi * (phase + 1.5 * u)
        return r * w * np.cos(a), r * h * np.sin(a), one
    if program == "grow-shrink":
        return zero, zero, 0.6 + 0.8 * np.sin(np.pi * u)
    if program == "jump":  # two hops
        return zero, -0.12 * h * np.abs(np.sin(2 * np.pi * u)), one
    raise InputError(f"unknown program {program!r}")  # pragma: no cover - validated earlier


def _camera(camera: str | None, u: np.ndarray, h: int, w: int) -> tuple[np.ndarray, ...]:
    """Camera pan (px, py) and zoom z per frame: image = z * (world - c) + c - pan. A camera panning right
    makes the scene content (background and objects) move left in the image."""
    zero = np.zeros_like(u)
    if camera is None:
        return zero, zero, np.ones_like(u)
    if camera.startswith("zoom"):
        return zero, zero, _ZOOM ** (u if camera == "zoom-in" else -u)
    parts = camera[len("pan-") :].split("-")
    travel = _PAN_TRAVEL if len(parts) == 1 else _PAN_TRAVEL * 0.8
    px = sum(_DIRS[p][0] for p in parts) * travel * w * u
    py = sum(_DIRS[p][1] for p in parts) * travel * h * u
    return px, py, np.ones_like(u)


def _line_halfwidth(radius: float) -> float:
    return max(0.6, 0.07 * radius)


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = hi - lo
    if span <= 0:
        return np.full_like(x, lo)
    y = (x - lo) % (2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def _object_path(o: ObjectSpec, scene: SceneSpec, u: np.ndarray) -> tuple[np.ndarray, ...]:
    """Image-space centre (x, y) and radius per frame, chosen so the object never leaves the frame."""
    h, w = scene.height, scene.width
    r0 = o.size * min(h, w) / 2
    ext = r0 + (_line_halfwidth(r0) if o.shape == FIGURE else 0.0)  # half-extent at scale 1
    px, py, z = _camera(scene.camera, u, h, w)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    if o.path is not None:
        offsets = np.asarray(o.path, dtype=np.float64)
        dx, dy, s = offsets[:, 0] * w, offsets[:, 1] * h, np.ones_like(u)
    else:
        dx, dy, s = _program(o.program, u, o.phase, h, w)
    if o.program == "bounce":  # world path reflecting off the frame walls
        lo_x, hi_x, lo_y, hi_y = ext, w - 1 - ext, ext, h - 1 - ext
        q = int(4 * (o.phase % 1.0))
        sx, sy = (1 if q in (0, 3) else -1), (1 if q in (0, 1) else -1)
        wx = _reflect(lo_x + o.anchor[0] * (hi_x - lo_x) + sx * 1.2 * (hi_x - lo_x) * u, lo_x, hi_x)
        wy = _reflect(lo_y + o.anchor[1] * (hi_y - lo_y) + sy * 0.7 * (hi_y - lo_y) * u, lo_y, hi_y)
    else:  # world = start + offset; solve the per-frame linear constraints for the start interval
        starts = []
        for d, pan, c, size, a in ((dx, px, cx, w, o.anchor[0]), (dy, py, cy, h, o.anchor[1])):
            lo = np.max((ext * s * z - c + pan) / z + c - d)
            hi = np.min((size - 1 - ext * s * z - c + pan) / z + c - d)
            if lo > hi + 1e-9:
                raise InputError(f"{o.name} ({o.program!r}, size {o.size}) cannot stay in frame")
            starts.append(lo + a * max(hi - lo, 0.0))
        wx, wy = starts[0] + dx, starts[1] + dy
    x, y, rad = z * (wx - cx) + cx - px, z * (wy - cy) + cy - py, r0 * s * z
    e, eps = rad * ext / r0, 1e-6
    if np.any(np.minimum(x, y) - e < -eps) or np.any(x + e > w - 1 + eps) or np.any(y + e > h - 1 + eps):
        raise InputError(f"{o.name} ({o.program!r}) leaves the frame under camera {scene.camera!r}")
    return x, y, rad


def object_centres(scene: SceneSpec) -> list[np.ndarray]:
    """Each object's centre (T, 2) as (x, y) in pixels, as drawn (camera included), without drawing: the path
    itself, where ``Track.centroid`` is the mean of the pixels it covers."""
    _validate(scene)
    u = np.linspace(0.0, 1.0, scene.num_frames)
    return [np.stack(_object_path(o, scene, u)[:2], 1) for o in scene.objects]


def _segments_mask(xx: np.ndarray, yy: np.ndarray, segs: list, hw: float) -> np.ndarray:
    mask = np.zeros(np.broadcast(xx, yy).shape, dtype=bool)
    for (ax, ay), (bx, by) in segs:
        vx, vy = bx - ax, by - ay
        t = np.clip(((xx - ax) * vx + (yy - ay) * vy) / max(vx * vx + vy * vy, 1e-12), 0.0, 1.0)
        mask |= (xx - ax - t * vx) ** 2 + (yy - ay - t * vy) ** 2 <= hw * hw
    return mask


def _figure_mask(xx: np.ndarray, yy: np.ndarray, x: float, y: float, r: float, program: str, u: float):
    """Stick figure in local units (extent <= 1, y down): head circle, torso, two arms, two legs."""
    sh, hip = (0.0, -0.45), (0.0, 0.2)
    hands = [(-0.45, -0.05), (0.45, -0.05)]
    feet = [(-0.35, 0.95), (0.35, 0.95)]
    if program == "wave":  # right arm raised, swinging between diagonal and horizontal 1.5 times
        a = 1.2 + 0.4 * np.sin(3 * np.pi * u)
        hands[1] = (0.55 * np.sin(a), -0.45 - 0.55 * np.cos(a))
    elif program == "jump":  # arms go up while airborne
        k = abs(np.sin(2 * np.pi * u))
        hands = [(sx * (0.45 - 0.1 * k), -0.05 - 0.75 * k) for sx in (-1, 1)]
    elif program == "walk":  # legs and arms swing in opposition, in place
        k = np.sin(3 * np.pi * u)
        feet = [(-0.35 * k, 0.95 - 0.2 * max(k, 0.0)), (0.35 * k, 0.95 + 0.2 * min(k, 0.0))]
        hands = [(0.35 * k, -0.05), (-0.35 * k, -0.05)]
    segs = [((0.0, -0.5), hip)] + [(sh, hd) for hd in hands] + [(hip, ft) for ft in feet]
    segs = [((x + r * a[0], y + r * a[1]), (x + r * b[0], y + r * b[1])) for a, b in segs]
    head = (xx - x) ** 2 + (yy - (y - 0.74 * r)) ** 2 <= (0.24 * r) ** 2
    return head | _segments_mask(xx, yy, segs, _line_halfwidth(r))


def _shape_mask(xx: np.ndarray, yy: np.ndarray, shape: str, x: float, y: float, r: float) -> np.ndarray:
    if shape == "circle":
        return (xx - x) ** 2 + (yy - y) ** 2 <= r * r
    if shape == "square":
        return (np.abs(xx - x) <= 0.8 * r) & (np.abs(yy - y) <= 0.8 * r)
    # triangle: apex up at y - r, base at y + 0.7 r with half-width r
    top, base = y - r, y + 0.7 * r
    return (yy <= base) & (np.abs(xx - x) <= (yy - top) / (base - top) * r)


def _stripe_mask(yy: np.ndarray, y: float, r: float) -> np.ndarray:
    """The second colour's bands: every other band of height _STRIPE * r, counted from the top y - r."""
    return np.floor((yy - (y - r)) / (_STRIPE * r)).astype(np.int64) % 2 == 1


def dim_colour(colour: str) -> tuple[int, int, int]:
    """The ``dim-<colour>`` background: each channel at half its value, rounded up (red -> (128, 0, 0)).

    Every dim colour is at least 127 from every object colour and 128 from black on some channel, and 64 above
    the texture's greys, so at the segmentation tolerance 40 it is never taken for an object or for black."""
    check("colour", colour, tuple(COLOURS))
    r, g, b = ((v + 1) // 2 for v in COLOURS[colour])
    return r, g, b


_TEXTURE = np.random.default_rng(20240601).integers(20, 65, size=(64, 64)).astype(np.uint8)


def _background(scene: SceneSpec, xx: np.ndarray, yy: np.ndarray, px: float, py: float, z: float):
    """Black, a plain dim colour, or a fixed-seed blocky grey texture (values 20..64) in world coordinates, so
    it moves with the camera."""
    h, w = scene.height, scene.width
    if scene.background == "black":
        return np.zeros((h, w, 3), dtype=np.uint8)
    if scene.background in DIM_BACKGROUNDS:
        return np.broadcast_to(np.array(dim_colour(scene.background[len("dim-"):]), np.uint8), (h, w, 3))
    cx, cy, cell = (w - 1) / 2, (h - 1) / 2, max(2, min(h, w) // 16)
    wx, wy = (xx + px - cx) / z + cx, (yy + py - cy) / z + cy
    ix, iy = np.floor(wx / cell).astype(int) % 64, np.floor(wy / cell).astype(int) % 64
    return np.repeat(_TEXTURE[iy, ix][..., None], 3, axis=2)


def render(scene: SceneSpec) -> Clip:
    """Draw the clip and derive exact ground truth from the visible pixels of each object."""
    _validate(scene)
    t_n, h, w = scene.num_frames, scene.height, scene.width
    u = np.linspace(0.0, 1.0, t_n)
    paths = [_object_path(o, scene, u) for o in scene.objects]
    px, py, z = _camera(scene.camera, u, h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = np.zeros((t_n, h, w, 3), dtype=np.uint8)
    owner = np.full((t_n, h, w), -1, dtype=np.int64)  # index of the object that owns each pixel
    for t in range(t_n):
        frames[t] = _background(scene, xx, yy, px[t], py[t], z[t])
        for i, (o, (x, y, r)) in enumerate(zip(scene.objects, paths, strict=True)):
            if o.shape == FIGURE:
                m = _figure_mask(xx, yy, x[t], y[t], r[t], o.program, float(u[t]))
            else:
                m = _shape_mask(xx, yy, o.shape, x[t], y[t], r[t])
            frames[t][m] = COLOURS[o.colour]
            if o.stripes is not None:
                frames[t][m & _stripe_mask(yy, y[t], r[t])] = COLOURS[o.stripes]
            owner[t][m] = i
    tracks = {}
    for i, o in enumerate(scene.objects):
        cen, box = np.full((t_n, 2), np.nan), np.full((t_n, 4), np.nan)
        for t in range(t_n):
            ys, xs = np.nonzero(owner[t] == i)
            if xs.size:
                cen[t] = xs.mean(), ys.mean()
                box[t] = xs.min(), ys.min(), xs.max(), ys.max()
        tracks[o.name] = Track(centroid=cen, bbox=box)
    return Clip(frames=frames, caption=caption(scene), tracks=tracks)


def caption(scene: SceneSpec, with_motion: bool = True) -> str:
    """Lower-case caption without punctuation. Motion words describe only pretraining programs ("moves
    left", "stays still") and the camera; held-out and human programs get the appearance-only phrase, and
    with a camera only the camera motion is described."""
    phrases = []
    for o in scene.objects:
        p = f"a {o.colour} {o.shape}"
        if with_motion and scene.camera is None and o.program in PRETRAIN_PROGRAMS:
            p += " stays still" if o.program == "static" else " moves " + o.program.replace("-", " ")
        phrases.append(p)
    text = " and ".join(phrases)
    if with_motion and scene.camera is not None:
        if scene.camera.startswith("pan-"):
            return f"the camera pans {scene.camera[4:].replace('-', ' ')} over {text}"
        verb = "zooms in on" if scene.camera == "zoom-in" else "zooms out from"
        return f"the camera {verb} {text}"
    return text


def segment_colour(frames: np.ndarray, colour: str | tuple[str, ...], tol: int = 40) -> np.ndarray:
    """(T, H, W) mask of pixels whose every channel is within ``tol`` of the colour (0..255 scale), or of any of
    several colours (a striped object: ``ObjectSpec.colours``); a per-channel (Chebyshev) tolerance keeps noisy
    generated pixels while separating the 8 colours."""
    names = (colour,) if isinstance(colour, str) else tuple(colour)
    for name in names:
        check("colour", name, tuple(COLOURS))
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    values = frames.astype(np.float64)
    mask = np.zeros(frames.shape[:3], dtype=bool)
    for name in names:
        mask |= np.abs(values - np.asarray(COLOURS[name], dtype=np.float64)).max(axis=-1) <= tol
    return mask


def track_colour(frames: np.ndarray, colour: str | tuple[str, ...], tol: int = 40, min_pixels: int = 3) -> np.ndarray:
    """(T, 2) centroid (x, y) of the colour's (or colours') pixels per frame, NaN where fewer than ``min_pixels``."""
    mask = segment_colour(frames, colour, tol)
    out = np.full((mask.shape[0], 2), np.nan)
    for t, m in enumerate(mask):
        ys, xs = np.nonzero(m)
        if xs.size >= max(min_pixels, 1):
            out[t] = xs.mean(), ys.mean()
    return out
