"""`fym plan`: the job of `fym transfer` traced at real size on fake tensors, to tell what fits which card.

The model is loaded as `fym transfer` loads it (`load_backbone`, the family's backbone and pipeline), built from
its published configs with no weights (`backbones/from_configs.py`) under torch's `FakeTensorMode`; then each
stage runs the project's own functions on a reference of the run's size: the backbone's encoders, stage 1's
scoring pass (`head_scores`) per expert, one optimizer step of stage 2 and of stage 3 per expert (`micro_step`,
`make_optimizer`, the masked LoRAs), one guided step of the family's pipeline and its VAE decode. `MemoryTrace`
counts every tensor made, so a stage's peak is the parameters on the device plus the most its tensors held at once.

What is not the real run: no values exist, so stage 1's head map is replaced by one that puts both LoRAs on every
layer (the largest LoRAs the run can get); one step stands for all (AdamW's moments made first, as every step after
the first holds them); which parameters sit on the device is counted from the placement rules (`resident`), since
nothing moves on fake tensors. Code that branches on tensor values (HunyuanVideo 1.5's transformer reorders its
text tokens by their masks) cannot run on fake tensors: such a stage is reported untraced, with where, never
guessed. The allocator's fragmentation, CUDA kernels' workspaces and the CUDA context are not counted; attention
runs through the CPU flash kernel's meta function, which, like the CUDA flash and memory-efficient kernels, never
holds the S x S matrix (the math fallback would).

Where it is not yet the same code as `fym transfer`: the stages' bodies are called here one by one (`JobTrace`),
not through `Transfer` and `train_adapter`, so these differ from a real run and are not planned: an image-to-video
run's stage 2 conditions each single frame on itself in `fym transfer` (one `encode_image` per frame), here on the
first frame; with `motion.downsample` stage 3 keeps the full-size conditioning; generation calls the family's
`sample` directly (no `Backbone.generate` checks, no training-free guidance: a plan with `guidance.method` set is
refused). Its input decisions are `fym transfer`'s own (`first_frame_condition`, `check_downsample`). Making
the plan run `Transfer` itself, with a one-step stop in `train_adapter` and `generate`, is the
open part of this module.
"""

from __future__ import annotations

import contextlib
import inspect
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException, FakeTensorMode
from torch.utils._pytree import tree_flatten

from .backbones import detect_variant, hub_variant, load_backbone
from .backbones.base import Backbone, Expert, pipeline_call
from .backbones.block_swap import offloaded_bytes
from .backbones.from_configs import modules_stay, weightless
from .backbones.variants import BY_NAME
from .config import TrainSettings, TransferConfig, recipe_names
from .errors import InputError
from .method.heads import head_scores
from .method.lora import add_masked_lora, set_trainable
from .method.sparse import step_generator
from .method.train import make_optimizer, micro_step, motion_inputs, spatial_inputs
from .run_settings import check_downsample, first_frame_condition
from .tracing import MemoryTrace
from .transfer import stage_experts

GB = 1e9
CARDS = (24, 32, 48, 80, 141)  # GB of the cards a plan is checked against
STAGES = ("encode", "classify", "spatial", "motion", "generate", "decode")
UNTRACEABLE = (DataDependentOutputException, DynamicOutputShapeException)  # code that needs tensor values
DEFAULT_TFLOPS = 400.0  # bf16 matrix throughput the predicted seconds assume (an H100's sustained, roughly)
# the settings that lower a job's peak, tried in this order, each on top of those before it (model.offload is priced
# in every plan without tracing again): (what a config file says, the change to the config)
MEMORY_OPTIONS: tuple[tuple[str, dict], ...] = (
    ("spatial.grad_checkpointing: true, motion.grad_checkpointing: true",
     {"spatial": {"grad_checkpointing": True}, "motion": {"grad_checkpointing": True}}),
    ("motion.downsample: 2", {"motion": {"downsample": 2}}),
)


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
    untraced: str | None = None  # why the stage could not be traced on fake tensors (its numbers are then 0)
    setup_flops: int = 0  # done once besides the repeated calls (generation's prompt encoding)

    def seconds(self, tflops: float) -> float:
        return (self.setup_flops + self.flops * self.repeats) / (tflops * 1e12)


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
        """The largest peak of the stages that could be traced (`complete` says whether that is all of them)."""
        return max(s.peak_bytes for s in self.stages)

    @property
    def offload_peak_bytes(self) -> int:
        return max(s.offload_peak_bytes for s in self.stages)

    @property
    def complete(self) -> bool:
        return all(s.untraced is None for s in self.stages)

    def fits(self) -> dict[str, bool | None]:
        """Per card, whether the job fits; None where it does not fit can not be told: the stages traced fit, but
        some could not be traced (`complete` false)."""
        return {str(gb): (self.peak_bytes <= gb * GB) if self.complete or self.peak_bytes > gb * GB else None
                for gb in CARDS}

    def to_json(self) -> dict:
        stages = [asdict(s) | {"seconds": s.seconds(self.tflops)} for s in self.stages]
        return {"model": self.model, "variant": self.variant, "family": self.family, "recipe": self.recipe,
                "size": list(self.size), "settings": self.settings, "tflops": self.tflops, "stages": stages,
                "complete": self.complete,
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


def both_kinds_on_every_layer(expert: Expert) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """(spatial, temporal) selections with both kinds on every layer: the largest pair of LoRAs stage 1 can give."""
    spatial = {layer: list(range(1, site.heads)) for layer, site in enumerate(expert.sites)}
    return spatial, {layer: [0] for layer in range(len(expert.sites))}


def stop_after_one_step(pipe, step: int, timestep, kwargs: dict) -> dict:
    """A diffusers pipeline callback that skips the denoising steps after the first (every video pipeline checks
    its `interrupt` flag at each step), so the trace covers one step of the recipe's schedule and then the decode."""
    pipe._interrupt = True
    return {}


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
        the largest of the modules that run in the stage (diffusers' model offload moves one at a time); with
        `model.blocks_to_swap`, the experts less their swapped blocks but two (`block_swap.offloaded_bytes`)."""
        m = self.cfg.model
        if offload:
            return max(param_bytes(module) for module in running)
        experts = sum(param_bytes(e.module) for e in self.backbone.experts)
        if m.blocks_to_swap:
            experts -= offloaded_bytes([self.backbone.expert_blocks(e) for e in self.backbone.experts],
                                       m.blocks_to_swap)
        encoders = sum(param_bytes(module) for module in self.backbone.encoders().values())
        if stage in ("classify", "spatial", "motion") and not m.keep_encoders:
            return experts
        return experts + encoders

    def record(self, stage: str, expert: str | None, parts: dict, repeats: int, training_state: int = 0,
               setup: tuple = ()) -> None:
        """A stage from its trace records: `parts` maps each record's key to the modules that run in it (encoding
        has several: the video with the VAE, the prompt with the text encoders...); the records in `setup` run
        once per stage, the others `repeats` times."""
        records = {key: self.trace.records[key] for key in parts}
        first = next(iter(records.values()))

        def peak(offload: bool) -> int:
            return max(self.resident(stage, parts[key], offload) + r["peak"] for key, r in records.items())

        flops = sum(r["flops"] for key, r in records.items() if key not in setup)
        once = sum(records[key]["flops"] for key in setup)
        self.stages.append(StagePlan(
            stage, expert, max(self.resident(stage, running, False) for running in parts.values()), first["start"],
            max(r["peak"] - r["start"] for r in records.values()), training_state, peak(False), peak(True), flops,
            repeats, sum(r["seconds"] for r in records.values()), setup_flops=once))

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
        parts = {("encode", "video"): vae, ("encode", "prompt"): texts}
        with self.traced(("encode", "video")):
            self.latents = b.encode_video(self.video(self.frames, self.height, self.width))
        with self.traced(("encode", "prompt")):
            self.cond = b.encode_prompt(cfg.prompt)
        if v.first_frame_condition:
            parts[("encode", "image")] = [m for name, m in encoders.items() if not name.startswith("text_encoder")]
            with self.traced(("encode", "image")):
                first = np.zeros((self.height, self.width, 3), np.uint8)
                self.cond = self.cond.merged(b.encode_image(first, self.frames, self.height, self.width))
        self.motion_latents = self.latents
        if cfg.motion.steps and cfg.motion.downsample > 1:
            parts[("encode", "shrunk")] = vae
            factor = cfg.motion.downsample
            with self.traced(("encode", "shrunk")):
                self.motion_latents = b.encode_video(self.video(self.frames, self.height // factor,
                                                                self.width // factor))
        if cfg.spatial.steps:
            parts[("encode", "frame")] = vae
            with self.traced(("encode", "frame")):
                one = b.encode_video(self.video(1, self.height, self.width))
                self.frame_latents = torch.cat([one] * self.frames)
        self.record("encode", None, parts, 1)

    def classify(self) -> None:
        for expert in self.backbone.experts:
            key = ("classify", expert.name or None)
            with self.traced(key):
                head_scores(self.backbone, expert, self.latents, self.cond, self.cfg.heads)
            self.record("classify", key[1], {key: [expert.module]}, 1)

    def tune(self, adapter: str, settings: TrainSettings, inputs, **loss) -> None:
        """One optimizer step per expert of the stage, as `train_adapter` takes it, after adding the stage's LoRA."""
        shift = settings.timestep_shift or self.backbone.clip_shift(self.frames, self.height, self.width)
        for expert in stage_experts(self.backbone, settings):
            spatial, temporal = both_kinds_on_every_layer(expert)
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
                for param in params:  # AdamW's moments, as every step after the first holds them from its start
                    param.grad = torch.zeros_like(param)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                generator = step_generator(settings.seed, 0, 3)
                micro_step(self.backbone, expert, inputs(0, generator), generator, settings, shift, **loss)
                if settings.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                state = tensor_bytes([p.grad for p in params]) + tensor_bytes(  # (AdamW's step counts: on the CPU)
                    [v for held in optimizer.state.values() for k, v in held.items() if k != "step"])
                optimizer.zero_grad(set_to_none=True)
                del optimizer
            transformer.eval()
            if settings.grad_checkpointing:
                transformer.disable_gradient_checkpointing()
            set_trainable(transformer, None)
            self.record(adapter, key[1], {key: [transformer]}, settings.steps, state)

    def generate(self) -> None:
        """One guided sampling step of the family's pipeline with both LoRAs, then its VAE decode. Records: the
        pipeline's encoding of the prompt (once), its denoising step (begun by the first transformer call, as
        many as the recipe's steps), its decode (begun when it calls `vae.decode`)."""
        g, b = self.cfg.generate, self.backbone
        vae = b.encoders()["vae"]
        original = vae.decode
        denoise = ("generate", "denoise")

        def decode(*args, **kwargs):
            self.trace.begin(("decode", None))
            return original(*args, **kwargs)

        def first_step(module, args, kwargs) -> None:
            if denoise not in self.trace.records:
                self.trace.begin(denoise)

        image = np.zeros((self.height, self.width, 3), np.uint8) if b.image_mode == "required" else None
        call = pipeline_call(self.cfg.target_prompt or self.cfg.prompt, g.negative_prompt, g.frames or self.frames,
                             g.height or self.height, g.width or self.width, g.steps, g.seed, output_type="pt")
        if "callback_on_step_end" in inspect.signature(type(b.pipe).__call__).parameters:
            call["callback_on_step_end"] = stop_after_one_step  # the recipe's schedule, one step of it traced
        else:  # a pipeline without step callbacks (HunyuanVideo 1.5): a one-step schedule
            call["num_inference_steps"] = 1
        vae.decode = decode
        hooks = [e.module.register_forward_pre_hook(first_step, with_kwargs=True) for e in b.experts]
        try:
            with self.traced(("generate", None)), b.adapters({"motion": g.motion_scale, "spatial": g.spatial_scale}):
                b.sample(call, g.guidance, g.guidance_2, image)
                self.trace.begin("after decode")
            encoders = list(b.encoders().values())  # the prompt's (and an image-to-video pipeline's image's)
            self.record("generate", None, {("generate", None): encoders, denoise: [e.module for e in b.experts]},
                        g.steps, setup=(("generate", None),))
        except UNTRACEABLE as err:
            self.untraced("generate", None, err)
            with self.traced(("decode", None)), torch.no_grad():  # the reference's latents, as the pipeline ends
                vae.decode(self.latents.to(vae.dtype))
        finally:
            del vae.decode
            for hook in hooks:
                hook.remove()
        self.record("decode", None, {("decode", None): [vae]}, 1)

    def untraced(self, stage: str, expert: str | None, err: Exception) -> None:
        """A stage whose code branches on tensor values, which fake tensors do not have: named, with where."""
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(traceback.extract_tb(err.__traceback__))
                      if "site-packages/torch" not in f.filename and f.filename != __file__
                      and not f.filename.endswith("tracing.py")), "?")
        self.trace.end()
        self.stages.append(StagePlan(stage, expert, 0, 0, 0, 0, 0, 0, 0, 0,
                                     untraced=f"its code branches on tensor values ({where})"))

    def each_stage(self, stage: str, run) -> None:
        """Run a stage; if it cannot be traced on fake tensors, record that and go on with the next."""
        try:
            run()
        except UNTRACEABLE as err:
            self.untraced(stage, None, err)

    def run(self) -> list[StagePlan]:
        cfg, m = self.cfg, self.cfg.motion
        self.encode()
        self.each_stage("classify", self.classify)
        if cfg.spatial.steps:
            self.each_stage("spatial", lambda: self.tune(
                "spatial", cfg.spatial, spatial_inputs(self.frame_latents, self.cond, cfg.spatial.batch_size)))
        if m.steps:
            self.each_stage("motion", lambda: self.tune(
                "motion", m, motion_inputs(self.motion_latents, self.cond, m), motion_weight=m.motion_weight,
                motion_form=m.motion_loss))
        self.generate()
        return self.stages


def plan_transfer(cfg: TransferConfig, tflops: float = DEFAULT_TFLOPS) -> Plan:
    """The plan of `cfg`'s job (a resolved config, as `fym transfer` runs it) at its recipe's or given size."""
    m = cfg.model
    if m.source is None or m.family == "toy":
        raise InputError("fym plan is for the diffusers models (--model); the toy model runs on any CPU")
    if cfg.guidance.method != "none":
        raise InputError(f"fym plan does not trace training-free guidance yet (guidance.method: "
                         f"{cfg.guidance.method}); plan the job without it")
    configs, variant = published_configs(m.source)
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with modules_stay():
        return _plan(cfg, configs, variant, fake, tflops)


def _plan(cfg: TransferConfig, configs: Path, variant: str | None, fake: FakeTensorMode, tflops: float) -> Plan:
    m = cfg.model
    frames, height, width = cfg.video.target()
    with weightless(configs, fake):
        backbone = load_backbone(m.source, m.family, m.dtype, "cpu", offload=False)
    if m.vae_tiling is not None:
        backbone.set_vae_tiling(m.vae_tiling)
    backbone.geometry.check(frames, height, width)
    first_frame = first_frame_condition(backbone.image_mode, cfg)  # as `Transfer` decides it, refusals included
    video = cfg.video.model_copy(update={"frames": frames, "height": height, "width": width,
                                         "first_frame_condition": first_frame})
    cfg = cfg.model_copy(update={"video": video})
    check_downsample(backbone, cfg)
    cfg.check_block_swap()
    settings = {"dtype": m.dtype, "offload": m.offload, "keep_encoders": m.keep_encoders,
                "blocks_to_swap": m.blocks_to_swap,
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
    if m.blocks_to_swap:  # offload is refused beside it: not an option to price
        for stage in plan.stages:
            stage.offload_peak_bytes = stage.peak_bytes
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
        if s.untraced:
            rows.append((s.stage, s.expert or "-", f"not traced: {s.untraced}", *[""] * 8))
            continue
        rows.append((s.stage, s.expert or "-", gib(s.resident_bytes), gib(s.held_bytes), gib(s.activation_bytes),
                     gib(s.training_state_bytes), gib(s.peak_bytes), gib(s.offload_peak_bytes),
                     f"{s.flops / 1e12:.1f}", str(s.repeats), f"{s.seconds(plan.tflops):.0f}"))
    widths = [max(len(r[i]) for r in rows if not r[2].startswith("not traced")) for i in range(len(rows[0]))]
    lines = [head] + ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    answer = {True: "yes", False: "no", None: "unknown"}
    fits = ", ".join(f"{gb} GB: {answer[ok]}" for gb, ok in plan.fits().items())
    partial = "" if plan.complete else " of the stages traced"
    lines.append(f"peak{partial} {gib(plan.peak_bytes)} GB; fits {fits}")
    offload_fits = [gb for gb in CARDS if plan.offload_peak_bytes <= gb * GB < plan.peak_bytes]
    if offload_fits and not plan.settings["offload"]:
        lines.append(f"with model.offload: true the peak is {gib(plan.offload_peak_bytes)} GB: it fits "
                     f"{', '.join(f'{gb} GB' for gb in offload_fits)} too")
    return "\n".join(lines)


def fits_card(plan: Plan, gpu_memory: float) -> str:
    """One line: whether the job fits a card of `gpu_memory` GB, and with which option if only with one."""
    untraced = "" if plan.complete else " in the stages that could be traced (the others: unknown)"
    if plan.peak_bytes <= gpu_memory * GB:
        return f"fits {gpu_memory:g} GB{untraced} (peak {gib(plan.peak_bytes)} GB)"
    if not plan.settings["offload"] and plan.offload_peak_bytes <= gpu_memory * GB:
        return f"fits {gpu_memory:g} GB with model.offload: true (peak {gib(plan.offload_peak_bytes)} GB)"
    worst = max(plan.stages, key=lambda s: s.peak_bytes)
    return (f"does not fit {gpu_memory:g} GB: the {worst.stage} stage peaks at {gib(worst.peak_bytes)} GB "
            f"({gib(worst.resident_bytes)} GB parameters); see docs/performance.md for the options per card")



def with_settings(cfg: TransferConfig, change: dict) -> TransferConfig:
    """`cfg` with `change`'s settings ({section: {setting: value}}) set."""
    return cfg.model_copy(update={section: getattr(cfg, section).model_copy(update=values)
                                  for section, values in change.items()})


def options_to_fit(cfg: TransferConfig, gpu_memory: float, tflops: float = DEFAULT_TFLOPS
                   ) -> tuple[list[str], int] | None:
    """The memory options (`MEMORY_OPTIONS`, then model.offload) that make `cfg`'s job fit `gpu_memory` GB, and the
    peak bytes with them: each option set traced again, since each changes what the tuning stages hold. Options the run
    already has are skipped, and one the model refuses (motion.downsample on CogVideoX) is left out; None: none fits."""
    names: list[str] = []
    for name, change in MEMORY_OPTIONS:
        if all(getattr(getattr(cfg, section), key) == value for section, values in change.items()
               for key, value in values.items()):
            continue
        candidate = with_settings(cfg, change)
        try:
            plan = plan_transfer(candidate, tflops)
        except InputError:
            continue
        cfg, names = candidate, [*names, name]
        if plan.peak_bytes <= gpu_memory * GB:
            return names, plan.peak_bytes
        if not plan.settings["offload"] and plan.offload_peak_bytes <= gpu_memory * GB:
            return [*names, "model.offload: true"], plan.offload_peak_bytes
    return None


def options_line(found: tuple[list[str], int] | None, gpu_memory: float) -> str:
    """One line naming the options `options_to_fit` found, with the peak they give, or that none does."""
    if found is None:
        return (f"no option here makes it fit {gpu_memory:g} GB (tried: "
                f"{'; '.join(name for name, _ in MEMORY_OPTIONS)}; model.offload: true)")
    names, peak = found
    return f"fits {gpu_memory:g} GB with {'; '.join(names)} (peak {gib(peak)} GB)"
