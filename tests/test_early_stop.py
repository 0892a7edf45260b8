"""Early stopping on a loss plateau (`early_stop`): the rule stops where it says, and a resumed run stops at the
step the uninterrupted one does, with the same LoRA bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config
from test_cli import moving_square

from follow_your_motion.backbones.wan import WanBackbone
from follow_your_motion.config import EarlyStopSettings, MotionSettings, SpatialSettings
from follow_your_motion.method.early_stop import Plateau
from follow_your_motion.method.lora import add_masked_lora
from follow_your_motion.method.train import motion_inputs, train_adapter, training_finished
from follow_your_motion.precedence import resolve_config
from follow_your_motion.runs import RunDir
from follow_your_motion.transfer import Transfer
from follow_your_motion.video import write_video


def _stops(rule: EarlyStopSettings, losses: list[float]) -> list[int]:
    plateau = Plateau(rule)
    return [step for step, loss in enumerate(losses, 1) if plateau.update(loss)]


def test_off_by_default():
    assert SpatialSettings().early_stop is None and MotionSettings().early_stop is None


def test_the_rule_on_constructed_losses():
    rule = EarlyStopSettings(window=2, patience=2, min_improvement=0.1)
    # window means 1.0 (best), 0.8 (below 0.9: best), 0.75, 0.74 (not below 0.72: two stale windows) -> step 8
    assert _stops(rule, [1.2, 0.8, 0.9, 0.7, 0.75, 0.75, 0.7, 0.78, 0.1, 0.1]) == [8]
    # an improving window resets the count: 1.0, 0.95 (stale), 0.5 (best), 0.5, 0.5 -> step 10
    assert _stops(rule, [1, 1, 0.95, 0.95, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1])[0] == 10
    # improvement is relative to the best window: 0.899 is 10% below 1.0, 0.9 is not
    assert _stops(EarlyStopSettings(window=1, patience=1, min_improvement=0.1), [1.0, 0.899, 0.81]) == [3]
    assert not _stops(EarlyStopSettings(window=3, patience=1), [1.0, 1.0])  # no window complete yet


def test_the_state_resumes_mid_window():
    rule = EarlyStopSettings(window=3, patience=2, min_improvement=0.05)
    # window means 0.95 (best), 0.883 (best), 0.88 and 0.86 (not below 0.839: stale twice) -> step 12
    losses = [1.0, 0.9, 0.95, 0.9, 0.9, 0.85, 0.9, 0.88, 0.86, 0.87, 0.85, 0.86]
    whole = _stops(rule, losses)
    first = Plateau(rule)
    for loss in losses[:4]:  # stopped one step into the second window
        first.update(loss)
    state = json.loads(json.dumps(first.state_dict()))  # as the checkpoint keeps it
    second = Plateau(rule)
    second.load_state_dict(state)
    assert [step for step, loss in enumerate(losses[4:], 5) if second.update(loss)] == whole == [12]


SETTINGS = dict(steps=10, keep_frames=3, lr=1e-2, checkpoint_every=3, seed=5,
                early_stop=EarlyStopSettings(window=2, patience=2, min_improvement=0.9))


def _train(tiny_wan_dir, run: RunDir, stop_after: int | None = None):
    wan = WanBackbone.load(str(tiny_wan_dir))
    add_masked_lora(wan.experts[0], "motion", {0: [0, 1], 1: [2]}, rank=4, alpha=4, seed=3)
    video = torch.rand(3, 17, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    settings = MotionSettings(**SETTINGS)
    inputs = motion_inputs(wan.encode_video(video), wan.encode_prompt("a tiger walks through snow"), settings)
    return train_adapter(wan, wan.experts[0], run, "motion", "motion", settings, inputs, motion_weight=1.0,
                         stop_after=stop_after)


def _events(run: RunDir, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (run.root / "log.jsonl").read_text().splitlines()) if e["event"] == kind]


def test_training_stops_where_the_rule_says_and_a_resumed_run_stops_there_too(tiny_wan_dir, tmp_path):
    whole = RunDir(tmp_path / "whole")
    state_whole = _train(tiny_wan_dir, whole)
    steps = _events(whole, "step")
    # the rule replayed on the motion losses the run logged (each read once, after its step)
    expected = _stops(SETTINGS["early_stop"], [s["motion"] for s in steps])[0]
    assert [s["step"] for s in steps] == list(range(1, expected + 1)) and expected < SETTINGS["steps"]
    assert [e["step"] for e in _events(whole, "early_stop")] == [expected]
    assert training_finished(whole, "motion", SETTINGS["steps"])

    resumed = RunDir(tmp_path / "resumed")
    _train(tiny_wan_dir, resumed, stop_after=expected - 1)  # cut inside the last window
    assert not training_finished(resumed, "motion", SETTINGS["steps"])
    state_resumed = _train(tiny_wan_dir, resumed)
    assert [e["step"] for e in _events(resumed, "early_stop")] == [expected]
    assert training_finished(resumed, "motion", SETTINGS["steps"])
    assert all(torch.equal(state_whole[k], state_resumed[k]) for k in state_whole)
    # run again after the stop: nothing more is trained
    again = _train(tiny_wan_dir, resumed)
    assert len(_events(resumed, "step")) == expected and all(torch.equal(again[k], state_whole[k]) for k in again)


@pytest.fixture
def cfg(tiny_wan_dir, tmp_path):
    ref = write_video(tmp_path / "ref.mp4", moving_square(9), 8)
    path = tmp_path / "settings.yaml"
    path.write_text(tiny_config(8))
    stop = {"early_stop": {"window": 1, "patience": 1, "min_improvement": 0.99}}
    return resolve_config({"reference": str(ref), "prompt": "a robot walks", "model": {"source": str(tiny_wan_dir)},
                           "spatial": {"steps": 0}, "motion": stop}, path)


def test_a_stage_stopped_on_a_plateau_is_finished(cfg, tmp_path):
    """`fym transfer` exports the LoRA of a stage that stopped early and does not train it again."""
    job = Transfer(cfg, tmp_path / "run")
    assert job.tune_motion() == [tmp_path / "run" / "motion_lora.safetensors"]
    assert [e["step"] for e in _events(job.run, "early_stop")] == [2]  # window 1 sets the best, 2 is stale
    assert job.stage_done("motion")
