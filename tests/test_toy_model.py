"""The embedded toy model: shipped weights, vocabulary errors, its evaluator and trajectory metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from follow_your_motion.backbones.toy import ToyBackbone, default_model_dir
from follow_your_motion.toyworld.evaluate import eval_prompts, measure_clip
from follow_your_motion.toyworld.metrics import centred_error, displacement_cosine, transfer_metrics
from follow_your_motion.toyworld.render import ObjectSpec, SceneSpec, render, track_colour


@pytest.fixture(scope="module")
def toy() -> ToyBackbone:
    return ToyBackbone.load()


def test_shipped_weights_load_offline_and_generate_deterministically(toy: ToyBackbone) -> None:
    meta = json.loads((default_model_dir() / "config.json").read_text())
    assert (default_model_dir() / "model.safetensors").stat().st_size <= 25 * 2**20
    args = dict(negative_prompt="", num_frames=9, height=32, width=32, steps=2, guidance=3.0, adapter_scales={})
    first = toy.generate("a red circle", seed=3, **args)
    again = toy.generate("a red circle", seed=3, **args)
    other = toy.generate("a red circle", seed=4, **args)
    assert first.shape == (9, 32, 32, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert toy.geometry.patch == tuple(meta["transformer"]["patch_size"])


def test_unknown_words_name_the_word_and_list_the_vocabulary(toy: ToyBackbone) -> None:
    with pytest.raises(ValueError, match="does not know 'tiger'") as err:
        toy.encode_prompt("a tiger circle")
    for word in ("red", "circle", "moves"):
        assert word in str(err.value)


def test_time_channel_follows_frame_positions(toy: ToyBackbone) -> None:
    import torch

    if not toy.time_span:
        pytest.skip("shipped model has no time channel")
    latents = torch.zeros(1, 3, 3, 32, 32)
    stock = toy.time_channel(latents, None)[0, 0, :, 0, 0]
    moved = toy.time_channel(latents, torch.tensor([0.0, 4.0, 8.0], dtype=torch.float64))[0, 0, :, 0, 0]
    span = toy.time_span - 1
    assert torch.allclose(stock, torch.tensor([-1.0, -1 + 2 / span, -1 + 4 / span]))
    assert torch.allclose(moved, torch.tensor([-1.0, -1 + 8 / span, -1 + 16 / span]))


def test_trajectory_metrics_self_is_perfect_and_reversed_is_poor() -> None:
    clip = render(SceneSpec((ObjectSpec("circle", "red", "down-right"),)))
    track = track_colour(clip.frames, "red")
    assert centred_error(track, track, 32) == 0.0
    assert displacement_cosine(track, track) == pytest.approx(1.0)
    reversed_track = track[::-1]
    assert displacement_cosine(track, reversed_track) < -0.5
    assert centred_error(track, reversed_track, 32) > 0.1
    shifted = track + np.array([5.0, -3.0])  # translation does not matter
    assert centred_error(track, shifted, 32) == pytest.approx(0.0, abs=1e-12)
    metrics = transfer_metrics(clip.frames, "red", clip.frames[::-1], "red")
    assert metrics["displacement_cosine"] < -0.5 and not metrics["reference_colour_leaked"]


def test_leak_detection() -> None:
    red = render(SceneSpec((ObjectSpec("circle", "red", "orbit-cw"),))).frames
    blue = render(SceneSpec((ObjectSpec("square", "blue", "orbit-cw"),))).frames
    assert transfer_metrics(red, "red", blue, "blue")["reference_colour_leaked"] is False
    leaky = blue.copy()
    leaky[4, :4, :4] = (255, 0, 0)  # a few reference-coloured pixels in one frame
    assert transfer_metrics(red, "red", leaky, "blue")["reference_colour_leaked"] is True


@pytest.mark.parametrize("index", range(0, 64, 5))
def test_evaluator_scores_ground_truth_renders_as_correct(index: int) -> None:
    prompt, colour, shape, direction = eval_prompts(64)[index]
    program = direction or "static"
    frames = render(SceneSpec((ObjectSpec(shape, colour, program, size=0.3),))).frames
    checks = measure_clip(frames, colour, shape, direction)
    assert checks["colour_ok"] and checks["smooth"]
    assert checks["shape_ok"], (prompt, checks["fill"])
    assert checks["direction_ok"] in (None, True)
    assert (checks["direction_ok"] is None) == (direction is None)


def test_evaluator_rejects_wrong_direction_and_jumps() -> None:
    frames = render(SceneSpec((ObjectSpec("square", "green", "left"),))).frames
    assert measure_clip(frames, "green", "square", "right")["direction_ok"] is False
    jumpy = frames.copy()
    jumpy[4] = np.roll(frames[4], 10, axis=1)
    assert measure_clip(jumpy, "green", "square", "left")["smooth"] is False


def test_a_toy_model_folder_is_its_own_family(tmp_path) -> None:
    """A folder `fym toyworld pretrain` wrote is run with the toy backbone and recipe, not taken for Wan."""
    import shutil

    from follow_your_motion.backbones import detect_family, load_backbone
    from follow_your_motion.bench.runner import base_settings

    folder = tmp_path / "my-toy"
    shutil.copytree(default_model_dir(), folder)
    assert detect_family(str(folder)) == "toy"
    assert isinstance(load_backbone(str(folder)), ToyBackbone)
    settings, family = base_settings(str(folder), "cpu", None)
    assert family == "toy" and settings["video"]["auto_frames"] == 9 and settings["video"]["auto_size"] == (32, 32)
    (folder / "config.json").write_text("{}")
    assert detect_family(str(folder)) == "wan"  # not a toy config: left to the Wan loader and its error


def test_eval_command_records_its_sampling_settings_and_rejects_a_bad_noise_prior(tmp_path) -> None:
    from typer.testing import CliRunner

    from follow_your_motion.cli import app

    args = ["toyworld", "eval", "--out", str(tmp_path), "--prompts", "2", "--steps", "1", "--guidance", "1"]
    done = CliRunner().invoke(app, [*args, "--noise-correlation", "0.5"])
    assert done.exit_code == 0, done.output
    summary = json.loads((tmp_path / "eval.json").read_text())
    assert (summary["prompts"], summary["steps"], summary["guidance"], summary["noise_correlation"]) == (2, 1, 1.0, 0.5)
    assert len(summary["rows"]) == 2
    bad = CliRunner().invoke(app, [*args, "--noise-correlation", "1.5"])
    assert bad.exit_code == 2 and "noise_correlation must lie in [0, 1)" in bad.output
