"""The app's Image field for image-to-video models: shown for them, required by them, staged like the reference."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image
from test_app import finish, request, upload
from tiny_wan import build_tiny_wan_i2v_pipeline

from follow_your_motion.app.jobs import DONE
from follow_your_motion.app.service import AppService
from follow_your_motion.app.settings import image_to_video, resolve_request
from follow_your_motion.config import TransferConfig
from follow_your_motion.errors import InputError


def png(value: int) -> bytes:
    buffer = BytesIO()
    Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def i2v_model(tmp_path_factory) -> str:
    return str(build_tiny_wan_i2v_pipeline(tmp_path_factory.mktemp("app-i2v") / "pipe"))


TINY_I2V = {"model": {"dtype": "float32"}, "video": {"frames": 9, "height": 32, "width": 32},
            "heads": {"num_queries": 16}, "spatial": {"steps": 1, "rank": 2}, "motion": {"steps": 2, "rank": 2},
            "generate": {"steps": 1}}


def test_image_field_follows_the_model(i2v_model, tiny_wan_dir):
    assert image_to_video(i2v_model) and not image_to_video(str(tiny_wan_dir)) and not image_to_video(None)
    with pytest.raises(InputError, match="the chosen model is image-to-video: give an Image"):
        resolve_request(request("x.mp4", model=i2v_model, extra=TINY_I2V))


def test_transfer_animates_the_staged_image(i2v_model, tmp_path):
    service = AppService(tmp_path / "runs")
    video = upload(service)
    picture = upload(service, "my picture.png", png(200))
    job = finish(service, service.start_transfer(request(video, model=i2v_model, image=str(picture),
                                                         caption="a robot walks", target_prompt="a dog runs",
                                                         extra=TINY_I2V)))
    assert job.state == DONE, job.snapshot()
    cfg = TransferConfig.load(job.run_dir / "config.yaml")
    assert cfg.generate.image == str(job.run_dir / "image.png")  # the app's copy, under its own name
    assert cfg.video.first_frame_condition is True
    assert (job.run_dir / "motion_lora.safetensors").is_file()


def test_a_refused_image_leaves_no_run(i2v_model, tmp_path):
    service = AppService(tmp_path / "runs")
    video = upload(service)
    bad = upload(service, "picture.png", b"not an image")
    with pytest.raises(InputError, match="picture.png: not a readable image"):
        service.start_transfer(request(video, model=i2v_model, image=str(bad), caption="a robot walks",
                                       extra=TINY_I2V))
    assert not bad.exists()
    assert not [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
