"""The methods a benchmark compares: each is a named set of TransferConfig overrides, not a code fork.

A method's overrides are merged (``recipes.merge``) onto the run's config (recipe + the user's settings),
so every method runs through the same ``Transfer`` code; only the settings differ. Differences from
``fym`` with default settings:

- ``fym``: no overrides; Follow-Your-Motion as configured.
- ``fym-no-heads``: ``heads.select: all``; no spatial/temporal head decoupling (both LoRAs on every head).
- ``fym-no-rope``: ``motion.rope: none``; sparse frames get positions 0..K-1 instead of their own.
- ``fym-dense``: ``motion.keep_frames: null``; no sparse motion sampling (every latent frame each step).
- ``fym-spatial-on``: ``generate.spatial_scale: 1.0``; the spatial (appearance) LoRA kept on at inference.
- ``two-stage-lora``: ``heads.select: all``, ``motion.keep_frames: null`` (``generate.spatial_scale: 0``);
  MotionDirector-style: a spatial LoRA on frames, then a temporal LoRA on the whole clip, on all heads,
  spatial LoRA off at inference.
- ``full-lora``: ``spatial.steps: 0``, ``heads.select: all``, ``motion.keep_frames: null``,
  ``motion.motion_weight: 0``; one LoRA on all heads trained on the whole clip, flow-matching loss only.
- ``base``: ``generate.motion_scale: 0`` (``generate.spatial_scale: 0``) and ``tune=False``: no
  classification or training, the base model with the target prompt only.
- ``ditflow``, ``flow-guidance``: ``guidance.method: ditflow`` / ``flow``, no LoRA (as ``base``) and
  ``tune=False``: the training-free methods (method/guidance.py), the base model guided by the reference's motion.
- ``ditflow-positions``: as ``ditflow``, with ``guidance.ditflow.optimise: positions``: the rotary tables optimised
  instead of the latent (each case writes its ``samples/<name>_positions.safetensors``).
- ``fym+ditflow``, ``fym+flow-guidance``: ``fym``'s tuned motion LoRA at inference, plus the guidance (run with
  ``fym``, they sample from its tuning instead of repeating it: ``reuse``).

Values in parentheses equal the defaults; they are set so a user config cannot change what the method is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..config import TransferConfig
from ..errors import InputError
from ..recipes import merge


@dataclass(frozen=True)
class Method:
    name: str
    overrides: dict = field(default_factory=dict)
    tune: bool = True  # False: no classification or LoRA training, generation only
    description: str = ""

    def config(self, base: dict | TransferConfig) -> TransferConfig:
        """`base` (a config or a dict of settings) with this method's overrides applied."""
        data = base.model_dump() if isinstance(base, TransferConfig) else dict(base)
        return TransferConfig.model_validate(merge(data, self.overrides))

    def to_json(self) -> dict:
        return {"name": self.name, "overrides": self.overrides, "tune": self.tune, "description": self.description}


_ALL_HEADS = {"heads": {"select": "all"}}
_NO_LORA = {"generate": {"motion_scale": 0.0, "spatial_scale": 0.0}}
_DENSE = {"motion": {"keep_frames": None}}
# DiTFlow's two kinds, each optimising in its sampling, pinned wherever DiTFlow runs (a user's optimise or
# positions_from would make it another method)
_OPTIMISE_LATENT = {"optimise": "latent", "positions_from": None}
_OPTIMISE_POSITIONS = {"optimise": "positions", "positions_from": None}

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("fym", {}, description="Follow-Your-Motion as configured"),
        Method("fym-no-heads", _ALL_HEADS, description="LoRAs on every head (no head decoupling)"),
        Method("fym-no-rope", {"motion": {"rope": "none"}}, description="sparse frames without adaptive RoPE"),
        Method("fym-dense", _DENSE, description="all latent frames every motion step (no sparse sampling)"),
        Method("fym-spatial-on", {"generate": {"spatial_scale": 1.0}},
               description="spatial (appearance) LoRA at scale 1 at inference"),
        Method("two-stage-lora", merge(merge(_ALL_HEADS, _DENSE), {"generate": {"spatial_scale": 0.0}}),
               description="MotionDirector-style two-stage LoRA on all heads, dense, spatial LoRA off at inference"),
        Method("full-lora",
               merge(merge(_ALL_HEADS, _DENSE), {"spatial": {"steps": 0}, "motion": {"motion_weight": 0.0}}),
               description="one LoRA on all heads on the whole clip, flow-matching loss only"),
        Method("base", _NO_LORA, tune=False, description="the base model, no tuning"),
        Method("ditflow", merge(_NO_LORA, {"guidance": {"method": "ditflow", "ditflow": _OPTIMISE_LATENT}}),
               tune=False, description="DiTFlow: attention motion flow guidance, no tuning"),
        Method("ditflow-positions",
               merge(_NO_LORA, {"guidance": {"method": "ditflow", "ditflow": _OPTIMISE_POSITIONS}}), tune=False,
               description="DiTFlow optimising the rotary positions instead of the latent, no tuning"),
        Method("flow-guidance", merge(_NO_LORA, {"guidance": {"method": "flow"}}), tune=False,
               description="flow-guided sampling (after FlowMotion), no tuning"),
        Method("fym+ditflow", {"guidance": {"method": "ditflow", "ditflow": _OPTIMISE_LATENT}},
               description="the tuned motion LoRA plus DiTFlow's guidance while sampling"),
        Method("fym+flow-guidance", {"guidance": {"method": "flow"}},
               description="the tuned motion LoRA plus flow guidance while sampling"),
    )
}


def get_method(name: str | Method) -> Method:
    if isinstance(name, Method):
        return name
    try:
        return METHODS[name.strip()]
    except KeyError:
        raise InputError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}") from None


def get_methods(names: str | Iterable[str | Method]) -> list[Method]:
    """Methods from names (a list or one comma-separated string), in order, without repeats."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    methods: list[Method] = []
    for name in names:
        method = get_method(name)
        if method.name not in {m.name for m in methods}:
            methods.append(method)
    if not methods:
        raise InputError(f"no method given; valid methods: {', '.join(METHODS)}")
    return methods
