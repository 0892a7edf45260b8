"""`fym plan`: the job of `fym transfer` traced at real size on fake tensors, to tell what fits which card.

The model is loaded as `fym transfer` loads it (`load_backbone`, the family's backbone and pipeline), built from
its published configs with no weights (`backbones/from_configs.py`) under torch's `FakeTensorMode`; then each
stage runs the project's own functions on a reference of the run's size: the backbone's encoders, stage 1's
scoring pass (`head_scores`) per expert, one optimizer step of stage 2 and of stage 3 per expert (`micro_step`,
`make_optimizer`, the masked LoRAs), one guided step of the family's pipeline and its VAE decode. `MemoryTrace`
counts every tensor made, so a stage's peak is the parameters on the device plus the most its tensors held at once.

What is not the real run: no values exist, so stage 1's head map is replaced by one that puts both LoRAs on every
layer (the largest LoRAs the run can get); one step stands for all (each step's peak is the same); which parameters
sit on the device is counted from the placement rules (`resident`), since nothing moves on fake tensors. The
allocator's fragmentation, CUDA kernels' workspaces and the CUDA context are not counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._pytree import tree_flatten

from .backbones import detect_variant, hub_variant, load_backbone
from .backbones.base import Backbone, Expert, pipeline_call
from .backbones.from_configs import modules_stay, weightless
from .backbones.variants import BY_NAME
from .config import TrainSettings, TransferConfig, recipe_names
from .errors import InputError
from .method.heads import head_scores
from .method.lora import add_masked_lora, set_trainable
from .method.sparse import step_generator
from .method.train import make_optimizer, micro_step, motion_inputs, spatial_inputs
from .tracing import MemoryTrace
from .transfer import stage_experts

GB = 1e9
CARDS = (24, 32, 48, 80, 141)  # GB of the cards a plan is checked against
STAGES = ("encode", "classify", "spatial", "motion", "generate", "decode")
DEFAULT_TFLOPS = 400.0  # bf16 matrix throughput the predicted seconds assume (an H100's sustained, roughly)


@dataclass
class StagePlan:
    """One stage of the job (for one expert where the model has several) at real size."""

    stage: str
    expert: str | None
    resident_bytes: int  # parameters on the device
    held_bytes: int  # tensors held from before the stage (cached encodings, the LoRAs' training state...)
    activation_bytes: int  # the most the stage's own tensors held at once (activations, gradients, moments)
    training_state_bytes: int  # of those: the trained LoRA's gradients and AdamW moments
    peak_bytes: int
    offload_peak_bytes: int  # the peak with model.offload (only the running component on the device)
    flops: int  # one call: one optimizer step of a tuning stage, one sampling step
    repeats: int  # calls in the whole job (the recipe's steps)
    trace_seconds: float = 0.0  # how long tracing it took on this machine

    def seconds(self, tflops: float) -> float:
        return self.flops * self.repeats / (tflops * 1e12)


@dataclass
class Plan:
    model: str
    variant: str | None
    family: str
    recipe: list[str]
    size: tuple[int, int, int]  # frames, height, width
    settings: dict  # the settings that set the memory
    stages: list[StagePlan] = field(default_factory=list)
    tflops: float = DEFAULT_TFLOPS

    @property
    def peak_bytes(self) -> int:
        return max(s.peak_bytes for s in self.stages)

    @property
    def offload_peak_bytes(self) -> int:
        return max(s.offload_peak_bytes for s in self.stages)

    def fits(self) -> dict[str, bool]:
        return {str(gb): self.peak_bytes <= gb * GB for gb in CARDS}

    def to_json(self) -> dict:
        stages = [asdict(s) | {"seconds": s.seconds(self.tflops)} for s in self.stages]
        return {"model": self.model, "variant": self.variant, "family": self.family, "recipe": self.recipe,
                "size": list(self.size), "settings": self.settings, "tflops": self.tflops, "stages": stages,
                "peak_bytes": self.peak_bytes, "fits": self.fits(), "offload_peak_bytes": self.offload_peak_bytes,
                "fits_with_offload": {str(gb): self.offload_peak_bytes <= gb * GB for gb in CARDS}}


def published_configs(source: str) -> tuple[Path, str | None]:
    """(the folder of configs to build the model from, the registry's variant name): a local directory's own
    configs, or the published ones of a hub id's variant."""
    folder = Path(source).expanduser()
    if (folder / "model_index.json").is_file():
        return folder, None
    variant = hub_variant(source)
    if variant is None or variant.configs is None:
        shipped = ", ".join(v.hub_ids[0] for v in BY_NAME.values() if v.configs is not None)
        raise InputError(f"model {source!r}: no published configs ship for it; plan a local diffusers directory "
                         f"(its configs suffice, no weights needed) or one of: {shipped}")
    return variant.configs, variant.name


def param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def tensor_bytes(values) -> int:
    leaves, _ = tree_flatten(values)
    return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))


def everything_but_heads_map(expert: Expert) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """(spatial, temporal) selections with both kinds on every layer: the largest pair of LoRAs stage 1 can give."""
    spatial = {layer: list(range(1, site.heads)) for layer, site in enumerate(expert.sites)}
    return spatial, {layer: [0] for layer in range(len(expert.sites))}


class JobTrace:
    """The job's stages traced one by one on a fake-weight backbone, in `fym transfer`'s order."""

    def __init__(self, cfg: TransferConfig, backbone: Backbone, fake: FakeTensorMode) -> None:
        self.cfg, self.backbone, self.fake = cfg, backbone, fake
        self.trace = MemoryTrace()
        self.stages: list[StagePlan] = []
        self.frames, self.height, self.width = cfg.video.frames, cfg.video.height, cfg.video.width

    # -- what sits on the device ----------------------------------------------------------------------------
    def resident(self, stage: str, running: list[torch.nn.Module], offload: bool) -> int:
        """Parameter bytes on the device: without offload, every component while encoding and generating, the
        experts alone while tuning (the encoders parked on the CPU, unless `keep_encoders`); with offload, only
        the largest of the modules that run in the stage (diffusers' model offload moves one at a time)."""
        m = self.cfg.model
        if offload:
            return max(param_bytes(module) for module in running)
        experts = sum(param_bytes(e.module) for e in self.backbone.experts)
        encoders = sum(param_bytes(module) for module in self.backbone.encoders().values())
        if stage in ("classify", "spatial", "motion") and not m.keep_encoders:
            return experts
        return experts + encoders

    def record(self, stage: str, expert: str | None, running: list[torch.nn.Module], keys: list, repeats: int,
               training_state: int = 0) -> None:
        """A stage from its trace records `keys` (several for encoding: video, prompt, single frames...)."""
        records = [self.trace.records[k] for k in keys]
        own = max(r["peak"] - r["start"] for r in records)
        held = records[0]["start"]
        flops = sum(r["flops"] for r in records)
        peak = max(r["peak"] for r in records)
        resident = self.resident(stage, running, False)
        self.stages.append(StagePlan(stage, expert, resident, held, own, training_state, resident + peak,
                                     self.resident(stage, running, True) + peak, flops, repeats,
                                     sum(r["seconds"] for r in records)))

    @contextlib.contextmanager
    def traced(self, key) -> Iterator[None]:
        self.trace.begin(key)
        with self.trace:
            yield
        self.trace.end()

    # -- the stages ---------------------------------------------------------------------------------------
    def video(self, frames: int, height: int, width: int) -> torch.Tensor:
        """A reference clip of this size as `encode_video` takes it, on the (fake) device."""
        with self.fake:
            return torch.zeros(3, frames, height, width)

    def encode(self) -> None:
        """`Transfer.encode`: the reference's latents, the caption's conditioning, the first frame's (image-to-video),
        one single frame as stage 2 encodes each, the shrunk clip stage 3 tunes on (`motion.downsample`)."""
        b, cfg, v = self.backbone, self.cfg, self.cfg.video
        encoders = self.backbone.encoders()
        vae = [encoders["vae"]]
        texts = [m for name, m in encoders.items() if name.startswith("text_encoder")]
        keys = [("encode", "video")]
        with self.traced(keys[-1]):
            self.latents = b.encode_video(self.video(self.frames, self.height, self.width))
        keys.append(("encode", "prompt"))
        with self.traced(keys[-1]):
            self.cond = b.encode_prompt(cfg.prompt)
        if v.first_frame_condition:
            keys.append(("encode", "image"))
            with self.traced(keys[-1]):
                first = np.zeros((self.height, self.width, 3), np.uint8)
                self.cond = self.cond.merged(b.encode_image(first, self.frames, self.height, self.width))
        self.motion_latents = self.latents
        if cfg.motion.steps and cfg.motion.downsample > 1:
            keys.append(("encode", "shrunk"))
            factor = cfg.motion.downsample
            with self.traced(keys[-1]):
                self.motion_latents = b.encode_video(self.video(self.frames, self.height // factor,
                                                                self.width // factor))
        if cfg.spatial.steps:
            keys.append(("encode", "frame"))
            with self.traced(keys[-1]):
                one = b.encode_video(self.video(1, self.height, self.width))
                self.frame_latents = torch.cat([one] * self.frames)
        self.record("encode", None, vae + texts, keys, 1)

    def classify(self) -> None:
        for expert in self.backbone.experts:
            key = ("classify", expert.name or None)
            with self.traced(key):
                head_scores(self.backbone, expert, self.latents, self.cond, self.cfg.heads)
            self.record("classify", key[1], [expert.module], [key], 1)

    def tune(self, adapter: str, settings: TrainSettings, inputs, **loss) -> None:
        """One optimizer step per expert of the stage, as `train_adapter` takes it, after adding the stage's LoRA."""
        shift = settings.timestep_shift or self.backbone.clip_shift(self.frames, self.height, self.width)
        for expert in stage_experts(self.backbone, settings):
            spatial, temporal = everything_but_heads_map(expert)
            with self.fake:
                add_masked_lora(expert, adapter, spatial if adapter == "spatial" else temporal, settings.rank,
                                settings.lora_alpha, settings.include_out, seed=settings.seed)
            frozen = {"spatial": 1.0} if "spatial" in expert.loaded_adapters() and adapter != "spatial" else {}
            self.backbone.set_active_adapters(frozen | {adapter: 1.0})
            key = (adapter, expert.name or None)
            transformer = expert.module
            params = set_trainable(transformer, adapter)
            if settings.grad_checkpointing:
                transformer.enable_gradient_checkpointing()
            transformer.train()
            with self.traced(key):
                optimizer = make_optimizer(params, settings)
                generator = step_generator(settings.seed, 0, 3)
                micro_step(self.backbone, expert, inputs(0, generator), generator, settings, shift, **loss)
                if settings.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                moments = [v for state in optimizer.state.values() for k, v in state.items() if k != "step"]
                state = tensor_bytes([p.grad for p in params]) + tensor_bytes(moments)  # (AdamW's steps: on the CPU)
                optimizer.zero_grad(set_to_none=True)
                del optimizer
            transformer.eval()
            if settings.grad_checkpointing:
                transformer.disable_gradient_checkpointing()
            set_trainable(transformer, None)
            self.record(adapter, key[1], [transformer], [key], settings.steps, state)

    def generate(self) -> None:
        """One guided sampling step of the family's pipeline with both LoRAs, then its VAE decode (a record of
        its own, begun when the pipeline calls `vae.decode`)."""
        g, b = self.cfg.generate, self.backbone
        vae = b.encoders()["vae"]
        original = vae.decode

        def decode(*args, **kwargs):
            self.trace.begin(("decode", None))
            return original(*args, **kwargs)

        image = np.zeros((self.height, self.width, 3), np.uint8) if b.image_mode == "required" else None
        call = pipeline_call(self.cfg.target_prompt or self.cfg.prompt, g.negative_prompt, g.frames or self.frames,
                             g.height or self.height, g.width or self.width, 1, g.seed, output_type="pt")
        vae.decode = decode
        try:
            with self.traced(("generate", None)), b.adapters({"motion": g.motion_scale, "spatial": g.spatial_scale}):
                b.sample(call, g.guidance, g.guidance_2, image)
                self.trace.begin("after decode")
        finally:
            del vae.decode
        experts = [e.module for e in b.experts]
        texts = [m for name, m in b.encoders().items() if name.startswith("text_encoder")]
        self.record("generate", None, experts + texts, [("generate", None)], g.steps)
        self.record("decode", None, [vae], [("decode", None)], 1)

    def run(self) -> list[StagePlan]:
        cfg = self.cfg
        self.encode()
        self.classify()
        if cfg.spatial.steps:
            self.tune("spatial", cfg.spatial, spatial_inputs(self.frame_latents, self.cond, cfg.spatial.batch_size))
        if cfg.motion.steps:
            m = cfg.motion
            self.tune("motion", m, motion_inputs(self.motion_latents, self.cond, m), motion_weight=m.motion_weight,
                      motion_form=m.motion_loss)
        self.generate()
        return self.stages


def plan_transfer(cfg: TransferConfig, tflops: float = DEFAULT_TFLOPS) -> Plan:
    """The plan of `cfg`'s job (a resolved config, as `fym transfer` runs it) at its recipe's or given size."""
    m = cfg.model
    if m.source is None or m.family == "toy":
        raise InputError("fym plan is for the diffusers models (--model); the toy model runs on any CPU")
    configs, variant = published_configs(m.source)
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with modules_stay():
        return _plan(cfg, configs, variant, fake, tflops)


def _plan(cfg: TransferConfig, configs: Path, variant: str | None, fake: FakeTensorMode, tflops: float) -> Plan:
    m = cfg.model
    frames, height, width = cfg.video.target()
    with weightless(configs), fake:
        backbone = load_backbone(m.source, m.family, m.dtype, "cpu", offload=False)
    if m.vae_tiling is not None:
        backbone.set_vae_tiling(m.vae_tiling)
    backbone.geometry.check(frames, height, width)
    first_frame = cfg.video.first_frame_condition
    if first_frame is None:
        first_frame = backbone.image_mode == "required"
    video = cfg.video.model_copy(update={"frames": frames, "height": height, "width": width,
                                         "first_frame_condition": first_frame})
    cfg = cfg.model_copy(update={"video": video})
    settings = {"dtype": m.dtype, "offload": m.offload, "keep_encoders": m.keep_encoders,
                "grad_checkpointing": [cfg.spatial.grad_checkpointing, cfg.motion.grad_checkpointing],
                "mixed_precision": [cfg.spatial.mixed_precision, cfg.motion.mixed_precision],
                "rank": [cfg.spatial.rank, cfg.motion.rank], "keep_frames": cfg.motion.keep_frames,
                "downsample": cfg.motion.downsample, "vae_tiling": backbone.vae_tiling}
    plan = Plan(m.source, variant or detect_variant(m.source), m.family, recipe_names(m.model_dump()),
                (frames, height, width), settings, tflops=tflops)
    plan.stages = JobTrace(cfg, backbone, fake).run()
    if m.offload:  # the run's own placement: offload's peaks are the plan's peaks
        for stage in plan.stages:
            stage.peak_bytes = stage.offload_peak_bytes
    return plan


def gib(n: int) -> str:
    return f"{n / GB:.1f}"


def table(plan: Plan) -> str:
    """The plan as a text table per stage, then which cards it fits."""
    head = (f"{plan.model} ({plan.variant or plan.family}): {plan.size[0]} frames of {plan.size[1]}x{plan.size[2]}, "
            f"recipe {' + '.join(plan.recipe)}; GB = 1e9 bytes; seconds at {plan.tflops:g} TFLOP/s")
    rows = [("stage", "expert", "params", "held", "own peak", "grads+adam", "peak", "peak offload", "TFLOP/call",
             "calls", "seconds")]
    for s in plan.stages:
        rows.append((s.stage, s.expert or "-", gib(s.resident_bytes), gib(s.held_bytes), gib(s.activation_bytes),
                     gib(s.training_state_bytes), gib(s.peak_bytes), gib(s.offload_peak_bytes),
                     f"{s.flops / 1e12:.1f}", str(s.repeats), f"{s.seconds(plan.tflops):.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head] + ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    fits = ", ".join(f"{gb} GB: {'yes' if ok else 'no'}" for gb, ok in plan.fits().items())
    lines.append(f"peak {gib(plan.peak_bytes)} GB; fits {fits}")
    offload_fits = [gb for gb in CARDS if plan.offload_peak_bytes <= gb * GB < plan.peak_bytes]
    if offload_fits and not plan.settings["offload"]:
        lines.append(f"with model.offload: true the peak is {gib(plan.offload_peak_bytes)} GB: it fits "
                     f"{', '.join(f'{gb} GB' for gb in offload_fits)} too")
    return "\n".join(lines)


def fits_card(plan: Plan, gpu_memory: float) -> str:
    """One line: whether the job fits a card of `gpu_memory` GB, and with which option if only with one."""
    if plan.peak_bytes <= gpu_memory * GB:
        return f"fits {gpu_memory:g} GB (peak {gib(plan.peak_bytes)} GB)"
    if not plan.settings["offload"] and plan.offload_peak_bytes <= gpu_memory * GB:
        return f"fits {gpu_memory:g} GB with model.offload: true (peak {gib(plan.offload_peak_bytes)} GB)"
    worst = max(plan.stages, key=lambda s: s.peak_bytes)
    return (f"does not fit {gpu_memory:g} GB: the {worst.stage} stage peaks at {gib(worst.peak_bytes)} GB "
            f"({gib(worst.resident_bytes)} GB parameters); see docs/performance.md for the options per card")

