"""`fym toyworld ...`: pretrain, evaluate and gate the ShapesWorld toy model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .cli_options import AutoDevice, Out, fail, handle_errors

if TYPE_CHECKING:
    from .backbones.toy import ToyBackbone

toyworld = typer.Typer(no_args_is_help=True, help="The ShapesWorld toy model: pretraining.")


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
    free_paths: Annotated[float, typer.Option(min=0.0, max=1.0, help=(
        "share of single/multi objects on random curved, cornered, stop-and-go or bouncing paths, captioned "
        "with their appearance only (the motion prior; docs/toyworld.md)"))] = 0.0,
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
    device: AutoDevice = "auto",
    workers: Annotated[int, typer.Option(
        min=0, help="processes rendering batches ahead (the same batches for any number)")] = 0,
) -> None:
    """Pretrain (or resume) the toy text-to-video model; the EMA weights are written to <out>/model."""
    from .devices import pick_device
    from .toyworld.pretrain import PretrainSettings, new_run_meta, pretrain

    if decay_start is not None and not 0 <= decay_start < steps:
        fail(ValueError(f"--decay-start {decay_start} must lie in [0, --steps {steps})"))
    settings = PretrainSettings(steps=steps, batch_size=batch_size, lr=lr, checkpoint_every=checkpoint_every,
                                seed=seed, threads=threads, decay_start=decay_start,
                                caption_dropout=caption_dropout, anchor_spread=anchor_spread, free_paths=free_paths,
                                device=pick_device(device), workers=workers)
    meta = new_run_meta(noise_correlation, layers, heads)
    handle_errors(lambda: typer.echo(pretrain(out, settings, meta, init=init)))


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

    handle_errors(act)


@toyworld.command("prior")
def toyworld_prior(
    model: ToyModel = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for prior.json")] = Path("runs/toy-prior"),
    clips: Annotated[int, typer.Option(min=1, help="clips generated (appearance-only prompts)")] = 48,
    steps: int = 20,
    guidance: float = 3.0,
    seed: int = 0,
    data: Annotated[float | None, typer.Option(min=0.0, max=1.0, help=(
        "measure the pretraining data drawn with this --free-paths share instead of a model (exact tracks)"))] = None,
) -> None:
    """The motion prior: shares of still, straight, curved and cornered paths, and their amplitudes, when the
    prompt names only the appearance."""
    from .toyworld.prior import measure_data, measure_prior

    def act() -> None:
        from .backbones.toy import ToyBackbone

        if data is not None:
            summary = measure_data(clips, free_paths=data, seed=seed, out=out)
        else:
            summary = measure_prior(ToyBackbone.load(str(model) if model else None), clips, steps, guidance, seed,
                                    out)
        typer.echo(json.dumps({k: v for k, v in summary.items() if k != "rows"}, indent=1))

    handle_errors(act)


@toyworld.command("sanity")
def toyworld_sanity(
    program: Annotated[str, typer.Argument(help="motion program of the one clip, e.g. zigzag")],
    model: ToyModel = None,
    steps: int = 500,
    fresh: Annotated[bool, typer.Option(help="start from random weights instead of the pretrained model")] = False,
    noise_correlation: NoiseCorrelation = None,
    device: AutoDevice = "auto",
) -> None:
    """One-clip sanity gate: tune every weight on one clip and check its trajectory comes back."""
    from .backbones.toy import ToyBackbone
    from .devices import pick_device
    from .toyworld.pretrain import DEFAULT_META
    from .toyworld.sanity import sanity_gate

    def act() -> None:
        import torch

        torch.manual_seed(0)  # a fresh model's initial weights
        toy = ToyBackbone.build(DEFAULT_META) if fresh else ToyBackbone.load(str(model) if model else None)
        toy.to_device(pick_device(device))
        typer.echo(json.dumps(sanity_gate(_with_noise_prior(toy, noise_correlation), program, steps=steps), indent=1))

    handle_errors(act)
