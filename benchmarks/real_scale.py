"""Real-size benchmark: every stage of a transfer on Wan2.1-1.3B and Wan2.1-14B at 81 frames of 480x832.

Builds each transformer from its published config with random weights (no download) on the device in bf16,
the Wan2.1 VAE from its published config (diffusers' `AutoencoderKLWan` defaults) in float32, and UMT5-XXL from
its published config in bf16 (random weights, 11.4 GB: what parking the encoders frees) behind a word-level
tokenizer, puts them in a `WanPipeline` behind the project's `WanBackbone`, and runs the project's own code:
encoding of the clip, of its frames one by one and of the prompt; the encoders then go to the CPU as `Transfer`
parks them (seconds and device memory freed recorded; not with `--keep-encoders`); stage 1 (`classify_heads`);
N optimizer steps of stage 2 and of stage 3 dense and sparse (`train_adapter` with head-masked LoRAs at the Wan
recipe's rank, bf16 autocast and gradient checkpointing), and stage 3 sparse once more with the encoders back on
the device (the peak without parking, beside the parked one) and on the clip shrunk `--downsample` times
(`motion.downsample`, its own projection); N generation steps (`backbone.generate`, encoders
on the device, classifier-free guidance, VAE decode timed apart). The two LoRAs take half the heads of every
layer each, not the classified heads: with random
weights the classification is arbitrary, and a split that left the early layers without a LoRA would skip
their backward and time a step no real run takes. Records seconds per step and peak memory per stage, and
projects the whole transfer for the paper's recipe (3,000 + 2,000 steps, K = 5, 50 generation steps), the
paper's without sparse sampling, and the project's Wan recipe (`recipe_config("wan")`). Beside each peak goes
`fym plan`'s prediction for the same settings and measured / planned (`real_scale_plan.py`: which planned stage
answers which measured one, and what differs). The plans are read from `results/real_scale_plan.json`, traced
beforehand on the CPU by `--plan-only`, not at the start of the GPU run: they take minutes of CPU per case and the
GPU run has 8 minutes; a run whose options have no plan there says so under its table. The JSON is rewritten after
every stage, so a run cut short keeps what it measured.

    python -m benchmarks.real_scale --plan-only                   # the plans, on the CPU (once per set of options)
    timeout 420 python -m benchmarks.real_scale --device cuda     # one H100/H200-class GPU, under 7 minutes
    python -m benchmarks.real_scale --tiny                        # seconds on a CPU (the test suite runs this)

`--tiny` builds a one-layer UMT5 stand-in instead of UMT5-XXL.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import torch

from follow_your_motion.config import HeadSettings, MotionSettings, SpatialSettings
from follow_your_motion.method.train import motion_inputs, spatial_inputs
from follow_your_motion.recipes import recipe_config

from . import cost_model as cm
from .common import (
    add_lora,
    classify,
    generate,
    half_heads,
    markdown_table,
    median,
    one_thread,
    peak_memory,
    return_freed_memory,
    train_steps,
    write_result,
)
from .real_scale_plan import (
    PLAN_FILE,
    counterparts,
    load,
    missing,
    motion_stage,
    pair,
    plan_notes,
    planned_cells,
    write_plans,
)

PROMPT = "a tiger walks through snow"
WORDS = ("a", "tiger", "walks", "through", "snow", "the", "in", "on")
PAPER = {"spatial_steps": 3000, "motion_steps": 2000, "keep": 5, "generate_steps": 50}


def tiny_config() -> cm.WanConfig:
    return cm.WanConfig("tiny Wan", layers=2, heads=2, head_dim=12, ffn_dim=32, text_dim=32, freq_dim=32)


def build_vae(tiny: bool):
    """Wan2.1's VAE (the published config is diffusers' default), or a tiny one with the same strides."""
    from diffusers import AutoencoderKLWan

    if tiny:
        return AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    return AutoencoderKLWan()


def build_text_encoder(width: int, tiny: bool, device: torch.device):
    """A word-level tokenizer and UMT5-XXL (random weights, bf16, built on `device`), or for `tiny` a one-layer
    UMT5 encoder whose output is `width` wide."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    from .memory_plan import umt5_xxl

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2} | {w: i + 3 for i, w in enumerate(WORDS)}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    if not tiny:
        return tokenizer, umt5_xxl(device).requires_grad_(False)
    heads = max(1, width // 64)
    config = UMT5Config(vocab_size=len(vocab), d_model=width, d_kv=width // heads, d_ff=256, num_layers=1,
                        num_heads=heads, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return tokenizer, UMT5EncoderModel(config)


def build_transformer(cfg: cm.WanConfig, device: torch.device, dtype: torch.dtype):
    """Random weights made on the device; parameters in `dtype` except those diffusers keeps in float32
    (`_keep_in_fp32_modules`, as `from_pretrained` would); buffers (the RoPE tables) untouched."""
    from .common import random_transformer

    model = random_transformer(cfg, device=device, rope_max_seq_len=1024)
    keep = model._keep_in_fp32_modules or []
    for name, param in model.named_parameters():
        if not any(k in name for k in keep):
            param.data = param.data.to(dtype)
    return model.requires_grad_(False)


class Recorder:
    """Per-stage seconds and peak memory, written to JSON after every stage."""

    def __init__(self, out: Path, data: dict, argv: list[str] | None, device: torch.device) -> None:
        self.out, self.data, self.argv, self.device = out, data, argv, device

    def stage(self, where: str, name: str, fn) -> None:
        """Run `fn`, which returns its seconds per step (a list) or None (its wall time is then the one step);
        file it under `where`: "encoding" (shared by the models) or a model's key."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        began = time.perf_counter()
        with peak_memory(self.device) as peak:
            value = fn()
        seconds = time.perf_counter() - began
        samples = value if isinstance(value, list) else [seconds]
        entry = {"wall_seconds": seconds, "seconds_per_step": median(samples), "samples": samples,
                 "timed_steps": len(samples), "peak_mib": peak.absolute_mib, "peak_above_start_mib": peak.mib}
        self.stages(where)[name] = entry
        print(f"[real_scale] {where}: {name}: {entry['seconds_per_step']:.3f} s/step, "
              f"peak {peak.absolute_mib:.0f} MiB", flush=True)
        self.save()

    def stages(self, where: str) -> dict:
        if where == "encoding":
            return self.data["encoding"]
        return self.data["models"].setdefault(where, {"stages": {}})["stages"]

    def save(self) -> None:
        write_result(self.out, self.data, markdown(self.data), "real_scale", self.argv, str(self.device), quiet=True)


def projection(stages: dict, spatial_steps: int, motion_steps: int, sparse_stage: str, generate_steps: int) -> dict:
    """Whole-transfer seconds from the measured ones: each stage's steps x its seconds per step, summed."""
    plan = [("encode clip", 1), ("encode frames", 1), ("encode prompt", 1), ("stage 1", 1),
            ("stage 2", spatial_steps), (sparse_stage, motion_steps), ("generation step", generate_steps),
            ("vae decode", 1)]
    parts = [{"stage": name, "steps": steps, "seconds_per_step": stages[name]["seconds_per_step"],
              "seconds": steps * stages[name]["seconds_per_step"]} for name, steps in plan]
    return {"parts": parts, "total_seconds": sum(p["seconds"] for p in parts)}


def run_model(key: str, cfg: cm.WanConfig, shared: dict, args, rec: Recorder) -> None:
    """Every stage of one model, through the project's code; the encodings only for the first model."""
    from diffusers import UniPCMultistepScheduler, WanPipeline

    from follow_your_motion.backbones.wan import WanBackbone

    device = rec.device
    rec.stage(key, "build transformer", lambda: shared.update(transformer=build_transformer(cfg, device,
                                                                                            shared["dtype"])))
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        num_train_timesteps=1000, flow_shift=3.0)
    pipe = WanPipeline(tokenizer=shared["tokenizer"], text_encoder=shared["text_encoder"], vae=shared["vae"],
                       transformer=shared.pop("transformer"), scheduler=scheduler)
    backbone = WanBackbone(pipe, device=device, text_length=args.text_length)
    if "latents" not in shared:  # the VAE and the text encoder are shared: encode once, for every model
        video = shared["video"]
        rec.stage("encoding", "encode clip", lambda: shared.update(latents=backbone.encode_video(video)))
        rec.stage("encoding", "encode frames", lambda: shared.update(frame_latents=torch.cat(
            [backbone.encode_video(video[:, i : i + 1]) for i in range(video.shape[1])])))
        rec.stage("encoding", "encode prompt", lambda: shared.update(text=backbone.encode_prompt(PROMPT)))
        if args.downsample > 1:  # `motion.downsample`: the clip area-averaged to 1/s of each side, encoded
            small = torch.nn.functional.avg_pool3d(video[None], (1, args.downsample, args.downsample))[0]
            rec.stage("encoding", f"encode clip at 1/{args.downsample} size",
                      lambda: shared.update(small_latents=backbone.encode_video(small)))
    latents, frame_latents, text = shared["latents"], shared["frame_latents"], shared["text"]
    park(key, backbone, args, rec)
    found = {}
    rec.stage(key, "stage 1", lambda: found.update(heads=classify(
        backbone, latents, text, HeadSettings(num_queries=args.queries))))
    head_map = found["heads"]
    rec.data["models"][key]["classified_heads"] = {kind: sum(map(len, head_map.heads(kind).values()))
                                                   for kind in ("spatial", "temporal")}
    spatial_heads = half_heads(cfg)
    temporal_heads = {layer: [h for h in range(cfg.heads) if h not in heads] for layer, heads in spatial_heads.items()}
    train = {"steps": args.steps + 1, "rank": args.rank, "grad_checkpointing": not args.tiny,
             "mixed_precision": "no" if args.tiny else "bf16"}

    add_lora(backbone, "spatial", spatial_heads, args.rank)
    backbone.set_active_adapters({"spatial": 1.0})
    spatial = SpatialSettings(**train)
    rec.stage(key, "stage 2", lambda: train_steps(backbone, "spatial", spatial,
                                                  spatial_inputs(frame_latents, text, 1)))
    add_lora(backbone, "motion", temporal_heads, args.rank)
    backbone.set_active_adapters({"spatial": 1.0, "motion": 1.0})
    for keep in [None, *args.keep]:
        name = motion_stage(keep)
        motion = MotionSettings(**train, keep_frames=keep)
        rec.stage(key, name, lambda m=motion: train_steps(backbone, "motion", m, motion_inputs(latents, text, m),
                                                          motion_weight=m.motion_weight))
    if args.downsample > 1:
        motion = MotionSettings(**train, keep_frames=args.keep[0], downsample=args.downsample)
        rec.stage(key, shrunk_stage(args), lambda: train_steps(
            backbone, "motion", motion, motion_inputs(shared["small_latents"], text, motion),
            motion_weight=motion.motion_weight))
    if backbone.park_device is not None:  # the same stage with the encoders back: the peak without parking
        motion = MotionSettings(**train, keep_frames=args.keep[0])
        with backbone.encoders_ready():
            rec.stage(key, motion_stage(args.keep[0], encoders=True),
                      lambda: train_steps(backbone, "motion", motion, motion_inputs(latents, text, motion),
                                          motion_weight=motion.motion_weight))
    generation(key, backbone, args, rec)


def shrunk_stage(args) -> str:
    """The name of stage 3 on the clip shrunk `--downsample` times (sparse, at the first K)."""
    return motion_stage(args.keep[0], args.downsample)


def park(key: str, backbone, args, rec: Recorder) -> None:
    """The encoders to the CPU once the encodings are made, as `Transfer.encode` does (not with
    `--keep-encoders`): the seconds it takes and the device memory it frees."""
    encoders = backbone.encoders().values()
    rec.data["models"].setdefault(key, {"stages": {}})["encoder_mib"] = sum(
        p.numel() * p.element_size() for m in encoders for p in m.parameters()) / 2**20
    if args.keep_encoders:
        return
    backbone.park_device = torch.device("cpu")
    before = torch.cuda.memory_allocated(rec.device) if rec.device.type == "cuda" else 0
    rec.stage(key, "park encoders", backbone.park_encoders)
    if rec.device.type == "cuda":
        rec.data["models"][key]["parking_freed_mib"] = (before - torch.cuda.memory_allocated(rec.device)) / 2**20


def generation(key: str, backbone, args, rec: Recorder) -> None:
    """`args.steps` sampling steps through `backbone.generate`; the VAE decode is timed apart (its own stage)."""
    vae, decode = backbone.pipe.vae, []
    original = vae.decode

    def timed_decode(*a, **kw):
        began = time.perf_counter()
        out = original(*a, **kw)
        if rec.device.type == "cuda":
            torch.cuda.synchronize(rec.device)
        decode.append(time.perf_counter() - began)
        return out

    def sample() -> list[float]:
        began = time.perf_counter()
        generate(backbone, PROMPT, args.frames, args.height, args.width, args.steps)
        return [(time.perf_counter() - began - sum(decode)) / args.steps]

    vae.decode = timed_decode
    try:  # the encoders on the device for the call (not timed), as `Transfer.generate` brings them back
        with backbone.encoders_ready():
            rec.stage(key, "generation step", sample)
    finally:
        vae.decode = original
    stages = rec.stages(key)
    stages["vae decode"] = {"wall_seconds": sum(decode), "seconds_per_step": sum(decode), "samples": decode,
                            "timed_steps": len(decode), "peak_mib": stages["generation step"]["peak_mib"]}


def add_projections(key: str, cfg: cm.WanConfig, data: dict, args) -> None:
    """Projections (paper, paper dense, ours) and the cost model's sparse/dense ratio next to the measured one."""
    stages = {**data["encoding"], **data["models"][key]["stages"]}
    ours = data["our_recipe"]
    sparse = {k: motion_stage(k) for k in args.keep}
    model = data["models"][key]
    model["projections"] = {
        "paper": projection(stages, PAPER["spatial_steps"], PAPER["motion_steps"], sparse[PAPER["keep"]],
                            PAPER["generate_steps"]),
        "paper, dense stage 3": projection(stages, PAPER["spatial_steps"], PAPER["motion_steps"], motion_stage(None),
                                           PAPER["generate_steps"]),
        "ours": projection(stages, ours["spatial_steps"], ours["motion_steps"],
                           sparse.get(ours["keep"], motion_stage(None)), ours["generate_steps"]),
    }
    if args.downsample > 1:
        model["projections"][f"ours, motion at 1/{args.downsample} size"] = projection(
            stages, ours["spatial_steps"], ours["motion_steps"], shrunk_stage(args), ours["generate_steps"])
    frames, rows, cols = cfg.token_grid(args.frames, args.height, args.width)
    dense = cm.Shapes(frames, rows, cols, text_length=args.text_length, rank=args.rank, frozen_rank=args.rank)
    model["sparse_dense"] = {
        f"K={k}": {"measured": stages[name]["seconds_per_step"] / stages[motion_stage(None)]["seconds_per_step"],
                   "predicted": cm.sparse_dense_ratio(cfg, dense, k, checkpointing=not args.tiny)}
        for k, name in sparse.items()}


def add_planned(key: str, data: dict, cases: list[dict]) -> None:
    """The plan's peak beside each measured one of `key` (and, for the first model, of the shared encodings, which
    ran with its transformer on the device)."""
    model = data["models"][key]
    first = key == next(iter(data["models"]))
    measured = {**(data["encoding"] if first else {}), **model["stages"]}
    model["planned"] = pair(measured, counterparts(data["config"]), cases, key)


def row(where: str, name: str, s: dict, planned: dict) -> list:
    """One stage's cells: steps, seconds, peak, and the plan's peak and measured / planned where it has one."""
    return [where, name, s["timed_steps"], f"{s['seconds_per_step']:.3f}", f"{s['peak_mib']:.0f}",
            *planned_cells(planned.get(name))]


def markdown(data: dict) -> str:
    """Seconds per step, peak memory and the plan's peak of every stage; then the projections and sparse/dense
    ratios."""
    shared = next(iter(data["models"].values()), {}).get("planned", {})
    rows = [row("shared", name, s, shared) for name, s in data["encoding"].items()]
    projections = []
    for key, model in data["models"].items():
        rows += [row(key, name, s, model.get("planned", {})) for name, s in model["stages"].items()]
        for kind, p in model.get("projections", {}).items():
            projections.append([key, kind, " + ".join(f"{q['steps']} x {q['stage']}" for q in p["parts"]),
                                f"{p['total_seconds']:,.0f}"])
        for k, r in model.get("sparse_dense", {}).items():
            projections.append([key, f"stage 3 sparse / dense, {k}",
                                f"measured {r['measured']:.3f}, cost model {r['predicted']:.3f}", "-"])
        if "parking_freed_mib" in model:
            projections.append([key, "encoders parked", f"{model['encoder_mib']:,.0f} MiB of encoder weights, "
                                f"{model['parking_freed_mib']:,.0f} MiB freed on the device", "-"])
    table = markdown_table(["model", "stage", "timed steps", "s / step", "peak MiB", "planned GB",
                            "measured / planned"], rows)
    notes = plan_notes(data)
    if notes:
        table += "\n\n" + "\n".join(notes)
    if projections:
        table += "\n\n" + markdown_table(["model", "recipe", "steps", "projected s"], projections)
    return table + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="wan2.1-1.3b,wan2.1-14b", help="Wan2.1 models (comma-separated)")
    parser.add_argument("--tiny", action="store_true", help="tiny random model and clip (CPU, seconds)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per stage (after one warm-up step)")
    parser.add_argument("--keep", default="5", help="K values of the sparse stage 3 (comma-separated)")
    parser.add_argument("--rank", type=int, default=None, help="LoRA rank (default: the Wan recipe's)")
    parser.add_argument("--queries", type=int, default=None, help="stage-1 queries (default: the recipe's)")
    parser.add_argument("--keep-encoders", action="store_true", help="never park the encoders (model.keep_encoders)")
    parser.add_argument("--downsample", type=int, default=2,
                        help="also time stage 3 on the clip shrunk this many times (motion.downsample; 1: not)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/real_scale"))
    parser.add_argument("--plan", type=Path, default=PLAN_FILE, help="the precomputed plans (real_scale_plan.py)")
    parser.add_argument("--plan-only", action="store_true",
                        help="trace on the CPU the plans this run's options need that --plan lacks, write them, stop")
    args = parser.parse_args(argv)
    if args.device == "cpu":
        one_thread()
    ours = recipe_config("wan", {})
    args.keep = sorted({int(k) for k in args.keep.split(",")} | ({ours.motion.keep_frames} - {None}))
    args.rank = args.rank or (4 if args.tiny else ours.motion.rank)
    args.queries = args.queries or (16 if args.tiny else ours.heads.num_queries)
    # tiny: 21 frames (6 latent frames, so K = 5 stays sparse) of 32x32
    args.frames, args.height, args.width = (21, 32, 32) if args.tiny else (81, 480, 832)
    args.text_length = 16 if args.tiny else 512
    device = torch.device(args.device)
    if device.type == "cpu" and not args.tiny:
        return_freed_memory()
    wan21 = [k for k in cm.MODELS if k.startswith("wan2.1")]  # the VAE built here is Wan2.1's
    unknown = [k for k in args.models.split(",") if k not in wan21]
    if unknown:
        parser.error(f"--models: {', '.join(unknown)} not among {', '.join(wan21)}")
    if args.plan_only:
        if args.tiny:
            parser.error("--plan-only: the tiny model has no published configs to plan")
        return {"cases": write_plans(vars(args), args.models.split(","), args.plan, argv)}
    configs = {"tiny": tiny_config()} if args.tiny else {k: cm.MODELS[k] for k in args.models.split(",")}
    text_dim = next(iter(configs.values())).text_dim

    data = {"config": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)},
            "paper_recipe": PAPER, "our_recipe": {"spatial_steps": ours.spatial.steps,
                                                  "motion_steps": ours.motion.steps,
                                                  "keep": ours.motion.keep_frames,
                                                  "generate_steps": ours.generate.steps},
            "encoding": {}, "models": {}}
    cases = [] if args.tiny else load(args.plan)  # the tiny model has no published configs, so no plan
    if not args.tiny:
        data["plan"] = {"file": str(args.plan), "missing": missing(data["config"], list(configs), cases)}
    rec = Recorder(args.out, data, argv, device)
    shared: dict = {"dtype": torch.float32 if args.tiny else torch.bfloat16}

    def build_shared() -> None:
        shared["tokenizer"], shared["text_encoder"] = build_text_encoder(text_dim, args.tiny, device)
        shared["vae"] = build_vae(args.tiny)

    rec.stage("encoding", "build VAE + text encoder", build_shared)
    generator = torch.Generator().manual_seed(0)
    shared["video"] = torch.rand(3, args.frames, args.height, args.width, generator=generator) * 2 - 1
    for key, cfg in configs.items():
        run_model(key, cfg, shared, args, rec)
        gc.collect()  # the model's transformer, LoRAs and optimizer go before the next model is built
        if device.type == "cuda":
            torch.cuda.empty_cache()
        add_projections(key, cfg, data, args)
        add_planned(key, data, cases)
        rec.save()
    print(markdown(data))
    return data


if __name__ == "__main__":
    main()
