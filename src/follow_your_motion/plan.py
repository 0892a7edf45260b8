"""`fym plan`: the job of `fym transfer` traced at real size on fake tensors, to tell what fits which card.

The model is loaded as `fym transfer` loads it (`load_backbone`, the family's backbone and pipeline), built from
its published configs with no weights (`backbones/from_configs.py`) under torch's `FakeTensorMode`; then each
stage runs the project's own functions on a reference of the run's size: the backbone's encoders, stage 1's
scoring pass (`head_scores`) per expert, one optimizer step of stage 2 and of stage 3 per expert, set up and taken
by `fym transfer`'s own code (`stage_settings` and `add_stage_adapter` as `Transfer` calls them, `trainable` and
`optimizer_step` as `train_adapter` calls them) on the inputs it builds (`spatial_inputs`, `motion_inputs`, and its
conditionings: `clip_condition`, `own_first_frame`), the training-free guidance's preparation (`make_guide`: the
"guide" stage), and `Backbone.generate` itself (`generate_video`, with the run's guidance as its step hook) ended
after its first step, which ends with the first guided step, then its VAE decode. `MemoryTrace` counts every tensor
made, so a stage's peak is the parameters on the device plus the most its tensors held at once.

What is not the real run: no values exist, so stage 1's head map is replaced by one that puts both LoRAs on every
layer (the largest LoRAs the run can get), and the values a guidance reads only to log them (its losses) read as 0
(`ZeroReads`); one step stands for all (AdamW's moments made first, as every step after the first holds them; one
denoising step and one guided step for the schedule's); stage 2's single frames are encoded once and stand for
each frame's encoding; which parameters sit on the device is counted from the placement rules (`resident`), since
nothing moves on fake tensors. Code that branches on tensor values cannot run on fake tensors: while the stages are
traced the backbone runs, in its place, code that computes the same values with shapes known beforehand
(`Backbone.on_fake_tensors`: HunyuanVideo 1.5's transformer orders its text tokens by their masks' values, and its
backbone's fixed-shape forward, checked bit for bit against diffusers', does it by a sort; its own intermediates
there, tensors of the text tokens of a few MB, are not diffusers'); a stage that still branches on values is
reported untraced, with where, never guessed. The allocator's fragmentation, CUDA kernels' workspaces and the CUDA
context are not counted; attention runs through the CPU flash kernel's meta function, which, like the CUDA flash
and memory-efficient kernels, never holds the S x S matrix (the math fallback would; an S x S attention mask that a
model builds itself, as HunyuanVideo 1.5's does, is counted). After the pipeline's VAE decode its host-side
postprocessing (frames to uint8 arrays) is not run.

Where it is still not the same code as `fym transfer`: the stages are called here one by one (`JobTrace`), not
through `Transfer`'s stage methods and `train_adapter`'s loop over steps (no run directory, caches, checkpoints,
logs or host reads of losses, which fake tensors cannot give), though with the same set-up, step and input
decisions (`first_frame_condition`, `check_downsample`, `conditions_own_frames`, `check_guided_sampling`). A
model that takes a picture optionally (Wan2.2-TI2V, LTX-2) is planned sampling from text: given a picture, its
backbone samples through a second pipeline the first-step stop does not reach yet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch._subclasses.fake_tensor import FakeTensorMode

from .backbones import detect_variant, hub_variant, load_backbone
from .backbones.base import Backbone
from .backbones.block_swap import offloaded_bytes
from .backbones.from_configs import modules_stay, weightless
from .backbones.variants import BY_NAME
from .config import TransferConfig
from .errors import InputError
from .plan_trace import JobTrace, StagePlan
from .recipes import recipe_names
from .run_settings import check_downsample, check_guided_sampling, first_frame_condition

GB = 1e9
CARDS = (24, 32, 48, 80, 141)  # GB of the cards a plan is checked against
STAGES = ("encode", "classify", "spatial", "motion", "guide", "generate", "decode")  # guide: with guidance only
DEFAULT_TFLOPS = 400.0  # bf16 matrix throughput the predicted seconds assume (an H100's sustained, roughly)
# the settings that lower a job's peak, tried in this order, each on top of those before it (model.offload is priced
# in every plan without tracing again): (what a config file says, the change to the config)
MEMORY_OPTIONS: tuple[tuple[str, dict], ...] = (
    ("spatial.grad_checkpointing: true, motion.grad_checkpointing: true",
     {"spatial": {"grad_checkpointing": True}, "motion": {"grad_checkpointing": True}}),
    ("motion.downsample: 2", {"motion": {"downsample": 2}}),
)


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
    # bytes that `model.blocks_to_swap: N` would keep off the device, at index N - 1; empty where the run already
    # swaps or offloads, or the model has no blocks to swap
    swap_savings: list[int] = field(default_factory=list)

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

    def swap_to_fit(self, gpu_memory: float) -> int | None:
        """The fewest blocks to swap (`model.blocks_to_swap`) that bring every stage under `gpu_memory` GB (0 where it
        fits already): swapping changes only the parameters on the device, the same bytes in every stage, so no new
        trace is needed. None where no count does, or where stages could not be traced."""
        over = self.peak_bytes - gpu_memory * GB
        if not self.complete:
            return None
        if over <= 0:
            return 0
        return next((n for n, saved in enumerate(self.swap_savings, start=1) if saved >= over), None)

    def to_json(self) -> dict:
        stages = [asdict(s) | {"seconds": s.seconds(self.tflops)} for s in self.stages]
        return {"model": self.model, "variant": self.variant, "family": self.family, "recipe": self.recipe,
                "size": list(self.size), "settings": self.settings, "tflops": self.tflops, "stages": stages,
                "complete": self.complete,
                "peak_bytes": self.peak_bytes, "fits": self.fits(), "offload_peak_bytes": self.offload_peak_bytes,
                "fits_with_offload": {str(gb): self.offload_peak_bytes <= gb * GB for gb in CARDS},
                "swap_savings": self.swap_savings,
                "blocks_to_swap_to_fit": {str(gb): self.swap_to_fit(gb) for gb in CARDS}}


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
    check_guided_sampling(cfg, cfg.generate)
    settings = {"dtype": m.dtype, "offload": m.offload, "keep_encoders": m.keep_encoders,
                "blocks_to_swap": m.blocks_to_swap,
                "grad_checkpointing": [cfg.spatial.grad_checkpointing, cfg.motion.grad_checkpointing],
                "mixed_precision": [cfg.spatial.mixed_precision, cfg.motion.mixed_precision],
                "rank": [cfg.spatial.rank, cfg.motion.rank], "keep_frames": cfg.motion.keep_frames,
                "downsample": cfg.motion.downsample, "vae_tiling": backbone.vae_tiling,
                "guidance": cfg.guidance.method}
    plan = Plan(m.source, variant or detect_variant(m.source), m.family, recipe_names(m.model_dump()),
                (frames, height, width), settings, tflops=tflops)
    if not (m.offload or m.blocks_to_swap):
        plan.swap_savings = swap_savings(backbone)
    with backbone.on_fake_tensors():
        plan.stages = JobTrace(cfg, backbone, fake).run()
    if m.offload:  # the run's own placement: offload's peaks are the plan's peaks
        for stage in plan.stages:
            stage.peak_bytes = stage.offload_peak_bytes
    if m.blocks_to_swap:  # offload is refused beside it: not an option to price
        for stage in plan.stages:
            stage.offload_peak_bytes = stage.peak_bytes
    return plan


def swap_savings(backbone: Backbone) -> list[int]:
    """What swapping 1, 2, ... of every expert's blocks keeps off the device (`block_swap.offloaded_bytes`); empty
    where the model has no blocks to swap (the toy)."""
    try:
        blocks = [backbone.expert_blocks(e) for e in backbone.experts]
    except InputError:
        return []
    return [offloaded_bytes(blocks, n) for n in range(1, min(map(len, blocks)))]


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


def options_to_fit(cfg: TransferConfig, gpu_memory: float, tflops: float = DEFAULT_TFLOPS,
                   traced: Plan | None = None) -> tuple[list[str], int] | None:
    """The memory options that make `cfg`'s job fit `gpu_memory` GB, and the peak bytes with them: `MEMORY_OPTIONS`
    one on top of another, each set traced again, since each changes what the tuning stages hold; after each set,
    model.offload (priced in its plan), then block swapping (`swap_options`), which changes no result either.
    Options the run already has are skipped, and one the model refuses (motion.downsample on CogVideoX) is left out;
    `traced`: `cfg`'s plan if made already. None: none fits."""
    names: list[str] = []
    plan = traced or plan_transfer(cfg, tflops)
    for name, change in ((None, {}), *MEMORY_OPTIONS):
        if change:
            if all(getattr(getattr(cfg, section), key) == value for section, values in change.items()
                   for key, value in values.items()):
                continue
            candidate = with_settings(cfg, change)
            try:
                plan = plan_transfer(candidate, tflops)
            except InputError:
                continue
            cfg, names = candidate, [*names, name]
        if plan.complete and plan.peak_bytes <= gpu_memory * GB:
            return names, plan.peak_bytes
        if plan.complete and not plan.settings["offload"] and plan.offload_peak_bytes <= gpu_memory * GB:
            return [*names, "model.offload: true"], plan.offload_peak_bytes
        found = swap_options(cfg, names, plan, gpu_memory, tflops)
        if found is not None:
            return found
    return None


def swap_options(cfg: TransferConfig, names: list[str], plan: Plan, gpu_memory: float, tflops: float
                 ) -> tuple[list[str], int] | None:
    """On top of `names`' options (`cfg`, whose plan is `plan`): the fewest swapped blocks that make the job fit
    (`Plan.swap_to_fit`), else the same with VAE tiling, for a job whose encode or decode beside every component
    still would not fit (tiling changes values near the tiles' seams, so it comes only here); the count chosen is
    traced again to confirm it. A job that refuses swapping (a tuning stage without gradient checkpointing, DiTFlow
    guidance) costs no trace; nor does tiling where the other stages would not fit anyway."""
    try:  # the settings' own refusals (model.compile too), then the run's
        swapping = TransferConfig.model_validate(
            with_settings(cfg, {"model": {"offload": False, "blocks_to_swap": 1}}).model_dump())
        swapping.check_block_swap()
        check_guided_sampling(swapping, swapping.generate)
    except (InputError, ValueError):
        return None
    if cfg.model.offload or cfg.model.blocks_to_swap:  # swapping refuses offload: plan the job without it
        names = [*names, "model.offload: false"] if cfg.model.offload else names
        cfg = with_settings(cfg, {"model": {"offload": False, "blocks_to_swap": 0}})
        plan = plan_transfer(cfg, tflops)
    if not plan.swap_savings:  # no blocks to swap
        return None
    found = _confirmed_swap(cfg, plan, names, gpu_memory, tflops)
    if found is not None or plan.settings["vae_tiling"]:
        return found
    others = [s.peak_bytes for s in plan.stages if s.stage not in ("encode", "decode")]
    if others and max(others) - plan.swap_savings[-1] > gpu_memory * GB:  # tiling changes only those two
        return None
    tiled = with_settings(cfg, {"model": {"vae_tiling": True}})
    return _confirmed_swap(tiled, plan_transfer(tiled, tflops), [*names, "model.vae_tiling: true"], gpu_memory,
                           tflops)


def _confirmed_swap(cfg: TransferConfig, plan: Plan, names: list[str], gpu_memory: float, tflops: float
                    ) -> tuple[list[str], int] | None:
    """`names` if `plan` (of `cfg`) fits already, else with the count `plan` prices as the fewest that fits, if the
    plan traced with that count does fit."""
    if plan.complete and plan.peak_bytes <= gpu_memory * GB:
        return names, plan.peak_bytes
    count = plan.swap_to_fit(gpu_memory)
    if count is None:
        return None
    swapped = plan_transfer(with_settings(cfg, {"model": {"blocks_to_swap": count}}), tflops)
    if swapped.complete and swapped.peak_bytes <= gpu_memory * GB:
        return [*names, f"model.blocks_to_swap: {count}"], swapped.peak_bytes
    return None


def options_line(found: tuple[list[str], int] | None, gpu_memory: float) -> str:
    """One line naming the options `options_to_fit` found, with the peak they give, or that none does."""
    if found is None:
        return (f"no option here makes it fit {gpu_memory:g} GB (tried: "
                f"{'; '.join(name for name, _ in MEMORY_OPTIONS)}; model.offload: true; model.blocks_to_swap, "
                f"with model.vae_tiling: true)")
    names, peak = found
    return f"fits {gpu_memory:g} GB with {'; '.join(names)} (peak {gib(peak)} GB)"
