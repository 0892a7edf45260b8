"""`fym guide` and `fym generate --guide` end to end on the embedded toy model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from follow_your_motion.cli import app
from follow_your_motion.toyworld.render import ObjectSpec, SceneSpec, render
from follow_your_motion.video import write_video


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    clip = render(SceneSpec((ObjectSpec("circle", "red", "right", size=0.3),)))
    return write_video(tmp_path_factory.mktemp("ref") / "ref.mp4", clip.frames, 8.0)


def fym(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _events(run: Path, kind: str) -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["event"] == kind]


def test_guide_writes_a_run_without_lora_files(reference, tmp_path):
    run = tmp_path / "run"
    result = fym("guide", reference, "--prompt", "a blue square", "--method", "ditflow", "--out", run)
    assert result.exit_code == 0, result.output
    assert (run / "samples" / "result.mp4").is_file() and (run / "samples" / "result_side_by_side.mp4").is_file()
    assert not list(run.glob("*lora*")) and not (run / "heads.json").exists()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["guidance"]["method"] == "ditflow" and config["generate"]["motion_scale"] == 0.0
    (record,) = _events(run, "guidance")
    steps = 20  # the toy recipe's sampling steps; 0.2 of them guided, the first (pure noise) left as drawn
    assert [step["step"] for step in record["steps"]] == list(range(1, round(0.2 * steps)))


def test_a_bad_method_is_refused_before_anything_is_written(reference, tmp_path):
    run = tmp_path / "run"
    result = fym("guide", reference, "--prompt", "a blue square", "--method", "motionclone", "--out", run)
    assert result.exit_code == 2
    assert "guidance.method" in result.output and len(result.output.strip().splitlines()) == 1
    assert not run.exists()


def test_generate_adds_a_guidance_to_a_runs_sampling(reference, tmp_path):
    run = tmp_path / "run"
    assert fym("guide", reference, "--prompt", "a blue square", "--method", "flow", "--out", run).exit_code == 0
    result = fym("generate", "--run", run, "--guide", "ditflow", "--steps", "5", "--name", "again")
    assert result.exit_code == 0, result.output
    assert (run / "samples" / "again.mp4").is_file()
    assert [e["method"] for e in _events(run, "guidance")] == ["flow", "ditflow"]
    assert fym("generate", "--run", run, "--guide", "bogus").exit_code == 2
