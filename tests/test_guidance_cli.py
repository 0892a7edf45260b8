"""`fym guide`, `fym generate --guide` and the app's guided generation end to end on the embedded toy model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from follow_your_motion.app.jobs import DONE
from follow_your_motion.app.service import AppService
from follow_your_motion.cli import app
from follow_your_motion.errors import InputError
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


def test_a_bad_method_is_refused_before_anything_is_written(reference, tmp_path):
    run = tmp_path / "run"
    result = fym("guide", reference, "--prompt", "a blue square", "--method", "motionclone", "--out", run)
    assert result.exit_code == 2
    assert "guidance.method" in result.output and len(result.output.strip().splitlines()) == 1
    assert not run.exists()


@pytest.fixture(scope="module")
def flow_run(reference, tmp_path_factory) -> Path:
    """A `fym guide --method flow` run in a runs folder."""
    run = tmp_path_factory.mktemp("runs") / "guided"
    result = fym("guide", reference, "--prompt", "a blue square", "--method", "flow", "--out", run)
    assert result.exit_code == 0, result.output
    return run


def test_guide_writes_a_run_without_lora_files(flow_run):
    assert (flow_run / "samples" / "result.mp4").is_file()
    assert (flow_run / "samples" / "result_side_by_side.mp4").is_file()
    assert not list(flow_run.glob("*lora*")) and not (flow_run / "heads.json").exists()
    config = yaml.safe_load((flow_run / "config.yaml").read_text())
    assert config["guidance"]["method"] == "flow" and config["generate"]["motion_scale"] == 0.0
    record = _events(flow_run, "guidance")[0]
    # the toy recipe's 20 sampling steps, 0.2 of them guided: 4, after the first (pure noise, as drawn)
    assert [step["step"] for step in record["steps"]] == [1, 2, 3, 4]


def test_generate_adds_a_guidance_to_a_runs_sampling(flow_run):
    result = fym("generate", "--run", flow_run, "--guide", "ditflow", "--steps", "5", "--name", "again")
    assert result.exit_code == 0, result.output
    assert (flow_run / "samples" / "again.mp4").is_file()
    assert [e["method"] for e in _events(flow_run, "guidance")][-2:] == ["flow", "ditflow"]
    assert fym("generate", "--run", flow_run, "--guide", "bogus").exit_code == 2


def test_the_app_generates_from_a_run_with_a_guidance(flow_run):
    service = AppService(flow_run.parent)
    with pytest.raises(InputError, match="unknown guidance 'bogus'"):
        service.start_generate(flow_run.name, "a green triangle", guidance="bogus")
    before = len(_events(flow_run, "guidance"))
    job = service.start_generate(flow_run.name, "a green triangle", guidance="flow")
    assert service.queue.wait(job, 600) and job.state == DONE, job.message
    assert Path(job.result["result"]).is_file()
    guided = _events(flow_run, "guidance")
    assert len(guided) == before + 1 and guided[-1]["method"] == "flow"
    plain = service.start_generate(flow_run.name, "a green triangle", guidance="none")
    assert service.queue.wait(plain, 600) and plain.state == DONE, plain.message
    assert len(_events(flow_run, "guidance")) == before + 1  # no guidance this time
    assert plain.result["result"] != job.result["result"]  # its own sample, not the guided one overwritten


def test_only_the_main_process_logs_a_guidance(flow_run, monkeypatch):
    """Every process of a launch samples; only the main one writes the sample and logs it, guidance included."""
    from follow_your_motion.transfer import Transfer

    job = Transfer.open(flow_run, "cpu")
    monkeypatch.setattr(type(job.state), "is_main_process", property(lambda state: False))
    before = (flow_run / "log.jsonl").read_text()
    settings = job.cfg.generate.model_copy(update={"steps": 5})
    assert job.generate("a green triangle", settings, "other-process").paths == {}
    assert (flow_run / "log.jsonl").read_text() == before
