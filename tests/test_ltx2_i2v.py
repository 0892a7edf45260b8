"""LTX-2 image-to-video: the text-to-video checkpoint animates a picture through LTX2ImageToVideoPipeline when given
one (tuned with the reference's clean first frame), and a directory saved as that pipeline always needs one."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from diffusers import LTX2ImageToVideoPipeline
from PIL import Image
from test_cli import moving_square, ok
from tiny_ltx2 import CLI_SETTINGS, build_tiny_ltx2_pipeline

from follow_your_motion.backbones import detect_family, detect_image_mode, load_backbone
from follow_your_motion.config import TransferConfig
from follow_your_motion.errors import InputError
from follow_your_motion.transfer import Transfer
from follow_your_motion.video import read_video, write_video

PROMPT = "a robot walks"


def _picture(value: int) -> np.ndarray:
    return np.full((64, 64, 3), value, np.uint8)


def test_an_image_to_video_directory_needs_a_picture(tmp_path):
    model = str(build_tiny_ltx2_pipeline(tmp_path / "i2v", image_to_video=True))
    assert detect_family(model) == "ltx2" and detect_image_mode(model) == "required"
    backbone = load_backbone(model)
    assert isinstance(backbone.pipe, LTX2ImageToVideoPipeline) and backbone.image_mode == "required"
    size = {"num_frames": 9, "height": 64, "width": 64, "steps": 2, "guidance": 1.0, "seed": 0, "adapter_scales": {}}
    with pytest.raises(InputError, match="this is an image-to-video model: give --image"):
        backbone.generate(PROMPT, negative_prompt="", **size)
    frames = backbone.generate(PROMPT, negative_prompt="", image=_picture(200), **size)
    assert frames.shape == (9, 64, 64, 3)


def test_the_text_to_video_checkpoint_tunes_and_animates_a_picture(tmp_path, monkeypatch):
    model = build_tiny_ltx2_pipeline(tmp_path / "t2v")
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump(CLI_SETTINGS))
    ref = write_video(tmp_path / "ref.mp4", moving_square(17, 64), 8)
    pictures = []
    for i, value in enumerate((40, 220)):
        pictures.append(tmp_path / f"p{i}.png")
        Image.fromarray(_picture(value)).save(pictures[-1])
    animated, call = [], LTX2ImageToVideoPipeline.__call__

    def recorded(self, *args, **kwargs):
        animated.append(kwargs["image"].size)
        return call(self, *args, **kwargs)

    monkeypatch.setattr(LTX2ImageToVideoPipeline, "__call__", recorded)
    run = tmp_path / "run"
    ok("transfer", ref, "-p", PROMPT, "-m", model, "-o", run, "-c", settings, "--image", pictures[0])
    assert TransferConfig.load(run / "config.yaml").video.first_frame_condition is True
    cond = Transfer.open(run).reference().cond
    assert cond.fixed_frames == (0,) and set(cond.tensors) == {"text", "audio_text", "text_mask", "first_frame"}
    ok("generate", "--run", run, "--image", pictures[1], "--name", "other")
    assert animated == [(64, 64), (64, 64)]  # both samples ran the image-to-video pipeline
    first, second = (read_video(run / "samples" / f"{n}.mp4").frames for n in ("result", "other"))
    assert first.shape == (17, 64, 64, 3) and not np.array_equal(first, second)
