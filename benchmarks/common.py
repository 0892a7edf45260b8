"""What every benchmark shares: the machine record, result files, side-by-side timing, peak memory, and small
random Wan backbones built from a `cost_model.WanConfig` (so the cost model predicts the very model timed)."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from .cost_model import WanConfig


def one_thread() -> None:
    """Benchmarks run on one torch thread: the machine's cores are shared, and ratios need a quiet core."""
    torch.set_num_threads(1)


def return_freed_memory() -> None:
    """Make glibc hand every large freed block back to the OS (fixed mmap threshold), so the peak resident size
    measured between two points is the peak of live memory, not of what the allocator kept cached. Only for
    memory benchmarks: the extra page faults slow every allocation, so timing benchmarks leave it off."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 64 * 1024)  # M_TRIM_THRESHOLD


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine(device: str = "cpu") -> dict:
    """Where and with what a result was measured."""
    import diffusers
    import peft

    info = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__,
        "diffusers": diffusers.__version__, "peft": peft.__version__, "python": platform.python_version(),
        "device": device, "date": datetime.date.today().isoformat(),
        # 1, 5 and 15 minute load averages when the result was written: the cores are shared, and a load above
        # the 1 thread used here means other jobs competed for them during the run
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    try:  # the commit the working tree sits on (read-only; the tree may hold uncommitted changes)
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        check=False).stdout.strip() or None
    except OSError:
        info["commit"] = None
    return info


def command(module: str, argv: list[str] | None) -> str:
    """The command line that reproduces a result."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", "-m", f"benchmarks.{module}", *args])


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(out: Path, data: dict, table: str, module: str, argv: list[str] | None, device: str = "cpu",
                 quiet: bool = False) -> None:
    """`<out>.json` (the data, the machine and the command) and `<out>.md` (the table); prints the table."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": command(module, argv), "machine": machine(device)} | data
    out.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    header = f"`{record['command']}` on {record['machine']['cpu']}, torch {torch.__version__}\n\n"
    out.with_suffix(".md").write_text(header + table)
    if not quiet:
        print(header + table)


def median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class Rounds:
    """Samples (seconds) of each variant, per round; variants ran one after another within a round."""

    rounds: list[dict[str, list[float]]]

    def pooled(self, name: str) -> list[float]:
        return [x for r in self.rounds for x in r[name]]

    def median(self, name: str) -> float:
        return median(self.pooled(name))

    def ratio(self, name: str, reference: str) -> float:
        """Median over rounds of the two variants' ratio within a round: on a shared machine the load drifts
        between rounds far more than within one, so pairing them cancels most of it."""
        return median([median(r[name]) / median(r[reference]) for r in self.rounds])


def interleaved(variants: dict[str, Callable[[], list[float]]], repeats: int) -> Rounds:
    """Run each variant once per round, `repeats` rounds; each call returns its samples (seconds)."""
    return Rounds([{name: run() for name, run in variants.items()} for _ in range(repeats)])


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call (CPU work: nothing to synchronise)."""
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


# -- memory -------------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


@dataclass
class Peak:
    """Peak memory of a block of code in MiB: above what was in use when it started, and in all."""

    mib: float = 0.0
    absolute_mib: float = 0.0


@contextlib.contextmanager
def peak_memory(device: torch.device | str = "cpu") -> Iterator[Peak]:
    """On CUDA: the allocator's peak. On the CPU: the peak resident set size (Linux: the high-water mark is reset
    through /proc/self/clear_refs), which counts every allocation, torch's and not."""
    peak = Peak()
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield peak
        torch.cuda.synchronize(device)
        peak.absolute_mib = torch.cuda.max_memory_allocated(device) / 2**20
        peak.mib = peak.absolute_mib - start / 2**20
        return
    Path("/proc/self/clear_refs").write_text("5")
    start = _status_kib("VmRSS")
    yield peak
    peak.absolute_mib = _status_kib("VmHWM") / 1024
    peak.mib = peak.absolute_mib - start / 1024


# -- models ---------------------------------------------------------------------------------------------------
def small_config(layers: int = 2, heads: int = 4, head_dim: int = 64, ffn_dim: int | None = None,
                 text_dim: int = 64, channels: int = 16) -> WanConfig:
    """A small Wan2.1-architecture config (the real ones are `cost_model.MODELS`)."""
    return WanConfig(f"random Wan {layers}x{heads}x{head_dim}", layers=layers, heads=heads, head_dim=head_dim,
                     ffn_dim=ffn_dim or 4 * heads * head_dim, text_dim=text_dim, in_channels=channels,
                     out_channels=channels, freq_dim=64)


def random_transformer(cfg: WanConfig, seed: int = 0, rope_max_seq_len: int = 128,
                       device: str | torch.device = "cpu"):
    """A randomly initialised `WanTransformer3DModel` of that config, built on `device`."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    with torch.device(device):
        return WanTransformer3DModel(**cfg.transformer_kwargs(rope_max_seq_len))


def transformer_backbone(cfg: WanConfig, seed: int = 0, rope_max_seq_len: int = 128):
    """The project's `WanBackbone` around a random transformer (no VAE, no text encoder: the benchmarks that use
    it feed latents and text embeddings directly, through `text_condition`)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    from follow_your_motion.backbones.wan import WanBackbone

    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=FlowMatchEulerDiscreteScheduler(),
                       transformer=random_transformer(cfg, seed, rope_max_seq_len))
    return WanBackbone(pipe)


def half_heads(cfg: WanConfig) -> dict[int, list[int]]:
    """A head selection for LoRA benchmarks: the first half of every layer's heads (real classifications give
    some of each kind per layer; the cost does not depend on which)."""
    return {layer: list(range(max(1, cfg.heads // 2))) for layer in range(cfg.layers)}


# -- the project's API, in one place: the benchmarks call the method only through these -------------------------
def expert(backbone):
    """The backbone's transformer as the method sees it (Wan2.1 has one expert for every noise level)."""
    return backbone.experts[0]


def text_condition(text: torch.Tensor):
    """Wan's conditioning from text embeddings (1, L, D), what `encode_prompt` returns."""
    from follow_your_motion.backbones.inputs import Conditioning

    return Conditioning({"text": text})


def add_lora(backbone, adapter: str, selection: dict[int, list[int]], rank: int) -> None:
    """The method's head-masked LoRA (alpha = rank) on the selected heads of q/k/v/o."""
    from follow_your_motion.method.lora import add_masked_lora

    add_masked_lora(expert(backbone), adapter, selection, rank, rank)


def lora_target_names(backbone, selection: dict[int, list[int]]) -> list[str]:
    from follow_your_motion.method.lora import target_modules

    return sorted(target_modules(expert(backbone), selection, include_out=True))


def classify(backbone, latents: torch.Tensor, cond, settings):
    from follow_your_motion.method.heads import classify_heads

    return classify_heads(backbone, expert(backbone), latents, cond, settings)


def predict(backbone, latents: torch.Tensor, timesteps: torch.Tensor, cond, frame_positions=None) -> torch.Tensor:
    return backbone.predict(expert(backbone), latents, timesteps, cond, frame_positions)


def noisy(backbone, latents: torch.Tensor, sigma: float, generator: torch.Generator):
    """(noisy latents, timesteps, velocity target) at one noise level, as the training loop makes them."""
    from follow_your_motion.method.objective import noisy_sample

    noise = backbone.draw_noise(latents.shape, generator).to(latents)
    return noisy_sample(latents, noise, torch.full((len(latents),), sigma), backbone.num_train_timesteps)


def generate(backbone, prompt: str, frames: int, height: int, width: int, steps: int) -> None:
    """Sample with the motion LoRA on and the spatial one off (the method's default), guidance 5."""
    backbone.generate(prompt, negative_prompt="", num_frames=frames, height=height, width=width, steps=steps,
                      guidance=5.0, guidance_2=None, seed=0, adapter_scales={"motion": 1.0, "spatial": 0.0})


def train_steps(backbone, adapter: str, settings, inputs, warmup: int = 1, **loss) -> list[float]:
    """Seconds of each optimizer step of the project's `train_adapter` (its own per-step log), in a throwaway
    run directory that keeps no checkpoint (at 14B the final one is gigabytes of writes, not training), without
    the first `warmup` steps (optimizer state creation, first-touch allocations)."""
    from follow_your_motion.method.train import train_adapter
    from follow_your_motion.runs import RunDir

    class NoCheckpoints(RunDir):
        def save_checkpoint(self, stage: str, step: int, write, keep: int = 2) -> Path:
            return self.checkpoint_dir(stage)

    with TemporaryDirectory() as tmp:
        run = NoCheckpoints(Path(tmp))
        train_adapter(backbone, expert(backbone), run, adapter, adapter, settings, inputs, **loss)
        lines = (Path(tmp) / "log.jsonl").read_text().splitlines()
    seconds = [event["seconds"] for event in map(json.loads, lines) if event.get("event") == "step"]
    return seconds[warmup:]
