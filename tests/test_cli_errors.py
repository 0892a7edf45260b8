"""Failures you can diagnose: bad input is one line and exit 2; anything else keeps its traceback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from follow_your_motion.cli import MEMORY_HINT, app
from follow_your_motion.errors import InputError
from follow_your_motion.precedence import resolve_config
from follow_your_motion.transfer import Transfer
from follow_your_motion.video import VideoError


def classify_args(tmp_path) -> list[str]:
    return ["classify", str(tmp_path / "missing.mp4"), "-p", "a red circle", "-o", str(tmp_path / "run")]


def test_input_error_is_one_line(tmp_path):
    result = CliRunner().invoke(app, classify_args(tmp_path))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'missing.mp4'}: file not found"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback_of_input_errors(tmp_path, how):
    args, env = (["--debug", *classify_args(tmp_path)], {}) if how == "flag" else (classify_args(tmp_path),
                                                                                   {"FYM_DEBUG": "1"})
    result = CliRunner().invoke(app, args, env=env)
    assert isinstance(result.exception, VideoError) and isinstance(result.exception, InputError)
    assert result.exit_code == 1


@pytest.fixture
def failing_classify(monkeypatch, tmp_path):
    """`fym classify` on a valid toy clip, with stage 1 replaced by `error`."""
    from follow_your_motion.toyworld.examples import EXAMPLES
    from follow_your_motion.toyworld.render import render
    from follow_your_motion.video import write_video

    clip = render(EXAMPLES["single-orbit-cw"])
    ref = write_video(tmp_path / "ref.mp4", clip.frames, 8)

    def run(error: Exception):
        def classify(self):
            raise error

        monkeypatch.setattr(Transfer, "classify", classify)
        return CliRunner().invoke(app, ["classify", str(ref), "-p", clip.caption, "-o", str(tmp_path / "run")])

    return run


def test_a_bug_keeps_its_traceback(failing_classify):
    result = failing_classify(RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"))
    assert isinstance(result.exception, RuntimeError) and result.exit_code == 1
    assert "error:" not in result.stderr  # not dressed up as bad input
    result = failing_classify(ValueError("a library's own ValueError"))
    assert type(result.exception) is ValueError  # only our InputError is taken for bad input


def test_out_of_memory_names_the_memory_options(failing_classify):
    result = failing_classify(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    assert isinstance(result.exception, torch.OutOfMemoryError)
    assert f"error: {MEMORY_HINT}" in result.stderr
    assert "grad_checkpointing" in MEMORY_HINT and "offload" in MEMORY_HINT


@pytest.fixture
def loading_fails(monkeypatch):
    """Any model load is a loud failure (a bug, not bad input), so an input error can only come before it."""
    from follow_your_motion import transfer

    def load(*args, **kwargs):
        raise RuntimeError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(transfer, "load_backbone", load)


def bad_inputs(tmp_path) -> dict[str, tuple[list[str], str]]:
    """name -> (the arguments after `fym transfer REF -p ... -o RUN`, the error line's text)."""
    from follow_your_motion.video import write_video

    ref = write_video(tmp_path / "ref.mp4", np.zeros((9, 32, 32, 3), np.uint8), 8)
    one = write_video(tmp_path / "one.mp4", np.zeros((1, 32, 32, 3), np.uint8), 8)
    (tmp_path / "text.mp4").write_text("this is not a video\n")
    (tmp_path / "file-run").write_text("not a folder\n")
    (tmp_path / "broken-run").mkdir()
    (tmp_path / "broken-run" / "config.yaml").write_text("video: [\n")
    run = str(tmp_path / "run")
    return {
        "missing reference": ([str(tmp_path / "nope.mp4"), "-o", run], f"{tmp_path / 'nope.mp4'}: file not found"),
        "text as video": ([str(tmp_path / "text.mp4"), "-o", run], "text.mp4: not a readable video"),
        "one frame": ([str(one), "-o", run], "one.mp4: clip has 1 frames, but motion transfer on this model needs "
                                             "at least 2"),
        "missing image": ([str(ref), "-o", run, "--image", str(tmp_path / "nope.png")],
                          f"{tmp_path / 'nope.png'}: image file not found"),
        "run is a file": ([str(ref), "-o", str(tmp_path / "file-run")], "file-run: is a file, not a run directory"),
        "broken run config": ([str(ref), "-o", str(tmp_path / "broken-run")], "config.yaml: invalid config"),
    }


def model_inputs(tmp_path, model) -> dict[str, tuple[list[str], str]]:
    """Bad input a real model's config files tell (read before its weights are): its minimum and sizes."""
    from follow_your_motion.video import write_video

    ref = write_video(tmp_path / "ref.mp4", np.zeros((9, 32, 32, 3), np.uint8), 8)
    short = write_video(tmp_path / "short.mp4", np.zeros((3, 32, 32, 3), np.uint8), 8)
    run = str(tmp_path / "run")
    other = tmp_path / "other-run"
    other.mkdir()
    resolve_config({"reference": str(ref), "prompt": "a blue square", "model": {"source": str(model)}}).save(
        other / "config.yaml")
    return {
        "too short for Wan": ([str(short), "-m", str(model), "-o", run], "short.mp4: clip has 3 frames, but motion "
                              "transfer on this model needs at least 5 (4k+1; fewer have no motion to learn)"),
        "size Wan cannot take": ([str(ref), "-m", str(model), "-o", run, "--size", "30x32"],
                                 "height must be a positive multiple of 16 (got 30)"),
        "frames Wan cannot take": ([str(ref), "-m", str(model), "-o", run, "--frames", "8"], "frames must be 4k+1"),
        "run of other settings": ([str(ref), "-m", str(model), "-o", str(other)],
                                  "other-run holds a run made with other settings"),
    }


MODEL_CASES = ("too short for Wan", "size Wan cannot take", "frames Wan cannot take", "run of other settings")


@pytest.mark.parametrize("case", ["missing reference", "text as video", "one frame", "missing image", "run is a file",
                                  "broken run config", *MODEL_CASES])
def test_inputs_are_checked_before_the_model_loads(case, tmp_path, loading_fails, tiny_wan_dir):
    cases = model_inputs(tmp_path, tiny_wan_dir) if case in MODEL_CASES else bad_inputs(tmp_path)
    args, message = cases[case]
    ref, *rest = args
    result = CliRunner().invoke(app, ["transfer", ref, "-p", "a red circle", *rest])
    assert result.exit_code == 2, (result.output, result.exception)
    assert message in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()
