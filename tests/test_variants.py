"""The registry of variants: every hub id is identified (or refused) before anything is downloaded."""

from __future__ import annotations

import numpy as np
import pytest
from diffusers import DiffusionPipeline
from typer.testing import CliRunner

from follow_your_motion.backbones import detect_family, detect_variant
from follow_your_motion.backbones.variants import BY_HUB_ID, FAMILIES, VARIANTS
from follow_your_motion.cli import app
from follow_your_motion.precedence import resolve_config
from follow_your_motion.recipes import RECIPES
from follow_your_motion.video import write_video


class Downloaded(Exception):
    """Raised by the stand-in for `from_pretrained`: a test reached the download."""


@pytest.fixture
def no_download(monkeypatch):
    def from_pretrained(*args, **kwargs):
        raise Downloaded(args[0] if args else kwargs)

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", from_pretrained)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def transfer_args(tmp_path, model: str, *extra: str) -> list[str]:
    """`fym classify` of a real reference (inputs are checked before the model is identified and loaded)."""
    write_video(tmp_path / "ref.mp4", np.zeros((9, 32, 32, 3), np.uint8), 8)
    return ["classify", str(tmp_path / "ref.mp4"), "-p", "a dog", "-o", str(tmp_path / "run"), "-m", model, *extra]


def test_each_hub_id_is_listed_once_and_every_variant_has_a_known_family_and_recipe():
    ids = [hub_id for v in VARIANTS for hub_id in v.hub_ids]
    assert len(ids) == len(set(ids))
    for v in VARIANTS:
        assert v.refused is not None or (v.family in FAMILIES and v.recipe in (None, *RECIPES))


@pytest.mark.parametrize(("hub_id", "family", "frames", "size"), [
    ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "wan", 81, (480, 832)),
    ("Wan-AI/Wan2.2-TI2V-5B-Diffusers", "wan", 121, (704, 1280)),
    ("Lightricks/LTX-Video-0.9.1", "ltx", 161, (512, 704)),
    ("zai-org/CogVideoX-5b", "cogvideox", 49, (480, 720)),
    ("THUDM/CogVideoX1.5-5B", "cogvideox", 81, (768, 1360)),
    ("hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-720p_t2v", "hunyuan_video15", 121, (480, 848)),
    ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "wan", 81, (480, 832)),
    ("Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", "wan", 81, (720, 1280)),
    ("Lightricks/LTX-2", "ltx2", 121, (512, 768)),
])
def test_a_listed_hub_id_gets_its_family_and_recipe_offline(no_download, hub_id, family, frames, size):
    cfg = resolve_config({"model": {"source": hub_id}})
    assert cfg.model.family == family and cfg.video.target() == (frames, *size)


@pytest.mark.parametrize("hub_id", ["zai-org/CogVideoX-5b-I2V", "THUDM/CogVideoX1.5-5B-I2V",
                                    "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v",
                                    "Wan-AI/Wan2.1-VACE-14B-diffusers", "hunyuanvideo-community/HunyuanVideo"])
def test_a_refused_variant_is_refused_by_name_before_any_download(no_download, tmp_path, hub_id):
    result = CliRunner().invoke(app, transfer_args(tmp_path, hub_id))
    assert result.exit_code == 2 and not isinstance(result.exception, Downloaded)
    assert f"{BY_HUB_ID[hub_id].refused} pipeline" in result.stderr and "does not support" in result.stderr


def test_an_unknown_hub_id_is_refused_naming_family_before_any_download(no_download, tmp_path):
    result = CliRunner().invoke(app, transfer_args(tmp_path, "someone/Wan2.1-finetune"))
    assert result.exit_code == 2 and not isinstance(result.exception, Downloaded)
    line = result.stderr.strip().splitlines()[-1]
    assert "--family" in line and all(f in line for f in FAMILIES)
    with pytest.raises(Exception, match="--family"):
        detect_family("someone/Wan2.1-finetune")
    assert detect_variant("someone/Wan2.1-finetune") is None


def test_family_runs_an_unlisted_checkpoint_with_its_family_recipe_and_says_so(no_download, tmp_path):
    result = CliRunner().invoke(app, transfer_args(tmp_path, "someone/ltx-finetune", "--family", "ltx"))
    assert isinstance(result.exception, Downloaded)  # identified, then loaded: the download is the next step
    assert ("model someone/ltx-finetune: family ltx, recipe ltx (161 frames of 512x704, 50 sampling steps, "
            "guidance 3.0)") in result.stderr


def test_a_wrong_family_name_is_an_input_error(no_download, tmp_path):
    result = CliRunner().invoke(app, transfer_args(tmp_path, "someone/x", "--family", "sora"))
    assert result.exit_code == 2 and "model.family" in result.stderr


def test_family_does_not_let_a_refused_hub_id_through(no_download, tmp_path):
    """`--family wan` on Wan VACE's hub id: the registry still refuses it by name, before any download."""
    result = CliRunner().invoke(app, transfer_args(tmp_path, "Wan-AI/Wan2.1-VACE-1.3B-diffusers", "--family", "wan"))
    assert result.exit_code == 2, result.output
    assert "is a Wan VACE pipeline (WanVACEPipeline), which this project does not support" in result.stderr
