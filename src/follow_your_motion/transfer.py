"""The end-to-end job: classify heads -> spatial LoRA -> motion LoRA -> generate, in one run directory.

Each stage is skipped when its artifact is complete and resumes from its newest checkpoint otherwise, so
`fym transfer` can be killed at any point and run again. Encodings of the reference and the prompt are
cached in the run directory (`reference_encodings.py`, the job's base), keyed on everything that determines them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .backbones import load_backbone, variant_name
from .backbones.base import Backbone
from .backbones.experts import Expert
from .config import GenerateSettings, TrainSettings, TransferConfig
from .cost import cpu_note
from .devices import pick_device
from .errors import InputError
from .fitting import fit_video
from .method.export import export_lora
from .method.generate import generate_video, write_outputs
from .method.guidance import Guide, make_guide
from .method.heads import HeadMap, classify_heads, head_maps_json, load_head_maps, plot_head_map
from .method.train import StepCallback, motion_inputs, spatial_inputs, train_adapter, training_finished
from .processes import job_state
from .progress import progress
from .recipes import model_family
from .reference_encodings import Reference, ReferenceEncodings
from .run_settings import (
    REFERENCE_COPY,
    check_downsample,
    check_guidance,
    check_inputs,
    check_run_config,
    first_frame_condition,
    open_config,
    shards_the_model,
)
from .runs import RunDir, atomic_write_text
from .stage_inputs import add_stage_adapter, stage_experts, stage_settings
from .video import VideoClip, load_reference, read_image, read_video, write_video

log = logging.getLogger("follow_your_motion")


@dataclass
class Sample:
    frames: np.ndarray  # (T, H, W, 3) uint8
    paths: dict[str, Path]  # video, side_by_side, side_by_side_gif


class Transfer(ReferenceEncodings):
    """One run: its config, its directory, its backbone, and each stage as a method.

    Made from a config (`Transfer(cfg, out)`), it reads the reference and fits it to the model (the frame count
    and size chosen for the clip go into the run's config.yaml). Made from a run directory (`Transfer.open`), it
    needs only the model: generation uses the run's copy of the reference, and only a stage that still has to
    tune reads the original video."""

    def __init__(self, cfg: TransferConfig, out: Path, backbone: Backbone | None = None,
                 seen: VideoClip | None = None) -> None:
        from_run = seen is not None
        info = None if from_run else check_inputs(cfg, out)  # bad input is refused before the model loads
        self.run = RunDir(out)
        m = cfg.model
        device = pick_device(m.device, m.dtype)
        self.state = job_state(device)  # before anything else makes accelerate's state
        if self.state.num_processes > 1 and device != "cpu":
            device = str(self.state.device)  # each process of a launch on its own accelerator
        sharded = shards_the_model(cfg, self.state.num_processes)
        if backbone is None:
            tunes = not from_run and (cfg.spatial.steps or cfg.motion.steps)
            if device == "cpu" and m.source is not None and tunes and self.state.is_main_process:  # a real checkpoint
                log.info(cpu_note(m.source, model_family(m.model_dump()), cfg))
            # sharded: each process moves only its shard of the transformers onto its device, not the whole pipeline
            cfg.check_block_swap()
            if m.blocks_to_swap and self.state.num_processes > 1:
                raise InputError("model.blocks_to_swap runs in one process: DDP and FSDP need every weight where "
                                 "they put it; leave it at 0 with several (torchrun, accelerate)")
            backbone = load_backbone(m.source, m.family, m.dtype, "cpu" if sharded else device, m.offload,
                                     m.blocks_to_swap)
        self.backbone = backbone
        if sharded:
            self.backbone.shard_experts(self.state.device)
        if m.attention_backend is not None:
            self.backbone.set_attention_backend(m.attention_backend)
        if m.vae_tiling is not None:
            self.backbone.set_vae_tiling(m.vae_tiling)
        # offload already keeps every component off the device between uses: nothing to park then
        self.backbone.park_device = None if m.keep_encoders or m.offload else torch.device("cpu")
        if m.compile:
            if self.state.num_processes > 1:
                raise InputError("model.compile runs in one process; leave it off with several (torchrun, accelerate)")
            self.backbone.compile_blocks()
        # Fit the reference before anything is written, so bad input never touches the run directory.
        if not from_run:
            video, notes = fit_video(cfg.video, info, self.backbone.geometry, cfg.reference)
            video.first_frame_condition = first_frame_condition(self.backbone.image_mode, cfg)
            cfg = cfg.model_copy(update={"video": video})
            for note in notes:
                log.info(note)
        self.cfg = cfg
        v = cfg.video
        self.backbone.geometry.check(v.frames, v.height, v.width)
        check_downsample(self.backbone, cfg)
        if not from_run:
            seen = load_reference(cfg.reference, v.frames, v.height, v.width, fps=v.fps, start=v.start, info=info)
            check_run_config(self.run, cfg)
            copy = self.run.path(REFERENCE_COPY)
            if self.state.is_main_process and not copy.exists():
                write_video(copy, seen.frames, seen.fps)
        self.clip = seen  # the reference as the model sees it (from the run's copy when opened from a run)
        self._exact = None if from_run else seen  # the same frames decoded from the original, once needed
        self._reference: Reference | None = None
        self._motion_reference: Reference | None = None  # stage 3's, when it tunes on a shrunk clip
        self._key = ""  # cache key of the reference encodings, set by reference()
        self.on_step: StepCallback | None = None  # progress of the tuning stages; returning True stops them
        self._head_maps: dict[str, HeadMap] | None = None  # stage 1's result, once made or read

    @classmethod
    def open(cls, run: Path, device: str | None = None, backbone: Backbone | None = None,
             model: dict | None = None) -> Transfer:
        """An existing run, for generation (and for finishing its stages while the reference still exists);
        `model`: settings that do not change what was tuned (`UNTUNED`: compile, keep_encoders, ...)."""
        cfg = open_config(run)
        if device is not None:
            cfg.model.device = device
        if model:
            cfg.model = cfg.model.model_validate(cfg.model.model_dump() | model)
        copy = Path(run) / REFERENCE_COPY
        if copy.is_file():
            return cls(cfg, run, backbone, seen=read_video(copy))
        return cls(cfg, run, backbone)

    def encode(self) -> Reference:
        """Every encoding tuning needs (the reference, its caption, its first frame, stage 2's single frames),
        cached; then the encoders leave the accelerator (unless `model.keep_encoders`), so the tuning stages'
        peak memory is the transformers' alone. They come back only to encode something new or to generate."""
        ref = self.reference()
        if self.cfg.spatial.steps and not self.stage_done("spatial"):
            self.frame_latents()
            self.frame_conditions()
        if self.cfg.motion.steps and not self.stage_done("motion"):
            self.motion_reference()
        self.backbone.park_encoders()
        return ref

    # -- stages ---------------------------------------------------------------------------------
    def classify(self) -> dict[str, HeadMap]:
        """Stage 1 for every expert: expert name -> its head map (heads.json; a heads*.png per expert)."""
        if self._head_maps is None and self.run.heads.exists():
            self._head_maps = load_head_maps(self.run.heads)
        if self._head_maps is None:
            ref = self.reference()  # what stage 1 needs, no more (`encode` caches the later stages' inputs)
            self.backbone.park_encoders()
            maps = {e.name: classify_heads(self.backbone, e, ref.latents, ref.cond, self.cfg.heads)
                    for e in progress(self.backbone.experts, desc="stage 1: classify heads")}
            if self.state.is_main_process:
                for expert in self.backbone.experts:
                    plot_head_map(maps[expert.name], self.run.path(f"heads{expert.suffix}.png"))
                    self.run.log("heads", expert=expert.name, **maps[expert.name].to_json()["total"])
                atomic_write_text(self.run.heads, json.dumps(head_maps_json(maps), indent=1))
            self.state.wait_for_everyone()
            self._head_maps = maps
        return self._head_maps

    def stage_experts(self, settings: TrainSettings) -> list[Expert]:
        return stage_experts(self.backbone, settings)

    def stage_done(self, stage: str) -> bool:
        """Whether a stage's artifacts are all complete ("classify", "spatial", "motion")."""
        if stage == "classify":
            return self.run.heads.exists()
        settings = {"spatial": self.cfg.spatial, "motion": self.cfg.motion}[stage]
        return all(self.run.lora(stage, e.suffix).exists() for e in self.stage_experts(settings))

    def _load_saved(self, adapter: str) -> None:
        """Load every expert's saved LoRA file of `adapter` that is not loaded yet."""
        for expert in self.backbone.experts:
            path = self.run.lora(adapter, expert.suffix)
            if path.exists() and adapter not in expert.loaded_adapters():
                self.backbone.load_lora(expert, str(path), adapter)

    def _tune(self, adapter: str, kind: str, settings: TrainSettings, inputs, stop_after: int | None, **loss
              ) -> list[Path] | None:
        """Train one adapter per expert of the stage on the heads of `kind`, each on its own noise levels, unless
        its LoRA file exists; load it either way. None if a training was stopped before its last step."""
        self._load_saved(adapter)
        settings = stage_settings(self.backbone, settings, self.cfg.video)
        paths = []
        for expert in self.stage_experts(settings):
            path, stage = self.run.lora(adapter, expert.suffix), f"{adapter}{expert.suffix}"
            paths.append(path)
            if path.exists():
                continue
            if self.cfg.heads.select == "all":  # ablation: no decoupling, every head of every layer
                selection = {layer: list(range(site.heads)) for layer, site in enumerate(expert.sites)}
            else:
                selection = self.classify()[expert.name].heads(kind)
            add_stage_adapter(self.backbone, expert, adapter, selection, settings)
            train_adapter(self.backbone, expert, self.run, stage, adapter, settings, inputs, stop_after=stop_after,
                          on_step=self.on_step, **loss)
            if not training_finished(self.run, stage, settings.steps):
                return None  # interrupted on purpose (stop_after, on_step); the next call resumes
            if self.state.is_main_process:
                export_lora(self.backbone, expert, adapter, path)
                self.run.log("saved", adapter=adapter, expert=expert.name, path=path.name)
            self.state.wait_for_everyone()
        return paths

    def tune_spatial(self, stop_after: int | None = None) -> list[Path] | None:
        """Stage 2: spatial-head LoRA on single random frames. Skipped when spatial.steps == 0."""
        s = self.cfg.spatial
        if s.steps == 0:
            return None
        ref = self.encode()
        inputs = spatial_inputs(self.frame_latents(), ref.cond, s.batch_size, self.frame_conditions())
        return self._tune("spatial", "spatial", s, inputs, stop_after)

    def tune_motion(self, stop_after: int | None = None) -> list[Path] | None:
        """Stage 3: temporal-head LoRA on sparse frames with adaptive RoPE, spatial LoRA frozen.
        Skipped when motion.steps == 0 (the untuned base model)."""
        if self.cfg.spatial.steps and self.tune_spatial() is None:
            return None  # stage 2 was stopped (on_step): stage 3 trains over the finished spatial LoRA only
        m = self.cfg.motion
        if m.steps == 0:
            return None
        self.encode()
        ref = self.motion_reference()
        inputs = motion_inputs(ref.latents, ref.cond, m)
        return self._tune(
            "motion", "temporal", m, inputs, stop_after, motion_weight=m.motion_weight, motion_form=m.motion_loss
        )

    def generate(self, prompt: str | None = None, settings: GenerateSettings | None = None,
                 name: str = "result") -> Sample:
        """Sample the target prompt with the tuned LoRAs; writes samples/<name>.mp4 and side-by-sides."""
        for adapter in ("motion", "spatial"):
            self._load_saved(adapter)
        settings = settings or self.cfg.generate
        prompt = prompt or self.cfg.target_prompt or self.cfg.prompt
        v = self.cfg.video
        self.backbone.check_image(settings.image is not None)
        image = read_image(settings.image) if settings.image else None
        with self.backbone.encoders_ready():  # the text encoder and the VAE: parked while tuning
            guide = self.guide(prompt, settings, image is not None)
            result = generate_video(self.backbone, prompt, settings, v.frames, v.height, v.width, image, guide)
        shown = self.clip
        paths = {}
        if self.state.is_main_process:
            if guide is not None:
                self.run.log("guidance", method=self.cfg.guidance.method, steps=guide.history)
            paths = write_outputs(result, shown.frames, self.run.samples, name, shown.fps)
            if guide is not None:  # what the guidance made besides the sample (DiTFlow's optimised positions)
                paths |= guide.outputs(self.run.samples, name)
            self.run.log("generated", prompt=prompt, **{k: p.name for k, p in paths.items()})
        return Sample(result, paths)

    def guide(self, prompt: str, settings: GenerateSettings, image_given: bool) -> Guide | None:
        """The run's training-free guidance (`guidance.method`) for sampling `prompt`, or None; it compares the sample
        with the reference latent by latent, so it samples at the reference's frame count and size."""
        if self.cfg.guidance.method == "none":
            return None
        check_guidance(self.cfg, settings, self.run.root)  # the CLI checks before loading; the app and bench here
        source = self.cfg.model.source
        return make_guide(self.backbone, self.cfg.guidance, self.guidance_reference(), prompt, settings.steps,
                          settings.seed, image_given, model=source or "toy",
                          variant=variant_name(source))

    def all(self) -> Sample:
        """Every stage in order, reusing whatever is already complete."""
        self.backbone.check_image(self.cfg.generate.image is not None)  # before tuning, not after
        self.encode()  # every encoding of the run at once, before the encoders leave the accelerator
        self.classify()
        self.tune_motion()
        return self.generate()
