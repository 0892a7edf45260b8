"""Failures you can diagnose: bad input is one line and exit 2; anything else keeps its traceback."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from follow_your_motion.cli import MEMORY_HINT, app
from follow_your_motion.errors import InputError
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
