"""The one-clip sanity gate's scoring: trajectory error for moving programs, size error for grow-shrink."""

from __future__ import annotations

import numpy as np
import torch
from test_toy_pretrain import TINY_META

from follow_your_motion.backbones.toy import ToyBackbone
from follow_your_motion.toyworld.metrics import centred_error, relative_size_error, size_track
from follow_your_motion.toyworld.render import ObjectSpec, SceneSpec, render, track_colour
from follow_your_motion.toyworld.sanity import path_error, path_track, sanity_gate


def _clip(program: str, size: float = 0.25) -> np.ndarray:
    return render(SceneSpec((ObjectSpec("circle", "red", program, size=size),))).frames


def test_relative_size_error_is_zero_for_the_same_growth_at_any_scale_and_large_for_none() -> None:
    grow, bigger = size_track(_clip("grow-shrink"), "red"), size_track(_clip("grow-shrink", 0.35), "red")
    still = size_track(_clip("static"), "red")
    assert relative_size_error(grow, grow) == 0.0
    assert relative_size_error(grow, bigger) < 0.03  # only pixel rounding differs
    assert relative_size_error(grow, still) > 0.15
    assert np.isnan(relative_size_error(grow, np.full_like(grow, np.nan)))


def test_path_error_uses_size_for_grow_shrink_and_the_centred_track_otherwise() -> None:
    grow, orbit, still = _clip("grow-shrink"), _clip("orbit-cw"), _clip("static")

    def error(program: str, reference: np.ndarray, generated: np.ndarray) -> float:
        return path_error(program, path_track(program, reference, "red"), path_track(program, generated, "red"), 32.0)

    assert np.array_equal(path_track("grow-shrink", grow, "red"), size_track(grow, "red"))
    assert np.array_equal(path_track("orbit-cw", orbit, "red"), track_colour(orbit, "red"))
    assert error("grow-shrink", grow, grow) == 0.0
    assert error("grow-shrink", grow, still) == relative_size_error(size_track(grow, "red"), size_track(still, "red"))
    assert error("orbit-cw", orbit, still) == centred_error(track_colour(orbit, "red"), track_colour(still, "red"),
                                                            32.0)


def test_gate_reports_the_motionless_baseline_of_its_program() -> None:
    torch.manual_seed(0)
    result = sanity_gate(ToyBackbone.build(TINY_META), "grow-shrink", steps=1, batch_size=1, seeds=1,
                         sample_steps=1, levels=(1.0,))
    grow, still = size_track(_clip("grow-shrink"), "red"), size_track(_clip("static"), "red")
    assert result["metric"] == "relative_size_error"
    assert result["static_baseline_error"] == relative_size_error(grow, still)
    assert set(result["levels"]["1.0"]) == {"relative_size_error"}
    assert result["passed"] is (result["levels"]["1.0"]["relative_size_error"] < 0.5 * result["static_baseline_error"])
