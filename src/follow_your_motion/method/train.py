"""Stage 2 (spatial LoRA on single frames) and stage 3 (motion LoRA on sparse frames) training.

One loop serves both stages; they differ only in what a step's inputs are (`StepInputs`) and in the loss
weights. All randomness of a step (frames, noise, timesteps) is drawn from generators seeded by
(seed, step, micro-batch, process), and a checkpoint holds the LoRA, the optimizer and the LR scheduler,
so a run resumed from a checkpoint computes exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator

from ..backbones.base import Backbone
from ..backbones.experts import Expert
from ..backbones.inputs import Conditioning
from ..config import MotionSettings, TrainSettings
from ..errors import InputError
from ..progress import progress
from ..runs import RunDir, atomic_save_tensors, atomic_write_text, load_tensors
from .early_stop import Plateau
from .lora import adapter_state, load_adapter_state, set_trainable
from .losses import flow_matching_loss, motion_loss
from .objective import training_sample
from .sparse import rope_positions, sample_frames, step_generator


@dataclass
class StepInputs:
    latents: torch.Tensor  # clean latents (B, C, F, h, w)
    cond: Conditioning  # batch B, cut to the step's frames
    frame_positions: torch.Tensor | None = None
    spatial_stride: int = 1  # latents of the clip shrunk this many times, at the full size's positions


InputFn = Callable[[int, torch.Generator], StepInputs]
# Called after every optimizer step with (stage, step done, total steps, loss parts); returning True stops the
# stage there, checkpointed, so that running it again resumes (how an app cancels a run).
StepCallback = Callable[[str, int, int, dict[str, float]], bool | None]


def spatial_inputs(frame_latents: torch.Tensor, cond: Conditioning, batch_size: int,
                   own_first_frames: Conditioning | None = None) -> InputFn:
    """Stage 2: `batch_size` random single frames of the reference (an image objective).

    `frame_latents` is (T, C, 1, h, w): every pixel frame encoded on its own as an image. No frame is given
    clean (each one is the image to learn). Image-to-video: `own_first_frames` (batch T) is each frame's
    conditioning as its own first frame, which is how the model sees a one-frame clip: the condition agrees
    with the frame, as in its training; conditioning a frame on the reference's first frame instead would teach
    the LoRA to override the condition (docs/method.md). Per-frame conditioning without it is cut to its first
    latent frame."""
    single = cond.select_frames(torch.tensor([0])).without_fixed()

    def inputs(step: int, generator: torch.Generator) -> StepInputs:
        picks = torch.randint(len(frame_latents), (batch_size,), generator=generator)
        batch = single.expand(batch_size)
        if own_first_frames is not None:
            batch = batch.merged(own_first_frames.take(picks))
        return StepInputs(frame_latents[picks], batch)

    return inputs


def motion_inputs(latents: torch.Tensor, cond: Conditioning, settings: MotionSettings) -> InputFn:
    """Stage 3: K of the F latent frames of the clip (and of any per-frame conditioning), with their adaptive
    RoPE positions; frames the model is given clean (TI2V's first frame) are kept on top of the K. `latents`
    are those of the clip shrunk `settings.downsample` times, whose tokens take the full size's spacing."""
    total = latents.shape[2]
    fixed = torch.tensor(cond.fixed_frames, dtype=torch.long)

    def inputs(step: int, generator: torch.Generator) -> StepInputs:
        kept = sample_frames(total, settings.keep_frames or total, settings.sampling, settings.seed, step)
        if len(fixed):
            kept = torch.cat([kept, fixed]).unique()
        positions = rope_positions(kept, total, settings.rope)
        batch = settings.batch_size
        return StepInputs(latents[:, :, kept].expand(batch, -1, -1, -1, -1), cond.select_frames(kept).expand(batch),
                          positions, settings.downsample)

    return inputs


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Mean of the replicated LoRA gradients over processes (what DDP does for its parameters)."""
    for p in params:
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(world)


EARLY_STOP = "early_stop.json"  # a checkpoint's plateau state (method/early_stop.py), beside its train_state.pt


def _save(folder: Path, transformer: torch.nn.Module, adapter: str, optimizer, scheduler, step: int,
          plateau: Plateau | None) -> None:
    atomic_save_tensors(folder / "lora.safetensors", adapter_state(transformer, adapter))
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step}
    torch.save(state, folder / "train_state.pt")
    if plateau is not None:
        atomic_write_text(folder / EARLY_STOP, json.dumps(plateau.state_dict()))


def _restore(folder: Path, transformer: torch.nn.Module, adapter: str, optimizer, scheduler,
             plateau: Plateau | None) -> int:
    try:
        load_adapter_state(transformer, adapter, load_tensors(folder / "lora.safetensors"))
        state = torch.load(folder / "train_state.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if plateau is not None and (folder / EARLY_STOP).exists():
            plateau.load_state_dict(json.loads((folder / EARLY_STOP).read_text()))
        return int(state["step"])
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        raise InputError(f"{folder}: corrupt checkpoint ({err})") from err


def lr_factor(settings: TrainSettings) -> Callable[[int], float]:
    """The learning rate's factor at each step: a linear warmup over `warmup_steps`, then `lr_schedule`: held at
    1, or decayed along a cosine or a line from 1 at the first step after warmup to 0 one step after the last
    (as diffusers' schedulers do). A pure function of the step, so a resumed run's scheduler continues exactly."""
    warmup, steps = settings.warmup_steps, settings.steps

    def factor(step: int) -> float:
        if step < warmup or settings.lr_schedule == "constant":
            return min(1.0, (step + 1) / (warmup + 1))
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress)) if settings.lr_schedule == "cosine" else 1 - progress

    return factor


def training_finished(run: RunDir, stage: str, steps: int) -> bool:
    """Whether the stage's newest checkpoint ends its training: all `steps` done, or stopped on a plateau."""
    found = run.checkpoints(stage)
    if not found:
        return False
    step, folder = found[-1]
    marker = folder / EARLY_STOP
    return step >= steps or (marker.exists() and json.loads(marker.read_text())["stopped"])


def process_mean(world: int, device: torch.device) -> Callable[[float], float]:
    """The mean of a host number over the processes (each one's losses are its own micro-batches'), so that
    every process takes the same early-stopping decision; the number itself with one process."""
    if world == 1:
        return float

    def mean(value: float) -> float:
        total = torch.tensor([value], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(total)
        return total.item() / world

    return mean


def make_optimizer(params: list[torch.nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    """The optimizer of a LoRA stage: AdamW (the release's) on the adapter's weights."""
    return torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)


def micro_step(backbone: Backbone, expert: Expert, batch: StepInputs, generator: torch.Generator,
               settings: TrainSettings, shift: float, motion_weight: float = 0.0, motion_form: str = "paper"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One micro-batch of a training step: noise and noise levels drawn from `generator`, the expert's prediction,
    the losses and their backward pass (scaled for gradient accumulation). Returns the (flow-matching, motion)
    losses, detached. `fym plan` traces this same function at real size."""
    latents = batch.latents.to(backbone.device)
    noise = backbone.draw_noise(latents.shape, generator).to(latents)
    noisy, timesteps, target = training_sample(backbone, latents, noise, generator, settings.timestep_weighting, shift,
                                               expert.sigma_range)
    autocast_dtype = torch.bfloat16 if settings.mixed_precision == "bf16" else None
    with torch.autocast(backbone.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        pred = backbone.predict(expert, noisy, timesteps, batch.cond, batch.frame_positions, batch.spatial_stride)
    if batch.cond.fixed_frames:  # frames given clean are not predicted: leave them out
        learnt = [f for f in range(pred.shape[2]) if f not in batch.cond.fixed_frames]
        pred, target = pred[:, :, learnt], target[:, :, learnt]
    fm = flow_matching_loss(pred, target)
    mo = motion_loss(pred, target, motion_form) if motion_weight else fm.new_zeros(())
    ((fm + motion_weight * mo) / settings.grad_accum).backward()
    return fm.detach(), mo.detach()


def optimizer_step(backbone: Backbone, expert: Expert, params: list[torch.nn.Parameter],
                   optimizer: torch.optim.Optimizer, inputs: InputFn, step: int, settings: TrainSettings, shift: float,
                   motion_weight: float = 0.0, motion_form: str = "paper", world: int = 1, rank: int = 0,
                   fsdp: bool = False) -> torch.Tensor:
    """One optimizer step of a stage: `settings.grad_accum` micro-batches (each process its own, drawn from
    (seed, step, process, micro-batch)), the gradients averaged over processes where FSDP shards, clipped, applied.
    Returns the step's (flow-matching, motion) losses, mean of its micro-batches, float64 on the device.
    `fym plan` traces this same function for the first step of every stage at real size."""
    optimizer.zero_grad(set_to_none=True)
    losses = []
    for micro in range(settings.grad_accum):
        stream = (step * world + rank) * settings.grad_accum + micro
        generator = step_generator(settings.seed, stream, 3)
        losses.append(torch.stack(micro_step(backbone, expert, inputs(step, generator), generator, settings, shift,
                                             motion_weight, motion_form)))
    if fsdp:
        average_gradients(params, world)
    if settings.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
    optimizer.step()
    return torch.stack(losses).double().mean(0)


@contextlib.contextmanager
def trainable(transformer: torch.nn.Module, adapter: str, settings: TrainSettings
              ) -> Iterator[list[torch.nn.Parameter]]:
    """While active, `adapter`'s weights are the only trainable parameters of `transformer` (yielded), in
    training mode, with gradient checkpointing where the stage asks for it; all undone on leaving."""
    params = set_trainable(transformer, adapter)
    if settings.grad_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    try:
        yield params
    finally:
        transformer.eval()
        if settings.grad_checkpointing:
            transformer.disable_gradient_checkpointing()
        set_trainable(transformer, None)


def train_adapter(
    backbone: Backbone,
    expert: Expert,
    run: RunDir,
    stage: str,
    adapter: str,
    settings: TrainSettings,
    inputs: InputFn,
    motion_weight: float = 0.0,
    motion_form: str = "paper",
    stop_after: int | None = None,
    on_step: StepCallback | None = None,
) -> dict[str, torch.Tensor]:
    """Train `expert`'s `adapter` (already added to it) for `settings.steps` optimizer steps, on noise levels of
    the expert's range.

    Resumes from the stage's newest complete checkpoint. `stop_after` ends the call after that many
    steps in total (checkpointing first), which is how tests and schedulers interrupt a run; so does `on_step`
    returning True, and `settings.early_stop` on a loss plateau (`training_finished` tells that apart)."""
    transformer = expert.module
    with trainable(transformer, adapter, settings) as params:
        optimizer = make_optimizer(params, settings)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(settings))
        accelerator = Accelerator(cpu=backbone.device.type == "cpu")
        rank, world = accelerator.process_index, accelerator.num_processes
        fsdp = world > 1 and settings.distributed == "fsdp"
        if fsdp:
            backbone.shard_experts(backbone.device)  # once: a later stage (or expert) finds its transformer sharded
        model = accelerator.prepare_model(transformer) if world > 1 and not fsdp else transformer

        plateau = Plateau(settings.early_stop) if settings.early_stop is not None else None
        start = 0
        if found := run.checkpoints(stage):
            start = _restore(found[-1][1], transformer, adapter, optimizer, scheduler, plateau)
            if accelerator.is_main_process:
                run.log("resume", stage=stage, step=start)
        end = settings.steps if stop_after is None else min(settings.steps, stop_after)
        if plateau is not None and plateau.stopped:
            end = start  # the checkpoint is where the stage stopped on a plateau: nothing left to train
        mean_over_processes = process_mean(world, backbone.device)
        bar = progress(range(start, end), desc=f"{stage} LoRA", initial=start, total=settings.steps,
                       disable=not accelerator.is_main_process)
        shift = backbone.flow_shift if settings.timestep_shift is None else settings.timestep_shift
        with backbone.denoiser_as(expert, model):
            for step in bar:
                began = time.perf_counter()
                totals = optimizer_step(backbone, expert, params, optimizer, inputs, step, settings, shift,
                                        motion_weight, motion_form, world, rank, fsdp)
                scheduler.step()
                done = step + 1
                parts = dict(zip(("fm", "motion"), totals.tolist(), strict=True))  # the step's one host-device sync
                seconds = time.perf_counter() - began
                bar.set_postfix(loss=f"{parts['fm'] + motion_weight * parts['motion']:.4f}", refresh=False)
                stop = bool(on_step and on_step(stage, done, settings.steps, parts))
                watched = parts["motion"] if motion_weight else parts["fm"]  # the motion loss, else the only one
                plateaued = plateau is not None and plateau.update(watched, mean_over_processes)
                stop = stop or plateaued
                if accelerator.is_main_process:
                    run.log("step", stage=stage, step=done, lr=scheduler.get_last_lr()[0], seconds=round(seconds, 4),
                            **parts)
                    if plateaued:
                        run.log("early_stop", stage=stage, step=done, best_window_loss=plateau.best)
                    if done % settings.checkpoint_every == 0 or done == end or stop:
                        save = lambda folder, at=done: _save(  # noqa: E731
                            folder, transformer, adapter, optimizer, scheduler, at, plateau)
                        run.save_checkpoint(stage, done, save)
                accelerator.wait_for_everyone()
                if stop:
                    break
    return adapter_state(transformer, adapter)
