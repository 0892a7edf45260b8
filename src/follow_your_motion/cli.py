"""`fym`: parse arguments, build a config, call the API. No logic of its own."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from .config import GenerateSettings, load_yaml_settings, resolve_config
from .errors import InputError

if TYPE_CHECKING:
    from .backbones.toy import ToyBackbone

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Follow-Your-Motion: video motion transfer.")

Reference = Annotated[Path, typer.Argument(help="reference video (the motion)")]
Prompt = Annotated[str, typer.Option("--prompt", "-p", help="caption of the reference, used while tuning")]
Out = Annotated[Path, typer.Option("--out", "-o", help="run directory")]
Model = Annotated[
    str | None, typer.Option("--model", "-m", help="hub id or local diffusers directory; default: the toy model")
]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="YAML with any settings to override")]
Steps = Annotated[int | None, typer.Option(help="override the training steps of the stage(s)")]
Device = Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, ... (default cpu)")]
CpuDevice = Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")]
RunOpt = Annotated[Path, typer.Option("--run", "-r", help="an existing run directory")]
Frames = Annotated[int | None, typer.Option(min=1, help="pixel frames to tune on (default: the recipe's, or the "
                                                        "most the clip has)")]
Size = Annotated[str | None, typer.Option(help="HxW to tune at, e.g. 832x480 (default: the recipe's pixel count "
                                               "at the clip's shape)")]
Side = Annotated[int | None, typer.Option(min=1, help="with --width / --height: the size to tune at")]
Fps = Annotated[float | None, typer.Option(help="take the frames at this rate (default: spread over the clip)")]
Start = Annotated[float | None, typer.Option(min=0, help="seconds into the clip where the frames start")]
Image = Annotated[Path | None, typer.Option(help="image-to-video models: the picture to animate with the motion")]

MEMORY_HINT = ("out of memory: try --config with spatial/motion grad_checkpointing: true and mixed_precision: bf16, "
               "model.offload: true, fewer motion.keep_frames, a smaller --size or fewer --frames")
_debug = {"on": False}


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", envvar="FYM_DEBUG",
                                        help="show the traceback of input errors too")] = False,
) -> None:
    """Follow-Your-Motion: video motion transfer."""
    _debug["on"] = debug
    logger = logging.getLogger("follow_your_motion")
    if not any(isinstance(h, _NoteHandler) for h in logger.handlers):
        logger.addHandler(_NoteHandler())
        logger.setLevel(logging.INFO)


class _NoteHandler(logging.Handler):
    """The package's notes (e.g. the frame count chosen for a short clip) as one `note:` line each on the
    current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(f"note: {record.getMessage()}", err=True)


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def _run(action) -> None:
    """Run `action`; bad input (an InputError, a file that cannot be read or written) becomes one clear line on
    stderr and exit code 2, unless --debug. Anything else is a bug or a resource problem: it keeps its traceback
    (out of memory gets one more line naming the memory options)."""
    import torch

    try:
        action()
    except (InputError, OSError) as err:
        if _debug["on"]:
            raise
        _fail(err)
    except torch.OutOfMemoryError:
        typer.echo(f"error: {MEMORY_HINT}", err=True)
        raise


def video_flags(frames: int | None, size: str | None, height: int | None, width: int | None, fps: float | None,
                start: float | None) -> dict:
    """The `video` settings of the options given (`--size HxW` or `--height` with `--width`)."""
    if size is not None:
        if height is not None or width is not None:
            raise InputError("give --size HxW or --height/--width, not both")
        try:
            height, width = (int(x) for x in size.lower().split("x"))
        except ValueError:
            raise InputError(f"--size must be HxW in pixels, e.g. 480x832 (got {size!r})") from None
    given = {"frames": frames, "height": height, "width": width, "fps": fps, "start": start}
    return {k: v for k, v in given.items() if v is not None}


def _flags(reference: Path | None = None, prompt: str | None = None, model: str | None = None,
           device: str | None = None, target_prompt: str | None = None, spatial_steps: int | None = None,
           motion_steps: int | None = None, video: dict | None = None, image: Path | None = None) -> dict:
    """The nested settings of the flags the user actually gave (None = not given)."""
    flags: dict = {k: v for k, v in (("reference", reference and str(reference)), ("prompt", prompt),
                                     ("target_prompt", target_prompt)) if v}
    model_given = {k: v for k, v in (("source", model), ("device", device)) if v is not None}
    sections = {"model": model_given, "video": video or {}, "spatial": {"steps": spatial_steps},
                "motion": {"steps": motion_steps}, "generate": {"image": image and str(image)}}
    for name, section in sections.items():
        section = {k: v for k, v in section.items() if v is not None}
        if section:
            flags[name] = section
    return flags


def _open(config_file: Path | None, out: Path, **flags):
    from .transfer import Transfer

    cfg = resolve_config(_flags(**flags), config_file)
    if cfg.model.source is None:
        typer.echo("no --model given: using the embedded ShapesWorld toy model (offline, CPU)", err=True)
    return Transfer(cfg, out)


@app.command()
def transfer(
    reference: Reference, prompt: Prompt, out: Out, model: Model = None, config: ConfigFile = None,
    target_prompt: Annotated[str | None, typer.Option(help="the new content; default: --prompt")] = None,
    spatial_steps: Steps = None, motion_steps: Steps = None, device: Device = None,
    frames: Frames = None, size: Size = None, height: Side = None, width: Side = None, fps: Fps = None,
    start: Start = None, image: Image = None,
) -> None:
    """All stages (classify, spatial LoRA, motion LoRA, generate); reuses what is already done."""

    def act() -> None:
        video = video_flags(frames, size, height, width, fps, start)
        job = _open(config, out, reference=reference, prompt=prompt, model=model, device=device,
                    target_prompt=target_prompt, spatial_steps=spatial_steps, motion_steps=motion_steps, video=video,
                    image=image)
        for name, path in job.all().paths.items():
            typer.echo(f"{name}: {path}")

    _run(act)


@app.command()
def classify(
    reference: Reference, prompt: Prompt, out: Out, model: Model = None, config: ConfigFile = None,
    device: Device = None, frames: Frames = None, size: Size = None, height: Side = None, width: Side = None,
    fps: Fps = None, start: Start = None,
) -> None:
    """Stage 1 only: write heads.json and heads.png."""

    def act() -> None:
        video = video_flags(frames, size, height, width, fps, start)
        job = _open(config, out, reference=reference, prompt=prompt, model=model, device=device, video=video)
        for expert, head_map in job.classify().items():
            total = head_map.to_json()["total"]
            where = f" ({expert} expert)" if expert else ""
            typer.echo(f"{job.run.heads}{where}: {total['spatial']} spatial, {total['temporal']} temporal heads")

    _run(act)


def _echo_paths(paths: list[Path] | None) -> None:
    """A stage's LoRA files (one per expert), one a line; nothing for a stage with no steps."""
    for path in paths or []:
        typer.echo(str(path))


@app.command("tune-spatial")
def tune_spatial(
    reference: Reference, prompt: Prompt, out: Out, model: Model = None, config: ConfigFile = None,
    steps: Steps = None, device: Device = None, frames: Frames = None, size: Size = None, height: Side = None,
    width: Side = None, fps: Fps = None, start: Start = None,
) -> None:
    """Stage 2: spatial-head LoRA (resumes from the newest checkpoint)."""

    def act() -> None:
        video = video_flags(frames, size, height, width, fps, start)
        _echo_paths(_open(config, out, reference=reference, prompt=prompt, model=model, device=device,
                          spatial_steps=steps, video=video).tune_spatial())

    _run(act)


@app.command("tune-motion")
def tune_motion(
    reference: Reference, prompt: Prompt, out: Out, model: Model = None, config: ConfigFile = None,
    steps: Steps = None, device: Device = None, frames: Frames = None, size: Size = None, height: Side = None,
    width: Side = None, fps: Fps = None, start: Start = None,
) -> None:
    """Stage 3: temporal-head motion LoRA (runs stage 2 first if needed; resumable)."""

    def act() -> None:
        video = video_flags(frames, size, height, width, fps, start)
        _echo_paths(_open(config, out, reference=reference, prompt=prompt, model=model, device=device,
                          motion_steps=steps, video=video).tune_motion())

    _run(act)


@app.command()
def generate(
    run: RunOpt,
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="new content; default: the run's")] = None,
    motion_scale: float | None = None, spatial_scale: float | None = None, seed: int | None = None,
    steps: int | None = None, guidance: float | None = None,
    guidance_2: Annotated[float | None, typer.Option(help="the low-noise expert's guidance (Wan2.2-A14B)")] = None,
    negative_prompt: str | None = None,
    frames: Annotated[int | None, typer.Option(help="default: the reference's")] = None,
    height: int | None = None, width: int | None = None,
    name: Annotated[str, typer.Option(help="output name under samples/")] = "result",
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: the run's)")] = None,
    image: Image = None,
) -> None:
    """Generate a video with the run's motion LoRA and a new prompt (needs the model, not the reference)."""

    def act() -> None:
        from .config import describe_validation_error
        from .transfer import Transfer

        job = Transfer.open(run, device)
        given = {"motion_scale": motion_scale, "spatial_scale": spatial_scale, "seed": seed, "steps": steps,
                 "guidance": guidance, "guidance_2": guidance_2, "negative_prompt": negative_prompt, "frames": frames,
                 "height": height, "width": width, "image": image and str(image.expanduser().resolve())}
        update = {k: v for k, v in given.items() if v is not None}
        try:
            settings = GenerateSettings.model_validate(job.cfg.generate.model_dump() | update)
        except ValidationError as err:
            raise InputError(f"invalid generation settings: {describe_validation_error(err)}") from err
        for key, path in job.generate(prompt, settings, name).paths.items():
            typer.echo(f"{key}: {path}")

    _run(act)


@app.command()
def export(
    run: RunOpt,
    fmt: Annotated[str, typer.Option("--format", "-f", help="diffusers or comfyui")] = "comfyui",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="folder; default: <run>/export/<format>")] = None,
) -> None:
    """Write the run's LoRAs for other tools (diffusers `load_lora_weights`, ComfyUI); loads no model."""

    def act() -> None:
        from .transfer import export_run

        for path in export_run(run, fmt, out):
            typer.echo(str(path))

    _run(act)


@app.command()
def demo(
    out: Out = Path("runs/demo"),
    example: Annotated[str, typer.Option(help="bundled reference (toyworld/examples.py)")] = "single-orbit-cw",
    target_prompt: Annotated[str, typer.Option(help="the new object")] = "a blue square",
    device: CpuDevice = "cpu",
) -> None:
    """Motion transfer on a rendered held-out motion with the embedded toy model, scored against ground truth."""
    from .toyworld.demo import run_demo

    def act() -> None:
        metrics = run_demo(out, example, target_prompt, device)
        typer.echo(json.dumps({k: metrics[k] for k in ("fym", "base_model", "outputs")}, indent=1))

    _run(act)


@app.command("app")
def app_command(
    runs: Annotated[Path, typer.Option("--runs", help="runs folder: the page lists its runs and writes new ones "
                                                      "there")] = Path("runs"),
    host: Annotated[str, typer.Option(help="address to listen on; 127.0.0.1 = this machine only")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 7860,
) -> None:
    """A local web page (Gradio) for motion transfer over a runs folder; no public link is made."""
    from .app import serve

    _run(lambda: serve(runs, host, port))


toyworld = typer.Typer(no_args_is_help=True, help="The ShapesWorld toy model: pretraining.")
app.add_typer(toyworld, name="toyworld")


@toyworld.command("pretrain")
def toyworld_pretrain(
    out: Out,
    steps: Annotated[int, typer.Option(help="total optimizer steps (resumes if out has checkpoints)")] = 20000,
    batch_size: int = 16,
    lr: float = 4e-4,
    decay_start: Annotated[int | None, typer.Option(help="step where lr starts its linear decay to 0")] = None,
    caption_dropout: Annotated[float, typer.Option(help="share of empty captions (for guidance)")] = 0.1,
    anchor_spread: Annotated[float, typer.Option(
        help="paths start from the middle share of where they fit (1 = anywhere, 0 = centred)")] = 1.0,
    noise_correlation: Annotated[float | None, typer.Option(
        help="new run: noise shared across frames, in [0, 1) (toy model's noise prior); default 0")] = None,
    init: Annotated[Path | None, typer.Option(
        help="new run: start from this toy model folder's weights (input channels it lacks start at zero)")] = None,
    layers: Annotated[int | None, typer.Option(min=1, help="new run: transformer blocks (default 6)")] = None,
    heads: Annotated[int | None, typer.Option(min=1,
        help="new run: attention heads of 32 channels, setting the width (default 6)")] = None,
    checkpoint_every: int = 250,
    seed: int = 0,
    threads: Annotated[int, typer.Option(help="torch threads; 0 = default")] = 0,
    device: CpuDevice = "cpu",
    workers: Annotated[int, typer.Option(
        min=0, help="processes rendering batches ahead (the same batches for any number)")] = 0,
) -> None:
    """Pretrain (or resume) the toy text-to-video model; the EMA weights are written to <out>/model."""
    from .toyworld.pretrain import PretrainSettings, new_run_meta, pretrain

    if decay_start is not None and not 0 <= decay_start < steps:
        _fail(ValueError(f"--decay-start {decay_start} must lie in [0, --steps {steps})"))
    settings = PretrainSettings(steps=steps, batch_size=batch_size, lr=lr, checkpoint_every=checkpoint_every,
                                seed=seed, threads=threads, decay_start=decay_start,
                                caption_dropout=caption_dropout, anchor_spread=anchor_spread, device=device,
                                workers=workers)
    meta = new_run_meta(noise_correlation, layers, heads)
    _run(lambda: typer.echo(pretrain(out, settings, meta, init=init)))


ToyModel = Annotated[Path | None, typer.Option("--model", "-m", help="toy model folder; default: the shipped one")]


NoiseCorrelation = Annotated[float | None, typer.Option(
    help="use this noise prior (share of the noise common to all frames, in [0, 1)) instead of the model's own")]


def _with_noise_prior(toy: ToyBackbone, noise_correlation: float | None) -> ToyBackbone:
    """`toy` with its noise prior replaced when one is given (ToyBackbone validates the value)."""
    if noise_correlation is not None:
        toy.noise_correlation = noise_correlation
    return toy


@toyworld.command("eval")
def toyworld_eval(
    model: ToyModel = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for eval.json")] = Path("runs/toy-eval"),
    prompts: int = 64,
    steps: int = 20,
    guidance: float = 3.0,
    seed: int = 0,
    noise_correlation: NoiseCorrelation = None,
) -> None:
    """Colour, shape, direction and smoothness of the base toy model's generations."""
    from .backbones.toy import ToyBackbone
    from .toyworld.evaluate import evaluate

    def act() -> None:
        toy = _with_noise_prior(ToyBackbone.load(str(model) if model else None), noise_correlation)
        summary = evaluate(toy, prompts, steps, guidance=guidance, seed=seed, out=out)
        typer.echo(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))

    _run(act)


@toyworld.command("sanity")
def toyworld_sanity(
    program: Annotated[str, typer.Argument(help="motion program of the one clip, e.g. zigzag")],
    model: ToyModel = None,
    steps: int = 500,
    fresh: Annotated[bool, typer.Option(help="start from random weights instead of the pretrained model")] = False,
    noise_correlation: NoiseCorrelation = None,
    device: CpuDevice = "cpu",
) -> None:
    """One-clip sanity gate: tune every weight on one clip and check its trajectory comes back."""
    from .backbones.toy import ToyBackbone
    from .toyworld.pretrain import DEFAULT_META
    from .toyworld.sanity import sanity_gate

    def act() -> None:
        import torch

        torch.manual_seed(0)  # a fresh model's initial weights
        toy = ToyBackbone.build(DEFAULT_META) if fresh else ToyBackbone.load(str(model) if model else None)
        toy.to_device(device)
        typer.echo(json.dumps(sanity_gate(_with_noise_prior(toy, noise_correlation), program, steps=steps), indent=1))

    _run(act)


Clip = Annotated[str | None, typer.Option(help="CLIP model (a directory, or a hub id already in the HF cache): "
                                                "text similarity and CLIP temporal consistency")]
Dino = Annotated[str | None, typer.Option(help="DINO / DINOv2 model (a directory or a cached hub id): DINO "
                                                "temporal consistency (DeT's definition)")]


@app.command("metrics")
def metrics_command(
    reference: Reference,
    output: Annotated[Path, typer.Argument(help="the video to score (from any tool)")],
    prompt: Annotated[str | None, typer.Option("--prompt", "-p",
                                               help="the output's prompt (needed for text similarity, --clip)")] = None,
    tracker: Annotated[str, typer.Option(help="point tracker: klt (always available) or cotracker")] = "klt",
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the JSON to this file")] = None,
    clip: Clip = None,
    dino: Dino = None,
) -> None:
    """Motion fidelity (DeT and DMT definitions) of OUTPUT against REFERENCE, and its appearance metrics with
    --clip / --dino, printed as JSON."""

    def act() -> None:
        from .bench.score import score_appearance, score_pair
        from .runs import atomic_write_text
        from .video import read_video

        if clip is not None and not prompt:
            raise InputError("--clip scores text similarity, which needs the output's --prompt")
        ref, out = read_video(reference).frames, read_video(output).frames
        appearance = score_appearance(out, prompt, clip, dino)
        result = {"reference": str(reference), "output": str(output), "prompt": prompt,
                  **score_pair(ref, out, tracker), **appearance}
        text = json.dumps(result, indent=1)
        if json_out is not None:
            atomic_write_text(json_out, text + "\n")
        typer.echo(text)

    _run(act)


bench = typer.Typer(no_args_is_help=True, help="FYM MotionBench: run suites and report.")
app.add_typer(bench, name="bench")


@bench.command("run")
def bench_run(
    manifest: Annotated[str, typer.Argument(help="suite YAML, a folder of videos (prompts.txt / MTBench), or "
                                                 "'shapesworld' (the shipped suite)")],
    out: Out,
    methods: Annotated[str, typer.Option(help="comma-separated: fym, fym-no-heads, fym-no-rope, fym-dense, "
                                              "fym-spatial-on, two-stage-lora, full-lora, base")] = "fym",
    model: Model = None,
    device: Device = None,
    config: ConfigFile = None,
    seeds: Annotated[str, typer.Option(help="comma-separated generation seeds")] = "0",
    clip: Clip = None,
    dino: Dino = None,
) -> None:
    """Run every case x target prompt x method x seed not done yet; results in OUT/results.jsonl."""

    def act() -> None:
        from .bench.runner import run_suite

        overrides = load_yaml_settings(config) if config is not None else {}
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise InputError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
        typer.echo(str(run_suite(manifest, methods, out, model, device, overrides, seed_list, clip, dino)))

    _run(act)


@bench.command("report")
def bench_report(
    bench_dir: Annotated[Path, typer.Argument(help="a benchmark directory (the --out of `fym bench run`)")],
) -> None:
    """Write results.csv, results.json, results.md, plots/ and index.html from BENCH_DIR's results."""
    from .bench.report import write_report

    def act() -> None:
        for name, path in write_report(bench_dir).items():
            typer.echo(f"{name}: {path}")

    _run(act)


@bench.command("fetch")
def bench_fetch(
    suite: Annotated[str, typer.Option(help="a shipped suite or a suite YAML with DAVIS cases")] = "fym-motionbench-v1",
    data: Annotated[Path, typer.Option(help="folder for the archive, clips and manifest to run")] = Path("data"),
    url: Annotated[str | None, typer.Option(help="download from here instead (same pinned SHA-256)")] = None,
    archive: Annotated[Path | None, typer.Option(help="the archive, downloaded by hand: verified, not fetched")] = None,
) -> None:
    """Download and verify the DAVIS archive, cut each case's clip, print the manifest for `fym bench run`."""
    from .bench.fetch import fetch_suite

    _run(lambda: typer.echo(str(fetch_suite(suite, data, url, archive))))


def main() -> None:  # pragma: no cover - console entry for `python -m follow_your_motion.cli`
    app(prog_name="fym")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
