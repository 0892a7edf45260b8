"""`fym bench ...`: run FYM MotionBench suites, report them, fetch their clips."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .cli_options import Clip, ConfigFile, Device, Dino, Model, Out, handle_errors
from .errors import InputError
from .precedence import load_yaml_settings

bench = typer.Typer(no_args_is_help=True, help="FYM MotionBench: run suites and report.")


@bench.command("run")
def benchrun(
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

    handle_errors(act)


@bench.command("report")
def bench_report(
    bench_dir: Annotated[Path, typer.Argument(help="a benchmark directory (the --out of `fym bench run`)")],
    baseline: Annotated[str | None, typer.Option(help="the method the others are paired with; default: the "
                                                      "one compare.json names, else fym")] = None,
) -> None:
    """Write results.csv, results.json, results.md, plots/ and index.html from BENCH_DIR's results."""
    from .bench.report import write_report

    def act() -> None:
        for name, path in write_report(bench_dir, baseline).items():
            typer.echo(f"{name}: {path}")

    handle_errors(act)


@bench.command("compare")
def bench_compare(
    runs: Annotated[list[str], typer.Argument(help="two or more benchmark directories of one suite, each RUN or "
                                                   "RUN=LABEL (the label defaults to the folder's name)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the runs' results together and their report")],
    baseline: Annotated[str | None, typer.Option(help="the method the others are paired with (a method in "
                                                      "several runs is METHOD@LABEL); default: the first run's "
                                                      "fym")] = None,
) -> None:
    """Report RUNS together in OUT, paired on the same cases: a method that ran in several is METHOD@LABEL."""
    from .bench.compare import compare_runs, parse_run

    def act() -> None:
        for name, path in compare_runs([parse_run(r) for r in runs], out, baseline).items():
            typer.echo(f"{name}: {path}")

    handle_errors(act)


@bench.command("fetch")
def bench_fetch(
    suite: Annotated[str, typer.Option(help="a shipped suite or a suite YAML with DAVIS cases")] = "fym-motionbench-v1",
    data: Annotated[Path, typer.Option(help="folder for the archive, clips and manifest to run")] = Path("data"),
    url: Annotated[str | None, typer.Option(help="download from here instead (same pinned SHA-256)")] = None,
    archive: Annotated[Path | None, typer.Option(help="the archive, downloaded by hand: verified, not fetched")] = None,
) -> None:
    """Download and verify the DAVIS archive, cut each case's clip, print the manifest for `fym bench run`."""
    from .bench.fetch import fetch_suite

    handle_errors(lambda: typer.echo(str(fetch_suite(suite, data, url, archive))))
