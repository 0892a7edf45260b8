"""The one settings precedence of the CLI, the benchmark, the app and the Python API: the family's recipe < given
settings < a YAML file < the command line's flags, resolved into one validated `TransferConfig`.

One function, so every entry point accepts and refuses the same settings with the same messages.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from .config import TransferConfig, describe_validation_error
from .errors import InputError
from .recipes import merge, model_family, model_recipe


def _absolute_paths(data: dict) -> dict:
    """The reference, the image to animate, DiTFlow's positions file and a model source that is a local path, made
    absolute (from the working directory, wherever they are given), so a run's config.yaml means the same files from
    any working directory."""
    data = dict(data)
    if data.get("reference"):
        data["reference"] = str(Path(data["reference"]).expanduser().resolve())
    source = (data.get("model") or {}).get("source")
    if source and Path(source).expanduser().exists():
        data["model"] = {**data["model"], "source": str(Path(source).expanduser().resolve())}
    image = (data.get("generate") or {}).get("image")
    if image:
        data["generate"] = {**data["generate"], "image": str(Path(image).expanduser().resolve())}
    ditflow = (data.get("guidance") or {}).get("ditflow") or {}
    if ditflow.get("positions_from"):
        ditflow = {**ditflow, "positions_from": str(Path(ditflow["positions_from"]).expanduser().resolve())}
        data["guidance"] = {**data["guidance"], "ditflow": ditflow}
    return data


def load_yaml_settings(path: Path) -> dict:
    """The settings a YAML file gives (only those it names), validated; a clear InputError otherwise."""
    return TransferConfig.load(path).model_dump(exclude_unset=True)


def resolve_config(flags: dict | None = None, yaml_file: Path | None = None, settings: dict | None = None
                   ) -> TransferConfig:
    """The one settings precedence of the CLI, the benchmark and the Python API: the model family's recipe <
    `settings` (a dict of sections, e.g. a benchmark's overrides) < the YAML file < `flags` (only the options
    the user actually gave). The family comes from the merged `model` section, so a YAML can choose the model; it
    is written into the result's `model.family`."""
    user = merge(settings or {}, load_yaml_settings(yaml_file) if yaml_file is not None else {})
    user = _absolute_paths(merge(user, flags or {}))
    model = user.get("model") or {}
    recipe = model_recipe(model)
    # the family is recorded, so a run's config.yaml names its family even once its model directory is gone
    user = merge(user, {"model": {"family": model_family(model)}})
    try:
        return TransferConfig.model_validate(merge(recipe, user))
    except ValidationError as err:
        raise InputError(f"invalid settings: {describe_validation_error(err)}") from err

