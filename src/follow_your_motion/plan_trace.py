"""The stages of `fym transfer`'s job traced one by one on a fake-weight backbone (`JobTrace`), each through the
project's own functions, for `fym plan` (plan.py says what the plan is and is not)."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException, FakeTensorMode
from torch.utils._pytree import tree_flatten

from .backbones import variant_name
from .backbones.base import Backbone, StepHook
from .backbones.block_swap import offloaded_bytes
from .backbones.experts import Expert
from .backbones.inputs import Conditioning
from .config import TrainSettings, TransferConfig
from .method.generate import generate_video
from .method.guidance import DiTFlowGuide, make_guide
from .method.heads import head_scores
from .method.objective import timestep_sigma
from .method.train import make_optimizer, motion_inputs, optimizer_step, spatial_inputs, trainable
from .stage_inputs import (
    add_stage_adapter,
    clip_condition,
    conditions_own_frames,
    own_first_frame,
    stage_experts,
    stage_settings,
)
from .tracing import MemoryTrace, ZeroReads

UNTRACEABLE = (DataDependentOutputException, DynamicOutputShapeException)  # code that needs tensor values


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
    setup_flops: int = 0  # done besides the repeated calls (generation's prompt encoding, its guided steps)

    def seconds(self, tflops: float) -> float:
        return (self.setup_flops + self.flops * self.repeats) / (tflops * 1e12)



def param_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def tensor_bytes(values) -> int:
    leaves, _ = tree_flatten(values)
    return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))


def both_kinds_on_every_layer(expert: Expert) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """(spatial, temporal) selections with both kinds on every layer: the largest pair of LoRAs stage 1 can give."""
    spatial = {layer: list(range(1, site.heads)) for layer, site in enumerate(expert.sites)}
    return spatial, {layer: [0] for layer in range(len(expert.sites))}


class _Decoded(Exception):
    """Ends `Backbone.generate` once its pipeline has decoded."""


class FirstStep:
    """The StepHook `fym plan` generates with: the run's guidance (if any) acting between the sampler's steps as in
    `fym transfer`, and the sampling ended after its first step by the pipeline's own `interrupt` flag (every video
    pipeline checks it at each step), which then decodes as at the end of the recipe's schedule. The first step
    ends with the guidance's first move of the latents, so one plain and one guided step are traced: the guided
    step as its own record, and before it DiTFlow's reference flow (computed at the first guided step, once)."""

    def __init__(self, backbone: Backbone, guide: StepHook | None, trace: MemoryTrace) -> None:
        self.backbone, self.guide, self.trace = backbone, guide, trace

    def velocity(self, step: int, timestep: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return output if self.guide is None else self.guide.velocity(step, timestep, output)

    def latents(self, step: int, timestep: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        self.backbone.pipe._interrupt = True
        if self.guide is None:
            return latents
        if isinstance(self.guide, DiTFlowGuide) and self.guide.injected is None:  # an injection reads none
            self.trace.begin(("guide", "reference"))
            self.guide.reference_flow(self.backbone.expert_for(timestep_sigma(self.backbone, timestep)))
        self.trace.begin(("generate", "guided"))
        with ZeroReads():  # the losses it logs
            return self.guide.latents(step, timestep, latents)

    def end(self) -> None:
        if self.guide is not None:
            self.guide.end()


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
               counts: dict | None = None) -> None:
        """A stage from its trace records: `parts` maps each record's key to the modules that run in it (encoding
        has several: the video with the VAE, the prompt with the text encoders...); the records in `counts` run
        that many times in the job (generation's prompt encoding once, its guided step as many times as the
        guidance guides), the others `repeats` times."""
        counts = counts or {}
        records = {key: self.trace.records[key] for key in parts}
        first = next(iter(records.values()))

        def peak(offload: bool) -> int:
            return max(self.resident(stage, parts[key], offload) + r["peak"] for key, r in records.items())

        flops = sum(r["flops"] for key, r in records.items() if key not in counts)
        once = sum(records[key]["flops"] * n for key, n in counts.items())
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
        """`Transfer.encode`: the reference's latents, the caption's conditioning, the first frame's (image-to-video,
        `clip_condition`), one single frame as stage 2 encodes each (latents, and conditioning where it conditions
        each frame on itself), the shrunk clip stage 3 tunes on (`motion.downsample`) with its own condition."""
        b, cfg = self.backbone, self.cfg
        encoders = self.backbone.encoders()
        vae = [encoders["vae"]]
        texts = [m for name, m in encoders.items() if name.startswith("text_encoder")]
        images = [m for name, m in encoders.items() if not name.startswith("text_encoder")]
        parts = {("encode", "video"): vae, ("encode", "prompt"): texts}
        with self.traced(("encode", "video")):
            self.latents = b.encode_video(self.video(self.frames, self.height, self.width))
        with self.traced(("encode", "prompt")):
            text = b.encode_prompt(cfg.prompt)
        self.cond = text
        if cfg.video.first_frame_condition:
            parts[("encode", "image")] = images
            with self.traced(("encode", "image")):
                self.cond = text.merged(clip_condition(b, self.still(self.height, self.width), self.frames))
        self.motion_latents, self.motion_cond = self.latents, self.cond
        if cfg.motion.steps and cfg.motion.downsample > 1:
            parts[("encode", "shrunk")] = images if cfg.video.first_frame_condition else vae
            height, width = self.height // cfg.motion.downsample, self.width // cfg.motion.downsample
            with self.traced(("encode", "shrunk")):
                self.motion_latents = b.encode_video(self.video(self.frames, height, width))
                if cfg.video.first_frame_condition:
                    self.motion_cond = text.merged(clip_condition(b, self.still(height, width), self.frames))
        self.frame_conditions = None
        if cfg.spatial.steps:
            parts[("encode", "frame")] = vae
            with self.traced(("encode", "frame")):  # one frame traced; each of the others is encoded alike
                one = b.encode_video(self.video(1, self.height, self.width))
                self.frame_latents = torch.cat([one] * self.frames)
            if conditions_own_frames(cfg, self.cond):
                parts[("encode", "frame image")] = images
                with self.traced(("encode", "frame image")):
                    own = own_first_frame(b, self.still(self.height, self.width)[0])
                    self.frame_conditions = Conditioning.stacked([own] * self.frames)
        self.record("encode", None, parts, 1)

    def still(self, height: int, width: int) -> np.ndarray:
        """A clip of this size as `Transfer` holds its frames, (T, H, W, 3) uint8, here its first frame alone: the
        one an image condition reads."""
        return np.zeros((1, height, width, 3), np.uint8)

    def classify(self) -> None:
        for expert in self.backbone.experts:
            key = ("classify", expert.name or None)
            with self.traced(key):
                head_scores(self.backbone, expert, self.latents, self.cond, self.cfg.heads)
            self.record("classify", key[1], {key: [expert.module]}, 1)

    def tune(self, adapter: str, settings: TrainSettings, inputs, **loss) -> None:
        """The first optimizer step of every expert of the stage, through the job's own set-up (`stage_settings`,
        `add_stage_adapter`, `trainable`) and step (`optimizer_step`), with AdamW's moments allocated from its start
        as every later step holds them. The LoRA goes on every head of every layer of its kind (stage 1's choice
        needs the reference's values; a head's share of the LoRA does not change its activations' sizes)."""
        settings = stage_settings(self.backbone, settings, self.cfg.video)
        for expert in stage_experts(self.backbone, settings):
            spatial, temporal = both_kinds_on_every_layer(expert)
            with self.fake:
                add_stage_adapter(self.backbone, expert, adapter, spatial if adapter == "spatial" else temporal,
                                  settings)
            key = (adapter, expert.name or None)
            with trainable(expert.module, adapter, settings) as params, self.traced(key):
                optimizer = make_optimizer(params, settings)
                for param in params:  # AdamW's moments, as every step after the first holds them from its start
                    param.grad = torch.zeros_like(param)
                optimizer.step()
                optimizer_step(self.backbone, expert, params, optimizer, inputs, 0, settings,
                               settings.timestep_shift, **loss)
                state = tensor_bytes([p.grad for p in params]) + tensor_bytes(  # (AdamW's step counts: on the CPU)
                    [v for held in optimizer.state.values() for k, v in held.items() if k != "step"])
                optimizer.zero_grad(set_to_none=True)
                del optimizer
            self.record(adapter, key[1], {key: [expert.module]}, settings.steps, state)

    def generate(self) -> None:
        """`Backbone.generate` with both LoRAs (and the run's guidance), as `fym transfer` calls it, ended after its
        first step (`FirstStep`), then its VAE decode. Records: the pipeline's encoding of the prompt (once), its
        denoising step (begun by the first transformer call, as many as the recipe's steps), the guided step (as
        many as the guidance guides), its decode (begun when it calls `vae.decode`)."""
        cfg, g, b = self.cfg, self.cfg.generate, self.backbone
        vae = b.encoders()["vae"]
        original = vae.decode
        denoise, guided = ("generate", "denoise"), ("generate", "guided")

        def decode(*args, **kwargs):
            self.trace.begin(("decode", None))
            original(*args, **kwargs)
            self.trace.begin("after decode")
            raise _Decoded  # what follows makes host arrays of the frames, which fake tensors cannot give

        def first_step(module, args, kwargs) -> None:
            if denoise not in self.trace.records:
                self.trace.begin(denoise)

        prompt = cfg.target_prompt or cfg.prompt
        image = np.zeros((self.height, self.width, 3), np.uint8) if b.image_mode == "required" else None
        guide = self.guide(prompt, image is not None)
        vae.decode = decode
        hooks = [e.module.register_forward_pre_hook(first_step, with_kwargs=True) for e in b.experts]
        try:
            with self.traced(("generate", None)), contextlib.suppress(_Decoded):
                generate_video(b, prompt, g, self.frames, self.height, self.width, image,
                               FirstStep(b, guide, self.trace))
            encoders = list(b.encoders().values())  # the prompt's (and an image-to-video pipeline's image's)
            experts = [e.module for e in b.experts]
            if guide is not None:
                self.record("guide", None, {key: encoders if key == ("guide", "prompts") else experts
                                            for key in self.trace.records if key[:1] == ("guide",)}, 1)
            parts = {("generate", None): encoders, denoise: experts}
            counts = {("generate", None): 1}
            if guide is not None:
                parts[guided], counts[guided] = experts, guide.guided
            self.record("generate", None, parts, g.steps, counts=counts)
        except UNTRACEABLE as err:
            self.untraced("generate", None, err)
            with self.traced(("decode", None)), torch.no_grad():  # the reference's latents, as the pipeline ends
                original(self.latents.to(vae.dtype))
        finally:
            del vae.decode
            for hook in hooks:
                hook.remove()
        self.record("decode", None, {("decode", None): [vae]}, 1)

    def guide(self, prompt: str, image_given: bool) -> StepHook | None:
        """The run's training-free guidance as `fym transfer` makes it (`make_guide`: the reference and target
        prompts encoded, the reference's noise drawn), following the reference's latents; None without one."""
        cfg, g = self.cfg, self.cfg.generate
        if cfg.guidance.method == "none":
            return None
        with self.traced(("guide", "prompts")):
            return make_guide(self.backbone, cfg.guidance, self.latents, prompt, g.steps, g.seed, image_given,
                              variant=variant_name(cfg.model.source))

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
            self.each_stage("spatial", lambda: self.tune("spatial", cfg.spatial, spatial_inputs(
                self.frame_latents, self.cond, cfg.spatial.batch_size, self.frame_conditions)))
        if m.steps:
            self.each_stage("motion", lambda: self.tune(
                "motion", m, motion_inputs(self.motion_latents, self.motion_cond, m), motion_weight=m.motion_weight,
                motion_form=m.motion_loss))
        self.generate()
        return self.stages
