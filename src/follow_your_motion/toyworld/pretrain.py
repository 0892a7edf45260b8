"""Pretraining of the ShapesWorld toy text-to-video model, from scratch or from an earlier toy model's weights,
on rendered clips streamed forever.

Captions describe appearance and, for the straight-line and static programs only, coarse motion; half
of them omit the motion words, because transfer prompts name only the appearance. With `free_paths`, that
share of the objects follows a random path of broad families instead (`toyworld.paths`), captioned with its
appearance only, and kept a stated distance from every evaluation path (`toyworld.exclusion`). Every step's batch is
a pure function of (seed, step), and a checkpoint holds the model, its EMA, the optimizer and the step,
so a resumed run continues exactly where it stopped (across sessions, too).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..backbones.inputs import Conditioning
from ..backbones.toy import ToyBackbone
from ..errors import InputError
from ..method.objective import noisy_sample, sample_sigmas
from ..runs import RunDir, atomic_save_tensors, atomic_write_text
from . import render
from .scenes import random_scene

DEFAULT_META = {
    "transformer": {
        "patch_size": [1, 4, 4], "num_attention_heads": 6, "attention_head_dim": 32, "in_channels": 6,
        "out_channels": 3, "text_dim": 64, "freq_dim": 64, "ffn_dim": 768, "num_layers": 6,
        "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 64,
    },
    "text": {"dim": 64, "layers": 1, "max_words": 16},
    "sampler": {"shift": 3.0},
    "time_span": 9,  # RGB + one time channel (see ToyBackbone.time_channel) ...
    "coordinate_channels": True,  # ... + x and y channels (ToyBackbone.coordinates)
    "video": {"frames": 9, "height": 32, "width": 32},
    "vocabulary": list(render.VOCABULARY),
}
CATEGORY_WEIGHTS = {"single": 0.7, "multi": 0.15, "camera": 0.1, "human": 0.05}


def new_run_meta(noise_correlation: float | None = None, layers: int | None = None,
                 heads: int | None = None) -> dict | None:
    """DEFAULT_META with a new run's choices (None for each = the default); None when nothing is chosen, so a
    resume keeps the config stored with the run. Heads keep 32 channels each and the MLP 4x the width."""
    if noise_correlation is None and layers is None and heads is None:
        return None
    meta = copy.deepcopy(DEFAULT_META)
    if noise_correlation is not None:
        meta["noise_correlation"] = noise_correlation
    if layers is not None:
        meta["transformer"]["num_layers"] = layers
    if heads is not None:
        width = heads * meta["transformer"]["attention_head_dim"]
        meta["transformer"] |= {"num_attention_heads": heads, "ffn_dim": 4 * width}
    return meta


@dataclass
class PretrainSettings:
    steps: int = 20000
    batch_size: int = 16
    lr: float = 4e-4
    warmup: int = 200
    weight_decay: float = 0.01
    ema: float = 0.999
    motion_caption_rate: float = 0.5
    # Share of empty captions, so the unconditional prediction that classifier-free guidance subtracts is
    # one the model was trained on (steps 0-5000 of the shipped run had none).
    caption_dropout: float = 0.1
    # Warmup-stable-decay: constant lr, then linear decay to zero from `decay_start` to `steps`. None = no
    # decay. A run extended past a finished decay (larger --steps and --decay-start) goes on at the constant lr.
    decay_start: int | None = None
    # Curriculum on where paths lie: anchors from the middle `anchor_spread` of their range (scenes.random_scene).
    # With the model's x/y channels a centred path is one fixed picture per caption and frame, which a small
    # model can learn sooner than the same path anywhere in the frame (docs/toyworld.md).
    anchor_spread: float = 1.0
    # Share of single/multi objects that follow a random path (toyworld.paths: curves, ellipses, polylines,
    # bounces at any timing), captioned with their appearance only: the motion prior of a real model.
    free_paths: float = 0.0
    # Where the trajectory is decided: logit-normal puts ~1% of samples above sigma 0.9, uniform + shift 3
    # about 25%; one-clip experiments (docs/toyworld.md) lose the path exactly there.
    timestep_weighting: str = "uniform"
    timestep_shift: float = 3.0
    checkpoint_every: int = 250
    seed: int = 0
    threads: int = 0  # torch threads; 0 = torch's default
    # Where the model trains ("cpu", "cuda"); batches are rendered on the CPU either way.
    device: str = "cpu"
    # Processes rendering batches ahead of the training loop (0 = render in the loop). On a GPU the renderer,
    # about 1.2 ms per clip on one core, is the bottleneck; batches are the same whatever the number.
    workers: int = 0


def batch(step: int, size: int, meta: dict, settings: PretrainSettings) -> tuple[torch.Tensor, list[str]]:
    """Clips (B, 3, T, H, W) in [-1, 1] and captions for one step, a pure function of (seed, step)."""
    rng = np.random.default_rng([settings.seed, step])
    video = meta["video"]
    categories, weights = zip(*CATEGORY_WEIGHTS.items(), strict=True)
    clips, captions = [], []
    for _ in range(size):
        category = rng.choice(categories, p=weights)
        scene = random_scene(rng, category, render.PRETRAIN_PROGRAMS, video["frames"], video["height"],
                                    video["width"], settings.anchor_spread, settings.free_paths)
        clips.append(render.render(scene).frames)
        text = render.caption(scene, with_motion=bool(rng.random() < settings.motion_caption_rate))
        captions.append("" if rng.random() < settings.caption_dropout else text)
    frames = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    return frames, captions


BATCH_TIMEOUT_S = 600  # seconds a rendering worker may take for one batch


class StepBatches(torch.utils.data.Dataset):
    """(step, *batch(step)) for the steps of one run, so a DataLoader's worker processes can render them ahead."""

    def __init__(self, steps: range, meta: dict, settings: PretrainSettings) -> None:
        self.steps, self.meta, self.settings = steps, meta, settings

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, list[str]]:
        step = self.steps[index]
        return (step, *batch(step, self.settings.batch_size, self.meta, self.settings))


def loader_process_options(workers: int) -> dict:
    """How rendering workers start: spawned, not forked. A fork copies the parent's locks in whatever state its other
    threads (a web app's job workers, a progress bar's monitor, OpenMP's and OpenCV's pools) left them, and a worker
    that waits on one never returns a batch; a spawned one starts clean, at the price of importing torch and this
    package first (the first batch waits seconds for it). The timeout turns a worker that is stuck anyway into an
    error naming it instead of a run that hangs (a batch renders in seconds)."""
    if not workers:
        return {}
    return {"multiprocessing_context": "spawn", "prefetch_factor": 4, "timeout": BATCH_TIMEOUT_S}


def learning_rate(step: int, settings: PretrainSettings) -> float:
    """Linear warm-up, constant, then (with `decay_start`) linear decay to zero at `steps`."""
    warm = min(1.0, (step + 1) / settings.warmup)
    if settings.decay_start is None or step < settings.decay_start:
        return settings.lr * warm
    return settings.lr * warm * max(0.0, (settings.steps - step) / (settings.steps - settings.decay_start))


def flow_loss(model: ToyBackbone, clips: torch.Tensor, captions: list[str], generator: torch.Generator,
              settings: PretrainSettings) -> torch.Tensor:
    """Rectified-flow MSE of the whole model (text encoder included) on clips (B, 3, T, H, W)."""
    text = Conditioning({"text": model.text_encoder(model.text_encoder.tokenize(captions).to(model.device))})
    noise = model.draw_noise(clips.shape, generator).to(model.device)
    sigmas = sample_sigmas(len(clips), generator, settings.timestep_weighting, settings.timestep_shift)
    noisy, timesteps, target = noisy_sample(clips, noise, sigmas, model.num_train_timesteps)
    return torch.nn.functional.mse_loss(model.predict(model.experts[0], noisy, timesteps, text), target)


def weights(model: ToyBackbone) -> list[torch.nn.Parameter]:
    """Every weight of the toy model, transformer then text encoder: one order for the optimizer and the EMA."""
    return list(model.transformer.parameters()) + list(model.text_encoder.parameters())


def trainable(model: ToyBackbone) -> list[torch.nn.Parameter]:
    """Every weight of the toy model, made trainable."""
    params = weights(model)
    for p in params:
        p.requires_grad_(True)
    return params


def export_model(model: ToyBackbone, meta: dict, folder: Path, info: dict) -> None:
    """Write config.json + model.safetensors: the folder `ToyBackbone.load` reads."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"transformer.{k}": v.cpu() for k, v in model.transformer.state_dict().items()}
    tensors |= {f"text.{k}": v.cpu() for k, v in model.text_encoder.state_dict().items()}
    atomic_save_tensors(folder / "model.safetensors", tensors)
    atomic_write_text(folder / "config.json", json.dumps(meta | {"training": info}, indent=1))


def hardware_name(device: torch.device) -> str:
    """What the training ran on, for the model's record (the seconds mean little without it)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def initialise_from(model: ToyBackbone, source: Path) -> dict:
    """Copy a trained toy model's weights into `model` (a new run's start); the input channels the donor lacks
    (new conditioning channels) start at zero, so the start behaves exactly like the donor. Returns what
    meta.json records of the donor."""
    donor = ToyBackbone.load(str(source))
    if donor.text_encoder.vocabulary != model.text_encoder.vocabulary:
        raise InputError(f"{source}: its vocabulary differs from the new run's; it cannot initialise it")
    for target, given in ((model.transformer, donor.transformer), (model.text_encoder, donor.text_encoder)):
        state = target.state_dict()
        for name, tensor in given.state_dict().items():
            into = state.get(name)
            grows_inputs = (into is not None and name == "patch_embedding.weight" and into.dim() == tensor.dim()
                            and into.shape[0] == tensor.shape[0] and into.shape[2:] == tensor.shape[2:]
                            and into.shape[1] > tensor.shape[1])
            if into is None or (into.shape != tensor.shape and not grows_inputs):
                raise InputError(f"{source}: weight {name} {tuple(tensor.shape)} does not fit the new run's model "
                                 f"({None if into is None else tuple(into.shape)})")
            with torch.no_grad():
                if grows_inputs:
                    into.zero_()[:, : tensor.shape[1]].copy_(tensor)
                else:
                    into.copy_(tensor)
    training = json.loads((source / "config.json").read_text()).get("training", {})
    return {"model": str(source), "steps": training.get("steps"), "seconds": training.get("seconds")}


def run_meta(out: Path, meta: dict | None) -> dict:
    """The model config of the run in `out`: fixed by its first start (`meta`, default DEFAULT_META) and kept in
    out/meta.json, so a resume rebuilds the same model; a different `meta` for an existing run is refused."""
    path = out / "meta.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if meta is not None and meta != stored:
            changed = sorted(k for k in set(meta) | set(stored) if meta.get(k) != stored.get(k))
            raise InputError(f"{out} was started with another model config (differs in: {', '.join(changed)}); "
                             "use a new --out")
        return stored
    meta = meta or DEFAULT_META
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(meta, indent=1))
    return meta


def pretrain(out: Path, settings: PretrainSettings, meta: dict | None = None, stop_after: int | None = None,
             init: Path | None = None) -> Path:
    """Train (or resume) in `out`; writes checkpoints/ and the EMA model to `out/model`. A new run starts from
    random weights, or from the toy model folder `init` (recorded in meta.json as "init")."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    run = RunDir(out)
    found = run.checkpoints("pretrain")
    torch.manual_seed(settings.seed)
    if init is not None and not found:
        fresh = meta or DEFAULT_META
        model = ToyBackbone.build(fresh)
        meta = run_meta(Path(out), fresh | {"init": initialise_from(model, Path(init))})
        run.log("init", **meta["init"])
    else:
        meta = run_meta(Path(out), meta)
        model = ToyBackbone.build(meta)
    model.to_device(settings.device)
    params = trainable(model)
    ema = copy.deepcopy(model)
    averaged = weights(ema)
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    start, seconds = 0, 0.0
    if found:
        state = torch.load(found[-1][1] / "state.pt", map_location="cpu", weights_only=True)
        model.transformer.load_state_dict(state["transformer"])
        model.text_encoder.load_state_dict(state["text"])
        ema.transformer.load_state_dict(state["ema_transformer"])
        ema.text_encoder.load_state_dict(state["ema_text"])
        optimizer.load_state_dict(state["optimizer"])
        start, seconds = state["step"], state["seconds"]
        run.log("resume", step=start)
    end = settings.steps if stop_after is None else min(settings.steps, stop_after)
    model.transformer.train()
    model.text_encoder.train()
    loader = torch.utils.data.DataLoader(StepBatches(range(start, end), meta, settings), batch_size=None,
                                         num_workers=settings.workers, **loader_process_options(settings.workers))
    bar = tqdm(loader, initial=start, total=settings.steps, desc="toy pretrain")
    tick = time.perf_counter()
    for step, cpu_clips, captions in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings)
        clips = cpu_clips.to(model.device)
        generator = torch.Generator().manual_seed(settings.seed * 7919 + step)
        loss = flow_loss(model, clips, captions, generator, settings)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        # EMA warm-up: with a fixed 0.999 the random initial weights still make up 0.999^2000 = 14% of the
        # average after 2000 steps, and samples come out as speckle.
        decay = min(settings.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(averaged, params, 1 - decay)  # one fused update: per-tensor launches cost on a GPU
        now = time.perf_counter()  # wall time since the last step: the wait for its batch and any checkpoint included
        seconds, tick = seconds + now - tick, now
        done = step + 1
        value = loss.item()
        bar.set_postfix(loss=f"{value:.4f}")
        run.log("step", step=done, loss=round(value, 5), seconds=round(seconds, 1))
        if done % settings.checkpoint_every == 0 or done == end:
            state = {
                "transformer": model.transformer.state_dict(), "text": model.text_encoder.state_dict(),
                "ema_transformer": ema.transformer.state_dict(), "ema_text": ema.text_encoder.state_dict(),
                "optimizer": optimizer.state_dict(), "step": done, "seconds": seconds,
            }
            run.save_checkpoint("pretrain", done, lambda folder, s=state: torch.save(s, folder / "state.pt"))
            info = {"steps": done, "seconds": round(seconds), "seed": settings.seed,
                    "hardware": hardware_name(model.device), "settings": settings.__dict__}
            export_model(ema, meta, out / "model", info)
    return out / "model"
