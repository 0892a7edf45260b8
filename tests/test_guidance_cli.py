"""`fym guide`, `fym generate --guide` and the app's guided generation end to end on the embedded toy model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from follow_your_motion.app.jobs import DONE
from follow_your_motion.app.service import AppService
from follow_your_motion.cli import app
from follow_your_motion.errors import InputError
from follow_your_motion.run_settings import check_guidance, open_config
from follow_your_motion.toyworld.render import ObjectSpec, SceneSpec, render
from follow_your_motion.video import read_video, write_video


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
    assert (flow_run / "samples" / "result_flow.mp4").is_file()
    assert (flow_run / "samples" / "result_flow_side_by_side.mp4").is_file()
    assert not list(flow_run.glob("*lora*")) and not (flow_run / "heads.json").exists()
    config = yaml.safe_load((flow_run / "config.yaml").read_text())
    assert config["guidance"]["method"] == "flow" and config["generate"]["motion_scale"] == 0.0
    # the content sampled is the target prompt; the reference has no caption (both guidances read it with none)
    assert (config["target_prompt"], config["prompt"]) == ("a blue square", "")
    assert _events(flow_run, "generated")[0]["prompt"] == "a blue square"
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


@pytest.fixture
def unloadable(monkeypatch):
    """Loading the model fails the test: what is refused must be refused before it."""
    from follow_your_motion.transfer import Transfer

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Transfer, "open", load)


@pytest.mark.parametrize(("options", "message"), [
    (["--frames", "5"], "samples at the reference's size (9 frames"),
    (["--width", "48"], "leave generate.frames/height/width unset"),
    (["--image", "first.png"], "runs text-to-video only"),
    (["--steps", "1"], "0.5 of 1 sampling steps guides 0 steps"),  # the toy recipe guides half the steps
])
def test_generate_refuses_a_guidance_it_cannot_run_before_loading_the_model(flow_run, unloadable, tmp_path,
                                                                             options, message):
    cv2.imwrite(str(tmp_path / "first.png"), np.zeros((32, 32, 3), np.uint8))
    options = [str(tmp_path / o) if o.endswith(".png") else o for o in options]
    result = fym("generate", "--run", flow_run, "--guide", "ditflow", *options)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_guidance_is_refused_for_an_image_to_video_model_and_sharded_transformers(flow_run, tmp_path, monkeypatch):
    from tiny_wan import build_tiny_wan_i2v_pipeline

    cfg = open_config(flow_run)
    i2v = cfg.model_copy(update={"model": cfg.model.model_copy(update={
        "source": str(build_tiny_wan_i2v_pipeline(tmp_path / "i2v"))})})
    with pytest.raises(InputError, match="runs text-to-video only"):
        check_guidance(i2v, cfg.generate, flow_run)
    fsdp = {"steps": 10, "distributed": "fsdp"}
    sharded = cfg.model_copy(update={"spatial": cfg.spatial.model_copy(update=fsdp),
                                     "motion": cfg.motion.model_copy(update=fsdp)})
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match="not on ones sharded across processes"):
        check_guidance(sharded, cfg.generate, flow_run)
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_guidance(sharded, cfg.generate, flow_run)  # one process: whole transformers


def test_guidance_follows_the_runs_copy_of_a_reference_that_is_gone(reference, tmp_path):
    moved = tmp_path / "ref.mp4"
    shutil.copy(reference, moved)
    run = tmp_path / "run"
    assert fym("guide", moved, "--prompt", "a blue square", "--method", "flow", "--out", run).exit_code == 0
    moved.unlink()
    result = fym("generate", "--run", run, "--steps", "5", "--name", "again")
    assert result.exit_code == 0, result.output
    assert [step["step"] for step in _events(run, "guidance")[-1]["steps"]] == [1]  # round(0.2 * 5)
    (run / "reference.mp4").unlink()
    result = fym("generate", "--run", run, "--steps", "5")
    assert result.exit_code == 2 and "is gone and" in result.output


def test_guides_by_two_methods_into_one_run_keep_both_samples(reference, tmp_path):
    quick = tmp_path / "quick.yaml"
    quick.write_text("generate: {steps: 4}\n")
    run = tmp_path / "run"
    for method in ("flow", "ditflow"):
        result = fym("guide", reference, "--prompt", "a blue square", "--method", method, "--out", run,
                     "--config", quick)
        assert result.exit_code == 0, result.output
    assert [e["video"] for e in _events(run, "generated")] == ["result_flow.mp4", "result_ditflow.mp4"]
    flow, ditflow = (read_video(run / "samples" / f"result_{m}.mp4").frames for m in ("flow", "ditflow"))
    assert not np.array_equal(flow, ditflow)  # the first method's sample is still there, not overwritten


def test_a_transfer_to_guide_on_sharded_transformers_is_refused_before_loading(reference, tmp_path, monkeypatch):
    from follow_your_motion.transfer import Transfer

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Transfer, "__init__", load)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it for each of two processes
    settings = tmp_path / "fsdp.yaml"
    settings.write_text("guidance: {method: flow}\nspatial: {distributed: fsdp}\nmotion: {distributed: fsdp}\n")
    result = fym("transfer", reference, "--prompt", "a red circle", "--out", tmp_path / "run", "--config", settings)
    assert result.exit_code == 2, result.output
    assert "not on ones sharded across processes (distributed: fsdp)" in result.output
