"""One settings precedence everywhere (recipe < settings < YAML < flags given), and settings that check
themselves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from follow_your_motion.bench.runner import base_settings
from follow_your_motion.cli import app
from follow_your_motion.config import TransferConfig
from follow_your_motion.errors import InputError
from follow_your_motion.precedence import resolve_config
from follow_your_motion.recipes import RECIPES
from follow_your_motion.video import write_video

# section -> (key, a YAML value, a flag value): every section has a setting a YAML may set and a flag may win over
SECTIONS = {
    "model": ("device", "cuda:3", "cpu"),
    "video": ("frames", 13, 17),
    "heads": ("alpha", 2.0, None),
    "spatial": ("steps", 7, 9),
    "motion": ("steps", 11, 3),
    "generate": ("guidance", 1.5, None),
}


def _yaml(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("section", SECTIONS)
def test_recipe_then_yaml_then_flags(section, tmp_path):
    key, from_yaml, from_flag = SECTIONS[section]
    recipe = TransferConfig.model_validate(RECIPES["toy"])
    assert getattr(getattr(resolve_config(), section), key) == getattr(getattr(recipe, section), key)
    path = _yaml(tmp_path, {section: {key: from_yaml}})
    assert getattr(getattr(resolve_config({}, path), section), key) == from_yaml
    under = resolve_config({}, path, settings={section: {key: "ignored" if key == "device" else from_yaml * 3}})
    assert getattr(getattr(under, section), key) == from_yaml  # the YAML wins over code-given settings
    if from_flag is not None:
        assert getattr(getattr(resolve_config({section: {key: from_flag}}, path), section), key) == from_flag


def test_a_yaml_chooses_the_model_and_its_recipe(tiny_wan_dir, tmp_path):
    path = _yaml(tmp_path, {"model": {"source": str(tiny_wan_dir)}, "spatial": {"rank": 5}})
    cfg = resolve_config({}, path)
    assert cfg.model.source == str(tiny_wan_dir.resolve())
    assert cfg.model.dtype == "bfloat16" and cfg.motion.rank == 128  # the Wan recipe, not the toy's
    assert cfg.spatial.rank == 5
    assert resolve_config({"model": {"source": None}}, path).model.source is None  # a flag given wins
    settings, family = base_settings(None, None, {"model": {"source": str(tiny_wan_dir)}})  # the benchmark's path
    assert family == "wan" and settings["motion"]["rank"] == 128


def test_cli_takes_the_model_from_the_yaml(tiny_wan_dir, tmp_path):
    """No --model: the YAML's model is used (the tiny Wan has 2 layers of 4 heads; the toy 6 of 6)."""
    ref = write_video(tmp_path / "ref.mp4", np.random.default_rng(0).integers(0, 255, (9, 32, 32, 3), np.uint8), 8)
    path = _yaml(tmp_path, {"model": {"source": str(tiny_wan_dir), "dtype": "float32"},
                            "video": {"auto_size": [32, 32]}, "heads": {"num_queries": 16}})
    result = CliRunner().invoke(app, ["classify", str(ref), "-p", "a robot walks", "-o", str(tmp_path / "run"),
                                      "-c", str(path)])
    assert result.exit_code == 0, result.output
    heads = json.loads((tmp_path / "run" / "heads.json").read_text())
    assert [len(layer["heads"]) for layer in heads["layers"]] == [4, 4]
    saved = TransferConfig.load(tmp_path / "run" / "config.yaml")
    assert saved.model.source == str(tiny_wan_dir.resolve()) and saved.reference == str(ref.resolve())


def test_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    cfg = resolve_config({"reference": "clip.mp4", "model": {"source": "model", "family": "wan"}})
    assert cfg.reference == str(tmp_path / "clip.mp4")
    assert cfg.model.source == str(tmp_path / "model")
    hub = resolve_config({"model": {"source": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"}})
    assert hub.model.source == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"  # a hub id stays a hub id


@pytest.mark.parametrize(("section", "key", "value"), [
    ("motion", "rope", "sideways"), ("motion", "sampling", "every-other"), ("motion", "motion_loss", "l2"),
    ("heads", "rule", "vote"), ("model", "family", "hunyuan"), ("video", "frames", 0),
])
def test_settings_check_assignment_too(section, key, value):
    cfg = TransferConfig()
    with pytest.raises(ValidationError):
        setattr(getattr(cfg, section), key, value)
    with pytest.raises(InputError, match=f"{section}.{key}"):
        resolve_config({section: {key: value}})


def test_height_without_width_is_refused():
    with pytest.raises(InputError, match="give both video height and width"):
        resolve_config({"video": {"height": 32}})


def test_config_does_not_import_the_method():
    code = ("import sys, follow_your_motion.precedence; "
            "print(sorted(m for m in sys.modules if m.startswith('follow_your_motion.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "follow_your_motion.method" not in loaded
    assert all(f"follow_your_motion.{name}" in loaded for name in ("config", "recipes", "precedence"))
