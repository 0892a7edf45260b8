"""`fym guide`'s own options: the guidance method, DiTFlow's mode and the positions file to inject, as the
`guidance` settings they give."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .errors import InputError

GuidePrompt = Annotated[str, typer.Option("--prompt", "-p", help="the new content to sample")]
GuideMethod = Annotated[str, typer.Option("--method", help="ditflow (attention motion flow) or flow (flow-guided "
                                                          "sampling); settings: the config's guidance section")]
GuideOptimise = Annotated[str | None, typer.Option(
    "--optimise", help="DiTFlow: latent (move the latent) or positions (optimise the rotary tables and write them to "
                       "samples/result_ditflow_positions.safetensors); guidance.ditflow.optimise")]
PositionsFrom = Annotated[Path | None, typer.Option(
    "--positions-from", help="DiTFlow: inject the positions a `--optimise positions` run wrote, optimising nothing "
                             "(guidance.ditflow.positions_from)")]


def guidance_flags(method: str, optimise: str | None, positions_from: Path | None) -> dict:
    """The `guidance` settings of `fym guide`'s options: a positions file alone means `optimise: positions`; DiTFlow's
    options with another method are refused (the file's path is made absolute with the other paths,
    `precedence.resolve_config`)."""
    ditflow = {k: v for k, v in (("optimise", optimise or (positions_from and "positions")),
                                 ("positions_from", positions_from and str(positions_from))) if v is not None}
    if ditflow and method != "ditflow":
        raise InputError("--optimise and --positions-from are DiTFlow's: give --method ditflow")
    return {"method": method, "ditflow": ditflow} if ditflow else {"method": method}
