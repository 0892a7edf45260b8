"""The end-to-end job: classify heads -> spatial LoRA -> motion LoRA -> generate, in one run directory.

Each stage is skipped when its artifact is complete and resumes from its newest checkpoint otherwise, so
`fym transfer` can be killed at any point and run again. Encodings of the reference and the prompt are
cached in the run directory, keyed on everything that determines them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState

from .backbones import load_backbone
from .backbones.base import Backbone
from .config import GenerateSettings, TransferConfig
from .method.export import export_lora
from .method.generate import generate_video, write_outputs
from .method.heads import HeadMap, classify_heads, plot_head_map
from .method.lora import add_masked_lora
from .method.train import motion_inputs, spatial_inputs, train_adapter
from .runs import RunDir, atomic_save_tensors, atomic_write_text, digest, load_tensors
from .video import load_reference, to_tensor

# Settings that do not change what tuning produces; a run may be reused with different values
# (e.g. tuned on a GPU, generated from on a laptop).
UNTUNED = {"generate": True, "target_prompt": True, "model": {"device", "offload"}}


@dataclass
class Reference:
    frames: np.ndarray  # (T, H, W, 3) uint8, as the model sees it
    fps: float
    latents: torch.Tensor  # (1, C, F, h, w)
    text: torch.Tensor  # (1, L, D)


def flatten(data: dict, prefix: str = "") -> dict[str, object]:
    """Nested settings as {"section.key": value}."""
    out: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_run_config(run: RunDir, cfg: TransferConfig) -> None:
    """Refuse to mix artifacts of different settings in one run directory; write config.yaml if new."""
    if run.config.exists():
        old = flatten(TransferConfig.load(run.config).model_dump(exclude=UNTUNED))
        new = flatten(cfg.model_dump(exclude=UNTUNED))
        diffs = [f"{key}: {old.get(key)!r} -> {value!r}" for key, value in new.items() if old.get(key) != value]
        if diffs:
            raise ValueError(
                f"{run.root} holds a run made with other settings ({'; '.join(diffs[:3])}); "
                "use another --out or delete it"
            )
    elif PartialState().is_main_process:
        cfg.save(run.config)


@dataclass
class Sample:
    frames: np.ndarray  # (T, H, W, 3) uint8
    paths: dict[str, Path]  # video, side_by_side, side_by_side_gif


class Transfer:
    """One run: its config, its directory, its backbone, and each stage as a method."""

    def __init__(self, cfg: TransferConfig, out: Path, backbone: Backbone | None = None) -> None:
        if not cfg.reference:
            raise ValueError("no reference video given")
        if not cfg.prompt:
            raise ValueError("no prompt given")
        self.cfg = cfg
        self.run = RunDir(out)
        self.state = PartialState()
        v, m = cfg.video, cfg.model
        self.backbone = backbone or load_backbone(m.source, m.family, m.dtype, m.device, m.offload)
        self.backbone.geometry.check(v.frames, v.height, v.width)
        # Validate the reference before anything is written, so bad input never touches the run directory.
        self.clip = load_reference(Path(cfg.reference), v.frames, v.height, v.width, fps=v.fps, start=v.start)
        check_run_config(self.run, cfg)
        self._reference: Reference | None = None
        self._key = ""  # cache key of the reference encodings, set by reference()

    def _cached(self, what: str, key: str, compute) -> torch.Tensor:
        path = self.run.cache(what, key)
        if path.exists():
            return load_tensors(path)[what]
        value = compute()
        if self.state.is_main_process:
            atomic_save_tensors(path, {what: value})
        return value

    def reference(self) -> Reference:
        """The reference as frames, latents and caption embeddings (computed once, cached on disk)."""
        if self._reference is None:
            cfg, source = self.cfg, Path(self.cfg.reference)
            v = cfg.video
            clip = self.clip
            stat = source.stat()
            model = (cfg.model.source, cfg.model.family, cfg.model.dtype)
            self._key = digest(model, str(source.resolve()), stat.st_size, stat.st_mtime_ns, v.model_dump())
            frames = to_tensor(clip.frames)
            latents = self._cached("latents", self._key, lambda: self.backbone.encode_video(frames))
            text = self._cached("text", digest(model, cfg.prompt), lambda: self.backbone.encode_prompt(cfg.prompt))
            self._reference = Reference(clip.frames, clip.fps, latents, text)
        return self._reference

    def frame_latents(self) -> torch.Tensor:
        """Every pixel frame of the reference encoded on its own, (T, C, 1, h, w), for stage 2."""
        ref = self.reference()
        frames = to_tensor(ref.frames)

        def encode() -> torch.Tensor:
            return torch.cat([self.backbone.encode_video(frames[:, i : i + 1]) for i in range(frames.shape[1])])

        return self._cached("frame_latents", self._key, encode)

    # -- stages ---------------------------------------------------------------------------------
    def classify(self) -> HeadMap:
        if self.run.heads.exists():
            return HeadMap.load(self.run.heads)
        ref = self.reference()
        head_map = classify_heads(self.backbone, ref.latents, ref.text, self.cfg.heads)
        if self.state.is_main_process:
            plot_head_map(head_map, self.run.path("heads.png"))
            atomic_write_text(self.run.heads, json.dumps(head_map.to_json(), indent=1))
            self.run.log("heads", **head_map.to_json()["total"])
        return head_map

    def _has_adapter(self, name: str) -> bool:
        return name in self.backbone.loaded_adapters()

    def _load_saved(self, adapter: str) -> bool:
        """Make the run's saved LoRA file of `adapter` available in the backbone; False if there is none."""
        path = self.run.lora(adapter)
        if not path.exists():
            return False
        if not self._has_adapter(adapter):
            self.backbone.load_lora(str(path), adapter)
        return True

    def _tune(self, adapter: str, kind: str, settings, inputs, stop_after: int | None, **loss) -> Path | None:
        """Train one adapter on the heads of `kind` unless its LoRA file exists; load it either way."""
        path = self.run.lora(adapter)
        if self._load_saved(adapter):
            return path
        if self.cfg.heads.select == "all":  # ablation: no decoupling, every head of every layer
            selection = {layer: list(range(self.backbone.num_heads)) for layer in range(self.backbone.num_layers)}
        else:
            selection = self.classify().heads(kind)
        add_masked_lora(
            self.backbone, adapter, selection, settings.rank, settings.lora_alpha, settings.include_out,
            seed=settings.seed,
        )
        stage_adapters = {"spatial": 1.0, adapter: 1.0} if self._has_adapter("spatial") else {adapter: 1.0}
        self.backbone.set_active_adapters(stage_adapters)
        train_adapter(self.backbone, self.run, adapter, adapter, settings, inputs, stop_after=stop_after, **loss)
        done = self.run.checkpoints(adapter)
        if not done or done[-1][0] < settings.steps:
            return None  # interrupted on purpose (stop_after); the next call resumes
        if self.state.is_main_process:
            export_lora(self.backbone, adapter, path)
            self.run.log("saved", adapter=adapter, path=path.name)
        self.state.wait_for_everyone()
        return path

    def tune_spatial(self, stop_after: int | None = None) -> Path | None:
        """Stage 2: spatial-head LoRA on single random frames. Skipped when spatial.steps == 0."""
        s = self.cfg.spatial
        if s.steps == 0:
            return None
        inputs = spatial_inputs(self.frame_latents(), self.reference().text, s.batch_size)
        return self._tune("spatial", "spatial", s, inputs, stop_after)

    def tune_motion(self, stop_after: int | None = None) -> Path | None:
        """Stage 3: temporal-head LoRA on sparse frames with adaptive RoPE, spatial LoRA frozen.
        Skipped when motion.steps == 0 (the untuned base model)."""
        self.tune_spatial()
        m = self.cfg.motion
        if m.steps == 0:
            return None
        inputs = motion_inputs(self.reference().latents, self.reference().text, m)
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
        ref = self.reference()
        v = self.cfg.video
        result = generate_video(self.backbone, prompt, settings, v.frames, v.height, v.width)
        paths = write_outputs(result, ref.frames, self.run.samples, name, ref.fps) if self.state.is_main_process else {}
        self.run.log("generated", prompt=prompt, **{k: p.name for k, p in paths.items()})
        return Sample(result, paths)

    def export(self, fmt: str, out_dir: Path | None = None) -> list[Path]:
        """Write every tuned LoRA of the run in `fmt` (diffusers or comfyui) to `out_dir`."""
        folder = Path(out_dir) if out_dir else self.run.root / "export" / fmt
        written = []
        for adapter in ("spatial", "motion"):
            if not self._load_saved(adapter):
                continue
            written.append(export_lora(self.backbone, adapter, folder / f"{adapter}_lora_{fmt}.safetensors", fmt))
        if not written:
            raise ValueError(f"{self.run.root}: no tuned LoRA to export (run the tuning stages first)")
        return written

    def all(self) -> Sample:
        """Every stage in order, reusing whatever is already complete."""
        self.classify()
        self.tune_motion()
        return self.generate()
