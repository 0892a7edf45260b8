"""`lr_schedule`: the learning rate after warmup held, or decayed along a cosine or a line; the steps take it
exactly and a resumed run continues it bit for bit."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_resume import _settings, _train

from follow_your_motion.config import MotionSettings
from follow_your_motion.method.train import lr_factor
from follow_your_motion.runs import RunDir


def test_the_factors_by_hand():
    constant = lr_factor(MotionSettings(steps=8, warmup_steps=4))
    assert [constant(s) for s in range(8)] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0]
    cosine = lr_factor(MotionSettings(steps=10, warmup_steps=2, lr_schedule="cosine"))
    assert [cosine(s) for s in (0, 1, 2)] == [1 / 3, 2 / 3, 1.0]  # warmup, then the cosine from 1
    assert cosine(6) == pytest.approx(0.5) and cosine(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert cosine(10) == pytest.approx(0.0, abs=1e-15)
    linear = lr_factor(MotionSettings(steps=10, warmup_steps=2, lr_schedule="linear"))
    assert [linear(s) for s in (2, 6, 9, 10)] == [1.0, 0.5, 0.125, 0.0]
    assert lr_factor(MotionSettings(steps=4, lr_schedule="cosine"))(0) == 1.0  # no warmup: full rate first


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_each_step_runs_at_its_factor_and_a_resume_continues_it(tiny_wan_dir, tmp_path, schedule):
    settings = _settings(lr_schedule=schedule, warmup_steps=2)
    run = RunDir(tmp_path / "whole")
    whole = _train(tiny_wan_dir, run, settings)
    logged = [e["lr"] for e in map(json.loads, (run.root / "log.jsonl").read_text().splitlines())
              if e.get("event") == "step"]
    factor = lr_factor(settings)  # after step k the scheduler holds step k's successor's rate
    assert logged == pytest.approx([settings.lr * factor(k) for k in range(1, settings.steps + 1)], rel=1e-12)
    cut = RunDir(tmp_path / "cut")
    _train(tiny_wan_dir, cut, settings, stop_after=3)
    resumed = _train(tiny_wan_dir, cut, settings)
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)
