"""`fym`: parse arguments, build a config, call the API. No logic of its own."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from .cli_bench import bench
from .cli_guide import GuideMethod, GuideOptimise, GuidePrompt, PositionsFrom, guidance_flags
from .cli_options import (
    MEMORY_HINT,
    Clip,
    Compile,
    ConfigFile,
    Device,
    Dino,
    Family,
    Fps,
    Frames,
    Image,
    KeepEncoders,
    Model,
    MotionSteps,
    NoteHandler,
    Out,
    Prompt,
    Reference,
    RunOpt,
    Side,
    Size,
    SpatialSteps,
    Start,
    Steps,
    debug,
    handle_errors,
)
from .cli_toyworld import toyworld
from .errors import InputError
from .precedence import resolve_config
from .recipes import describe_choice, merge

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Follow-Your-Motion: video motion transfer.")
app.add_typer(toyworld, name="toyworld")
app.add_typer(bench, name="bench")
__all__ = ["MEMORY_HINT", "app"]


@app.callback()
def main_options(
    debug_flag: Annotated[bool, typer.Option("--debug", envvar="FYM_DEBUG",
                                             help="show the traceback of input errors too")] = False,
) -> None:
    """Follow-Your-Motion: video motion transfer."""
    debug["on"] = debug_flag
    logger = logging.getLogger("follow_your_motion")
    if not any(isinstance(h, NoteHandler) for h in logger.handlers):
        logger.addHandler(NoteHandler())
        logger.setLevel(logging.INFO)


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
           motion_steps: int | None = None, video: dict | None = None, image: Path | None = None,
           keep_encoders: bool | None = None, compile: bool | None = None, family: str | None = None) -> dict:
    """The nested settings of the flags the user actually gave (None = not given)."""
    flags: dict = {k: v for k, v in (("reference", reference and str(reference)), ("prompt", prompt),
                                     ("target_prompt", target_prompt)) if v}
    model_given = {k: v for k, v in (("source", model), ("family", family), ("device", device),
                                     ("keep_encoders", keep_encoders), ("compile", compile)) if v is not None}
    sections = {"model": model_given, "video": video or {}, "spatial": {"steps": spatial_steps},
                "motion": {"steps": motion_steps}, "generate": {"image": image and str(image)}}
    for name, section in sections.items():
        section = {k: v for k, v in section.items() if v is not None}
        if section:
            flags[name] = section
    return flags


def _open(config_file: Path | None, out: Path, settings: dict | None = None, **flags):
    """The run in `out` with the flags given (and a command's own `settings` over them)."""
    from .run_settings import check_guidance
    from .transfer import Transfer

    cfg = resolve_config(merge(_flags(**flags), settings or {}), config_file)
    check_guidance(cfg, cfg.generate, out)  # a guidance its sampling would refuse, refused before the model loads
    if cfg.model.source is None:
        typer.echo("no --model given: using the embedded ShapesWorld toy model (offline; seconds on a CPU)", err=True)
    else:
        typer.echo(describe_choice(cfg), err=True)
    return Transfer(cfg, out)


@app.command()
def transfer(
    reference: Reference, prompt: Prompt, out: Out, model: Model = None, family: Family = None,
    config: ConfigFile = None,
    target_prompt: Annotated[str | None, typer.Option(help="the new content; default: --prompt")] = None,
    spatial_steps: SpatialSteps = None, motion_steps: MotionSteps = None, device: Device = None,
    frames: Frames = None, size: Size = None, height: Side = None, width: Side = None, fps: Fps = None,
    start: Start = None, image: Image = None, keep_encoders: KeepEncoders = None, compile: Compile = None,
) -> None:
    """All stages (classify, spatial LoRA, motion LoRA, generate); reuses what is already done."""

    def act() -> None:
        video = video_flags(frames, size, height, width, fps, start)
        job = _open(config, out, reference=reference, prompt=prompt, model=model, family=family, device=device,
                    target_prompt=target_prompt, spatial_steps=spatial_steps, motion_steps=motion_steps, video=video,
                    image=image, keep_encoders=keep_encoders, compile=compile)
        for name, path in job.all().paths.items():
            typer.echo(f"{name}: {path}")

    handle_errors(act)


@app.command()
def guide(
    reference: Reference, prompt: GuidePrompt, out: Out, method: GuideMethod = "ditflow", model: Model = None,
    config: ConfigFile = None, device: Device = None, frames: Frames = None, size: Size = None, height: Side = None,
    width: Side = None, fps: Fps = None, start: Start = None, keep_encoders: KeepEncoders = None,
    optimise: GuideOptimise = None, positions_from: PositionsFrom = None,
) -> None:
    """Training-free transfer: sample --prompt guided by the reference's motion, no tuning (a run directory without
    LoRA files, the sample in samples/result_<method>.mp4, with --optimise positions DiTFlow's optimised positions
    beside it; one sampling, so nothing to resume)."""

    def act() -> None:
        video = video_flags(frames, size, height, width, fps, start)
        # --prompt is the content to sample (target_prompt); the run has no caption of the reference, which both
        # guidances read with an empty prompt (DiTFlow's release)
        settings = {"guidance": guidance_flags(method, optimise, positions_from),
                    "generate": {"motion_scale": 0.0, "spatial_scale": 0.0}}
        job = _open(config, out, settings, reference=reference, target_prompt=prompt, model=model, device=device,
                    video=video, keep_encoders=keep_encoders, spatial_steps=0, motion_steps=0)
        for name, path in job.generate(name=f"result_{method}").paths.items():
            typer.echo(f"{name}: {path}")

    handle_errors(act)


@app.command()
def classify(
    reference: Reference, prompt: Prompt, out: Out, model: Model = None, family: Family = None,
    config: ConfigFile = None,
    device: Device = None, frames: Frames = None, size: Size = None, height: Side = None, width: Side = None,
    fps: Fps = None, start: Start = None, keep_encoders: KeepEncoders = None,
) -> None:
    """Stage 1 only: write heads.json and heads.png."""

    def act() -> None:
        video = video_flags(frames, size, height, width, fps, start)
        job = _open(config, out, reference=reference, prompt=prompt, model=model, family=family, device=device,
                    video=video, keep_encoders=keep_encoders)
        for expert, head_map in job.classify().items():
            total = head_map.to_json()["total"]
            where = f" ({expert} expert)" if expert else ""
            typer.echo(f"{job.run.heads}{where}: {total['spatial']} spatial, {total['temporal']} temporal heads")

    handle_errors(act)


def _echo_paths(paths: list[Path] | None) -> None:
    """A stage's LoRA files (one per expert), one a line; nothing for a stage with no steps."""
    for path in paths or []:
        typer.echo(str(path))


@app.command("tune-spatial")
def tune_spatial(
    reference: Reference, prompt: Prompt, out: Out, model: Model = None, family: Family = None,
    config: ConfigFile = None,
    steps: Steps = None, device: Device = None, frames: Frames = None, size: Size = None, height: Side = None,
    width: Side = None, fps: Fps = None, start: Start = None, keep_encoders: KeepEncoders = None,
    compile: Compile = None,
) -> None:
    """Stage 2: spatial-head LoRA (resumes from the newest checkpoint)."""

    def act() -> None:
        video = video_flags(frames, size, height, width, fps, start)
        _echo_paths(_open(config, out, reference=reference, prompt=prompt, model=model, family=family,
                          device=device, spatial_steps=steps, video=video, keep_encoders=keep_encoders,
                          compile=compile).tune_spatial())

    handle_errors(act)


@app.command("tune-motion")
def tune_motion(
    reference: Reference, prompt: Prompt, out: Out, model: Model = None, family: Family = None,
    config: ConfigFile = None,
    steps: Steps = None, device: Device = None, frames: Frames = None, size: Size = None, height: Side = None,
    width: Side = None, fps: Fps = None, start: Start = None, keep_encoders: KeepEncoders = None,
    compile: Compile = None,
) -> None:
    """Stage 3: temporal-head motion LoRA (runs stage 2 first if needed; resumable)."""

    def act() -> None:
        video = video_flags(frames, size, height, width, fps, start)
        _echo_paths(_open(config, out, reference=reference, prompt=prompt, model=model, family=family,
                          device=device, motion_steps=steps, video=video, keep_encoders=keep_encoders,
                          compile=compile).tune_motion())

    handle_errors(act)


@app.command()
def plan(
    model: Model = None, family: Family = None, config: ConfigFile = None, frames: Frames = None, size: Size = None,
    height: Side = None, width: Side = None, keep_encoders: KeepEncoders = None,
    gpu_memory: Annotated[float | None, typer.Option(min=1, help="GB of the card to check the job against")] = None,
    tflops: Annotated[float, typer.Option(min=1, help="TFLOP/s the predicted seconds assume")] = 400.0,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object instead of the table")] = False,
    guide: Annotated[str | None, typer.Option(help="guide the sampling too: ditflow or flow (guidance.method)")
                     ] = None,
) -> None:
    """Peak accelerator memory and cost of each stage of `fym transfer` at real size, traced on fake tensors from
    the model's published configs: no weights, no GPU, no network."""

    def act() -> None:
        from .plan import GB, fits_card, options_line, options_to_fit, plan_transfer, table

        flags = _flags(model=model, family=family, keep_encoders=keep_encoders,
                       video=video_flags(frames, size, height, width, None, None))
        if guide is not None:
            flags["guidance"] = {"method": guide}
        cfg = resolve_config(flags, config, settings={"prompt": "a tiger walks through snow"})
        if not json_out:
            typer.echo(describe_choice(cfg), err=True)
        result = plan_transfer(cfg, tflops)
        lines = [] if gpu_memory is None else [fits_card(result, gpu_memory)]
        to_fit = None
        if lines and lines[0].startswith("does not fit"):  # trace the job again with the options that lower it
            found = options_to_fit(cfg, gpu_memory, tflops, traced=result)
            lines.append(options_line(found, gpu_memory))
            to_fit = found and {"options": found[0], "peak_bytes": found[1]}
        if json_out:
            extra = {} if gpu_memory is None else {"gpu_memory_gb": gpu_memory,
                                                   "fits_card": result.peak_bytes <= gpu_memory * GB,
                                                   "to_fit": to_fit}
            typer.echo(json.dumps(result.to_json() | extra, indent=1))
            return
        typer.echo(table(result))
        for line in lines:
            typer.echo(line)

    handle_errors(act)


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
    device: Device = None,
    image: Image = None, compile: Compile = None,
    guide: Annotated[str | None, typer.Option(help="also guide the sampling: ditflow or flow (needs the reference); "
                                                   "none: no guidance; default: the run's")] = None,
) -> None:
    """Generate a video with the run's motion LoRA and a new prompt (needs the model, not the reference)."""

    def act() -> None:
        from .run_settings import check_guidance, open_config
        from .transfer import Transfer
        from .video import read_image

        open_config(run)  # a clear error if `run` is not a run directory
        given = {"motion_scale": motion_scale, "spatial_scale": spatial_scale, "seed": seed, "steps": steps,
                 "guidance": guidance, "guidance_2": guidance_2, "negative_prompt": negative_prompt, "frames": frames,
                 "height": height, "width": width, "image": image and str(image.expanduser().resolve())}
        # the one precedence: recipe < the run's config.yaml < the options given; checked before the model loads
        flags = {"generate": {k: v for k, v in given.items() if v is not None}}
        if guide is not None:
            flags["guidance"] = {"method": guide}
        resolved = resolve_config(flags, run / "config.yaml")
        settings = resolved.generate
        if settings.image:
            read_image(settings.image)  # a missing or unreadable picture is refused before the model loads
        check_guidance(resolved, settings, run)
        job = Transfer.open(run, device, model={"compile": True} if compile else None)
        if guide is not None:
            job.cfg.guidance = resolved.guidance
        for key, path in job.generate(prompt, settings, name).paths.items():
            typer.echo(f"{key}: {path}")

    handle_errors(act)


@app.command()
def export(
    run: RunOpt,
    fmt: Annotated[str, typer.Option("--format", "-f", help="diffusers or comfyui")] = "comfyui",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="folder; default: <run>/export/<format>")] = None,
) -> None:
    """Write the run's LoRAs for other tools (diffusers `load_lora_weights`, ComfyUI); loads no model."""

    def act() -> None:
        from .run_export import export_run

        for path in export_run(run, fmt, out):
            typer.echo(str(path))

    handle_errors(act)


@app.command()
def demo(
    out: Out = Path("runs/demo"),
    example: Annotated[str, typer.Option(help="bundled reference (toyworld/examples.py)")] = "single-orbit-cw",
    target_prompt: Annotated[str, typer.Option(help="the new object")] = "a blue square",
    device: Device = "auto",
) -> None:
    """Motion transfer on a rendered held-out motion with the embedded toy model, scored against ground truth."""
    from .toyworld.demo import run_demo

    def act() -> None:
        metrics = run_demo(out, example, target_prompt, device)
        typer.echo(json.dumps({k: metrics[k] for k in ("fym", "base_model", "outputs")}, indent=1))

    handle_errors(act)


@app.command("app")
def app_command(
    runs: Annotated[Path, typer.Option("--runs", help="runs folder: the page lists its runs and writes new ones "
                                                      "there")] = Path("runs"),
    host: Annotated[str, typer.Option(help="address to listen on; 127.0.0.1 = this machine only")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port to listen on")] = 7860,
) -> None:
    """A local web page (Gradio) for motion transfer over a runs folder; no public link is made."""
    from .app import serve

    handle_errors(lambda: serve(runs, host, port))


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

    handle_errors(act)


def main() -> None:  # pragma: no cover - console entry for `python -m follow_your_motion.cli`
    app(prog_name="fym")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
