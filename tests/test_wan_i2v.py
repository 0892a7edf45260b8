"""Image-to-video motion transfer: Wan2.1-I2V (CLIP image embeddings) and Wan2.2-I2V-A14B (two experts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from diffusers import WanImageToVideoPipeline
from PIL import Image
from test_cli import fym, moving_square, ok
from tiny_wan import build_tiny_wan_i2v_pipeline

from follow_your_motion.backbones import detect_variant, load_backbone
from follow_your_motion.config import MotionSettings
from follow_your_motion.method.sparse import sample_frames
from follow_your_motion.method.train import motion_inputs
from follow_your_motion.precedence import resolve_config
from follow_your_motion.run_export import export_run
from follow_your_motion.transfer import Transfer
from follow_your_motion.video import read_video, write_video

PROMPT = "a robot walks"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-i2v")
    return {"wan2.1-i2v": build_tiny_wan_i2v_pipeline(root / "i2v"),
            "wan2.2-i2v-a14b": build_tiny_wan_i2v_pipeline(root / "i2v-a14b", boundary_ratio=0.9)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("i2v-inputs")
    (root / "config.yaml").write_text(tiny_config(3) + "model: {dtype: float32}\n")
    picture = root / "picture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), np.uint8)).save(picture)
    other = root / "other.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(other)
    return {"root": root, "config": root / "config.yaml", "ref": write_video(root / "ref.mp4", moving_square(9), 8),
            "picture": picture, "other": other}


@pytest.fixture(scope="module")
def runs(models, inputs, tmp_path_factory) -> dict[str, Path]:
    """`fym transfer ... --image picture.png` on each image-to-video variant."""
    out = {}
    for variant, model in models.items():
        run = tmp_path_factory.mktemp(variant) / "run"
        ok("transfer", inputs["ref"], "-p", PROMPT, "-m", model, "-o", run, "-c", inputs["config"],
           "--image", inputs["picture"])
        out[variant] = run
    return out


def test_variants_are_recognised(models):
    assert {v: detect_variant(str(m)) for v, m in models.items()} == {v: v for v in models}
    one, two = (load_backbone(str(m)) for m in models.values())
    assert one.image_mode == two.image_mode == "required"
    assert len(one.experts) == 1 and one.pipe.image_encoder is not None
    assert [e.sigma_range for e in two.experts] == [(0.9, 1.0), (0.0, 0.9)] and two.pipe.image_encoder is None
    assert resolve_config({"model": {"source": str(models["wan2.2-i2v-a14b"])}}).generate.guidance_2 == 3.5


@pytest.mark.parametrize("variant", ["wan2.1-i2v", "wan2.2-i2v-a14b"])
def test_tuning_conditions_on_the_reference_first_frame(variant, models, inputs, runs):
    job = Transfer.open(runs[variant])
    ref = job.reference()
    cond = ref.cond.tensors["image_latents"]
    expected = job.backbone.encode_image(ref.frames[0], 9, 32, 32).tensors["image_latents"]
    assert torch.equal(cond, expected)  # the reference's own first frame, not the user's picture
    assert torch.equal(cond[:, :4, 0], torch.ones_like(cond[:, :4, 0]))  # the mask marks the first latent frame
    assert not cond[:, :4, 1:].any()
    assert ("image_embeds" in ref.cond.tensors) == (variant == "wan2.1-i2v")
    # sparse sampling cuts the condition latents with the kept frames
    settings = MotionSettings(keep_frames=2, batch_size=1)
    batch = motion_inputs(ref.latents, ref.cond, settings)(3, torch.Generator())
    kept = sample_frames(ref.latents.shape[2], 2, settings.sampling, settings.seed, 3)
    assert torch.equal(batch.cond.tensors["image_latents"], cond[:, :, kept])
    assert torch.equal(batch.latents, ref.latents[:, :, kept])


@pytest.mark.parametrize("variant", ["wan2.1-i2v", "wan2.2-i2v-a14b"])
def test_generate_animates_another_picture_with_the_learned_motion(variant, runs, inputs):
    run = runs[variant]
    ok("generate", "--run", run, "--image", inputs["other"], "--name", "other")
    ok("generate", "--run", run, "--image", inputs["picture"], "--name", "picture")
    other, picture = (read_video(run / "samples" / f"{n}.mp4").frames for n in ("other", "picture"))
    assert other.shape == picture.shape == (9, 32, 32, 3)
    assert not np.array_equal(other, picture)  # the picture is the condition
    assert np.array_equal(picture, read_video(run / "samples" / "result.mp4").frames)  # the transfer's own result


def test_image_rules(models, inputs, tiny_wan_dir, tmp_path):
    no_image = fym("transfer", inputs["ref"], "-p", PROMPT, "-m", models["wan2.1-i2v"], "-o", tmp_path / "a",
                   "-c", inputs["config"])
    assert no_image.exit_code == 2
    assert "this is an image-to-video model: give --image" in no_image.stderr
    assert not list((tmp_path / "a").glob("*_lora*.safetensors")) and not (tmp_path / "a" / "heads.json").exists()
    text_only = fym("transfer", inputs["ref"], "-p", PROMPT, "-m", tiny_wan_dir, "-o", tmp_path / "b",
                    "-c", inputs["config"], "--image", inputs["picture"])
    assert text_only.exit_code == 2 and "this model has no image mode" in text_only.stderr
    missing = fym("transfer", inputs["ref"], "-p", PROMPT, "-m", models["wan2.1-i2v"], "-o", tmp_path / "c",
                  "-c", inputs["config"], "--image", tmp_path / "nope.png")
    assert missing.exit_code == 2 and "nope.png: image file not found" in missing.stderr


def test_i2v_lora_loads_in_diffusers_and_reproduces_the_trained_model(models, runs, tmp_path):
    run = runs["wan2.1-i2v"]
    (path,) = [p for p in export_run(run, "diffusers", tmp_path) if p.name.startswith("motion")]
    job = Transfer.open(run)
    ref = job.reference()
    gen = torch.Generator().manual_seed(2)
    noisy = torch.randn(ref.latents.shape, generator=gen)
    expert = job.backbone.experts[0]
    job.backbone.load_lora(expert, str(run / "motion_lora.safetensors"), "motion")
    with torch.no_grad(), job.backbone.adapters({"motion": 1.0}):
        trained = job.backbone.predict(expert, noisy, torch.tensor([500.0]), ref.cond)
    pipe = WanImageToVideoPipeline.from_pretrained(str(models["wan2.1-i2v"]))
    pipe.load_lora_weights(str(path), adapter_name="m")
    t = ref.cond.tensors
    with torch.no_grad():
        loaded = pipe.transformer(hidden_states=torch.cat([noisy, t["image_latents"]], dim=1),
                                  timestep=torch.tensor([500.0]), encoder_hidden_states=t["text"],
                                  encoder_hidden_states_image=t["image_embeds"], return_dict=False)[0]
    assert torch.allclose(trained, loaded.float(), atol=1e-5, rtol=0), (trained - loaded).abs().max()


@pytest.mark.parametrize("variant", ["wan2.1-i2v", "wan2.2-i2v-a14b"])
def test_stage2_gives_each_single_frame_itself_as_its_first_frame(variant, models, inputs, tmp_path, monkeypatch):
    """A one-frame clip of an image-to-video model is conditioned on itself (mask on, its own latents and CLIP
    embedding), as in the model's training, where the given first frame is the clip's first frame; never on the
    reference's first frame while another frame is the target (docs/method.md, "Image-to-video")."""
    cfg = resolve_config({"reference": str(inputs["ref"]), "prompt": PROMPT, "model": {"source": str(models[variant])},
                          "spatial": {"batch_size": 3}}, inputs["config"])
    job = Transfer(cfg, tmp_path / "run")
    noises, seen = [], []
    draw_noise, predict = job.backbone.draw_noise, job.backbone.predict

    def recording_noise(shape, generator):
        noises.append(draw_noise(shape, generator))
        return noises[-1]

    def recording_predict(expert, noisy, timesteps, cond, *args):
        if noisy.shape[2] == 1:  # stage 2's single frames (stage 1 runs first, on the clip)
            seen.append((noisy, timesteps, noises[-1], cond))
        return predict(expert, noisy, timesteps, cond, *args)

    monkeypatch.setattr(job.backbone, "draw_noise", recording_noise)
    monkeypatch.setattr(job.backbone, "predict", recording_predict)
    job.tune_spatial()
    ref, frames = job.reference(), job.frame_latents()
    own = [job.backbone.encode_image(frame, 1, 32, 32).tensors for frame in ref.frames]
    picked = []
    for noisy, timesteps, noise, cond in seen:
        s = (timesteps / job.backbone.num_train_timesteps).view(-1, 1, 1, 1, 1)
        clean = (noisy - s * noise) / (1 - s)  # the frames being learnt
        for b in range(len(noisy)):
            i = int(((frames - clean[b]) ** 2).flatten(1).sum(1).argmin())
            picked.append(i)
            torch.testing.assert_close(clean[b], frames[i], atol=1e-3, rtol=0)
            for name, tensor in own[i].items():
                assert torch.equal(cond.tensors[name][b], tensor[0]), name
            torch.testing.assert_close(cond.tensors["image_latents"][b, 4:], frames[i], atol=1e-5, rtol=0)
            assert torch.equal(cond.tensors["image_latents"][b, :4], torch.ones_like(frames[i][:4]))
    assert len(seen) == 3 * len(job.backbone.experts) and any(i != 0 for i in picked)
