"""`fym app` without a browser: the queue, cancel and resume, upload safety, settings, runs, metrics, the server.

Tuning runs use the embedded toy model with a few steps per stage (seconds on a CPU)."""

from __future__ import annotations

import json
import re
import shlex
import socket
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import get_args

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from follow_your_motion.app.jobs import CANCELLED, DONE, FAILED, INTERNAL_ERROR, Job, JobQueue
from follow_your_motion.app.runs_index import list_runs, resolve_run
from follow_your_motion.app.scoring import metrics_markdown, result_metrics
from follow_your_motion.app.service import AppService
from follow_your_motion.app.settings import (
    HEAD_RULES,
    HEAD_THRESHOLDS,
    TOY_MODEL,
    Advanced,
    TransferRequest,
    changed_fields,
    image_to_video,
    preset_fields,
    resolve_request,
)
from follow_your_motion.app.uploads import stage_reference
from follow_your_motion.cli import app as cli
from follow_your_motion.config import HeadSettings
from follow_your_motion.errors import InputError
from follow_your_motion.precedence import resolve_config
from follow_your_motion.toyworld.examples import EXAMPLES
from follow_your_motion.toyworld.render import COLOURS, render
from follow_your_motion.video import read_video, write_video

TINY = {"spatial": {"steps": 2}, "motion": {"steps": 4}, "generate": {"steps": 1}}
RUN_NAME = re.compile(r"\d{8}-\d{6}-[0-9a-f]{12}")
WAIT_S = 120


def upload(service: AppService, name: str = "x.mp4", data: bytes | None = None) -> Path:
    """A file as the web layer stores an upload: in its own folder of the upload cache (inside the runs folder)."""
    path = service.upload_root / uuid.uuid4().hex / name
    path.parent.mkdir(parents=True)
    path.write_bytes(data if data is not None else service.examples()["single-orbit-cw"][0].read_bytes())
    return path


def request(video: Path | str | None, **changes) -> TransferRequest:
    fields = {"reference": str(video) if video else None, "caption": "a red circle", "target_prompt": "a blue square",
              "extra": TINY}
    return TransferRequest(**(fields | changes))


def finish(service: AppService, job: Job) -> Job:
    assert service.queue.wait(job, WAIT_S), f"{job.id} still {job.state} after {WAIT_S} s"
    return job


def hold(queue: JobQueue) -> threading.Event:
    """Occupy the worker until the returned event is set, so jobs submitted meanwhile wait in line."""
    release, started = threading.Event(), threading.Event()

    def work(job: Job) -> dict:
        started.set()
        release.wait(WAIT_S)
        return {}

    queue.submit(Job(work, kind="hold"))
    assert started.wait(WAIT_S)
    return release


def cancel_at(job: Job, stage: str, step: int) -> None:
    job.listeners.append(lambda j: j.cancel_requested.set() if (j.progress.stage, j.progress.step) == (stage, step)
                         else None)


def loras(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_file(run_dir / f"{name}_lora.safetensors") for name in ("spatial", "motion")}


def events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[AppService, Job]:
    """One uninterrupted tiny transfer through the app."""
    service = AppService(tmp_path_factory.mktemp("app") / "runs")
    job = finish(service, service.start_transfer(request(upload(service))))
    assert job.state == DONE, job.message
    return service, job


# -- the queue --------------------------------------------------------------------------------------------------
def test_one_job_at_a_time_with_queue_positions_and_cancel_before_start():
    queue = JobQueue()
    running, peak, lock = [], [], threading.Lock()
    gates = [threading.Event() for _ in range(3)]

    def work_for(i: int):
        def work(job: Job) -> dict:
            with lock:
                running.append(i)
                peak.append(len(running))
            gates[i].wait(WAIT_S)
            with lock:
                running.remove(i)
            return {"i": i}
        return work

    jobs = [queue.submit(Job(work_for(i))) for i in range(3)]
    deadline = time.monotonic() + WAIT_S
    while jobs[0].state != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [queue.position(j) for j in jobs] == [0, 1, 2]
    assert queue.cancel(jobs[1].id) and jobs[1].state == CANCELLED  # leaves the line at once
    assert [queue.position(j) for j in jobs] == [0, 0, 1]
    gates[0].set()
    assert queue.wait(jobs[0], WAIT_S) and jobs[0].result == {"i": 0}
    gates[2].set()
    assert queue.wait(jobs[2], WAIT_S) and jobs[2].state == DONE
    assert max(peak) == 1 and sorted(j.id for j in jobs) == ["job-1", "job-2", "job-3"]
    assert not queue.cancel(jobs[2].id)  # finished jobs cannot be cancelled


def test_bad_input_is_a_message_and_a_bug_is_logged_not_shown(caplog):
    queue = JobQueue()

    def bad_input(job: Job) -> dict:
        raise InputError("ref.mp4: not a readable video")

    def bug(job: Job) -> dict:
        raise KeyError("oops")

    refused, broken = queue.submit(Job(bad_input)), queue.submit(Job(bug))
    assert queue.wait(refused, WAIT_S) and queue.wait(broken, WAIT_S)
    assert (refused.state, refused.message) == (FAILED, "ref.mp4: not a readable video")
    assert (broken.state, broken.message) == (FAILED, INTERNAL_ERROR)
    assert "Traceback" not in broken.message
    assert any(r.exc_info and r.exc_info[0] is KeyError for r in caplog.records)  # the traceback went to the log


def test_time_left_covers_the_stages_still_to_come():
    now = [100.0]
    job = Job(lambda j: {}, clock=lambda: now[0])
    job.progress.plan = {"spatial": 4, "motion": 10}
    assert job.report("spatial", 1, 4, {"fm": 0.5, "motion": 0.0}) is False
    assert job.progress.eta_s is None  # one step: no rate yet
    now[0] = 102.0
    job.report("spatial", 3, 4, {"fm": 0.25, "motion": 0.0})
    assert job.progress.eta_s == pytest.approx(1.0 * (1 + 10))  # 1 s/step, 1 spatial + 10 motion steps left
    now[0] = 110.0
    job.report("motion", 2, 10, {"fm": 0.1, "motion": 0.2})  # a new stage: its own rate
    now[0] = 114.0
    job.cancel_requested.set()
    assert job.report("motion", 6, 10, {"fm": 0.1, "motion": 0.1}) is True  # cancel: stop at this step
    assert job.progress.eta_s == pytest.approx(4.0)
    assert [loss for _, _, loss in job.progress.losses] == pytest.approx([0.5, 0.25, 0.3, 0.2])


# -- cancel and resume ------------------------------------------------------------------------------------------
def test_cancel_leaves_checkpoints_that_the_app_and_fym_transfer_resume_bit_for_bit(finished, tmp_path):
    uninterrupted = finished[1].run_dir
    service = AppService(tmp_path / "runs")
    video = upload(service)
    release = hold(service.queue)
    first = service.start_transfer(request(video))
    assert service.queue.position(first) == 1 and "position 1" in service.view(first.id).text
    cancel_at(first, "spatial", 1)
    release.set()
    finish(service, first)
    run = first.run_dir
    assert first.state == CANCELLED, first.message
    assert (run / "checkpoints/spatial/step-0000001/COMPLETE").is_file()
    assert not (run / "spatial_lora.safetensors").exists() and not (run / "checkpoints/motion").exists()
    assert list_runs(service.runs_root)[0].status == "stopped (resumable)"

    release = hold(service.queue)
    second = service.start_transfer(request(video))  # the same inputs find the same run directory
    assert second.run_dir == run
    cancel_at(second, "motion", 2)
    release.set()
    finish(service, second)
    assert second.state == CANCELLED and (run / "checkpoints/motion/step-0000002/COMPLETE").is_file()
    assert [e["step"] for e in events(run, "resume")] == [1]  # spatial resumed at step 1

    command = second.message.split("or: ", 1)[1]
    assert command.startswith("fym transfer ")
    result = CliRunner().invoke(cli, shlex.split(command)[1:])
    assert result.exit_code == 0, result.output
    assert [(e["stage"], e["step"]) for e in events(run, "resume")] == [("spatial", 1), ("motion", 2)]
    resumed, straight = loras(run), loras(uninterrupted)
    for name in ("spatial", "motion"):
        assert resumed[name].keys() == straight[name].keys()
        assert all(torch.equal(resumed[name][k], straight[name][k]) for k in straight[name])


# -- uploads and validation -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["x.mp4", "..mp4", "a b;rm -rf ~.MP4", ".hidden", "noext"])
def test_upload_names_never_choose_a_path(tmp_path, name):
    runs = tmp_path / "runs"
    source = tmp_path / "elsewhere" / name
    source.parent.mkdir()
    source.write_bytes(read_bytes_of_example(tmp_path))
    staged = stage_reference(source, runs, "0123456789ab")
    assert RUN_NAME.fullmatch(staged.run_dir.name) and staged.run_dir.parent == runs
    assert staged.video.name == "input.mp4" and staged.fresh
    assert files_under(runs) == {staged.video}


def read_bytes_of_example(tmp_path: Path) -> bytes:
    from follow_your_motion.toyworld.examples import write_examples

    return write_examples(tmp_path / "examples")[0].read_bytes()


def test_paths_outside_the_app_folders_are_refused_and_nothing_is_written(tmp_path):
    service = AppService(tmp_path / "runs")
    good = upload(service)
    outside = tmp_path / "x.mp4"
    outside.write_bytes(good.read_bytes())
    (service.runs_root / "x.mp4").write_bytes(good.read_bytes())  # inside runs/, but not an upload
    before = files_under(tmp_path)
    for hostile in (f"{good.parent}/../../x.mp4", f"{service.upload_root}/../../x.mp4", str(outside), "/etc/hostname"):
        with pytest.raises(InputError, match="upload"):
            service.start_transfer(request(hostile))
    assert files_under(tmp_path) == before
    release = hold(service.queue)
    job = service.start_transfer(request(f"{good.parent}/sub/../{good.name}"))  # `..` that stays inside is fine
    assert job.run_dir.parent == service.runs_root and RUN_NAME.fullmatch(job.run_dir.name)
    assert (job.run_dir / "input.mp4").read_bytes() == good.read_bytes()
    assert service.cancel(job.id) and job.state == CANCELLED
    assert not job.run_dir.exists()  # cancelled while waiting: its staged copy goes too
    release.set()


def test_a_refused_upload_leaves_no_file_behind(tmp_path):
    service = AppService(tmp_path / "runs")
    bad = upload(service, "x.mp4", b"this is not a video")  # where the web layer puts an upload named ../../x.mp4
    with pytest.raises(InputError, match=r"^x\.mp4: not a readable video"):
        service.start_transfer(request(bad))
    assert not bad.exists() and not bad.parent.exists()
    assert not any(RUN_NAME.fullmatch(p.name) for p in service.runs_root.iterdir())


def test_a_video_the_model_refuses_is_named_as_uploaded_and_leaves_nothing(tmp_path):
    service = AppService(tmp_path / "runs")
    one_frame = tmp_path / "one.mp4"
    write_video(one_frame, np.zeros((1, 32, 32, 3), np.uint8), 8.0)
    short = upload(service, "x.mp4", one_frame.read_bytes())
    job = finish(service, service.start_transfer(request(short)))
    assert job.state == FAILED and job.message.startswith("x.mp4: clip has 1 frames"), job.message
    assert not short.exists() and not job.run_dir.exists()


def test_invalid_settings_give_the_cli_message_and_keep_the_upload(tmp_path):
    service = AppService(tmp_path / "runs")
    video = upload(service)
    with pytest.raises(InputError) as caught:
        service.start_transfer(request(video, advanced=Advanced(spatial_steps=-1)))
    cli_run = CliRunner().invoke(cli, ["transfer", str(video), "-p", "a red circle", "-o", str(tmp_path / "cli"),
                                       "--spatial-steps", "-1"])
    assert cli_run.exit_code == 2 and f"error: {caught.value}" in cli_run.output
    assert str(caught.value).startswith("invalid settings: spatial.steps")
    assert video.is_file() and list_runs(service.runs_root) == []
    for bad, message in ((request(video, caption=" "), "no prompt given"), (request(None), "no reference video"),
                         (request(video, preset="slow"), "unknown preset 'slow'"),
                         (request(video, image=str(video)), "image-to-video")):
        with pytest.raises(InputError, match=message):
            service.start_transfer(bad)


def test_a_prompt_the_toy_model_cannot_read_fails_in_the_page_and_removes_its_run(tmp_path):
    service = AppService(tmp_path / "runs")
    job = finish(service, service.start_transfer(request(upload(service), target_prompt="a blue dragon")))
    assert job.state == FAILED and job.message.startswith("the toy model does not know 'dragon'")
    assert "**Error:** the toy model does not know" in service.view(job.id).text
    assert not job.run_dir.exists() and list_runs(service.runs_root) == []


# -- settings and page ------------------------------------------------------------------------------------------
def test_presets_and_advanced_fields_follow_the_one_precedence():
    fast = resolve_request(TransferRequest(None, "a red circle", "a blue square"))
    paper = resolve_request(TransferRequest(None, "a red circle", "", preset="paper"))
    recipe = resolve_config({"prompt": "a red circle"})
    assert (fast.spatial.steps, fast.motion.steps) == (20, 60)
    assert (paper.spatial.steps, paper.motion.steps) == (recipe.spatial.steps, recipe.motion.steps)
    assert fast.model.source is None and paper.target_prompt is None
    chosen = resolve_request(TransferRequest(None, "a red circle", "a blue square", advanced=Advanced(
        spatial_steps=3, motion_steps=7, rank=4, keep_frames=2, rope="scaled", head_rule="release", head_alpha=2.0,
        motion_scale=0.5, spatial_scale=0.25, seed=9)))
    assert (chosen.spatial.steps, chosen.motion.steps, chosen.spatial.rank, chosen.motion.rank) == (3, 7, 4, 4)
    assert (chosen.motion.keep_frames, chosen.motion.rope, chosen.heads.rule) == (2, "scaled", "release")
    assert (chosen.heads.release_ratio, chosen.heads.alpha) == (2.0, HeadSettings().alpha)  # the rule's threshold
    assert (chosen.generate.motion_scale, chosen.generate.spatial_scale, chosen.generate.seed) == (0.5, 0.25, 9)
    assert not image_to_video("") and not image_to_video("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
    shown = dict(rope="index", head_rule="paper", head_alpha=1.25, motion_scale=1.0, spatial_scale=0.0, seed=0)
    assert preset_fields(TOY_MODEL, "fast") == Advanced(spatial_steps=20, motion_steps=60, rank=8, keep_frames=5,
                                                        **shown)
    assert preset_fields("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "paper") == Advanced(
        spatial_steps=3000, motion_steps=2000, rank=128, keep_frames=5, **shown)
    dense = resolve_request(TransferRequest(None, "a red circle", "", advanced=Advanced(keep_frames=0)))
    assert dense.motion.keep_frames is None  # the field's 0 = every latent frame


@pytest.mark.parametrize(("page_rule", "file_rule", "threshold"), [
    ("paper", None, "alpha"), ("release", None, "release_ratio"), ("relative", None, "relative_alpha"),
    (None, "relative", "relative_alpha"), (None, None, "alpha")])
def test_head_alpha_sets_the_threshold_of_the_rule_that_applies(page_rule, file_rule, threshold):
    """Every rule of the config is offered, and the Head alpha field sets the chosen rule's own threshold (the page's
    rule, else a settings file's, else the default), never one that rule ignores."""
    assert set(HEAD_RULES) == set(get_args(HeadSettings.model_fields["rule"].annotation)) == set(HEAD_THRESHOLDS)
    extra = {"heads": {"rule": file_rule}} if file_rule else {}
    cfg = resolve_request(TransferRequest(None, "a red circle", "", extra=extra,
                                          advanced=Advanced(head_rule=page_rule, head_alpha=0.75)))
    assert cfg.heads.rule == (page_rule or file_rule or "paper")
    untouched = {name for name in HEAD_THRESHOLDS.values() if name != threshold}
    assert getattr(cfg.heads, threshold) == 0.75
    assert all(getattr(cfg.heads, name) == getattr(HeadSettings(), name) for name in untouched)


def test_the_page_sends_only_what_the_user_changed_so_settings_files_and_recipes_apply():
    """A settings section below the page (a YAML's, a recipe's) sets heads.alpha, heads.rule, motion.rope and the
    generation settings unless the user changed that field on the page: the page's unchanged fields are those
    `preset_fields` showed, and `changed_fields` leaves them out."""
    below = {"heads": {"alpha": 2.0, "rule": "release"}, "motion": {"rope": "scaled"},
             "generate": {"motion_scale": 0.7, "spatial_scale": 0.2, "seed": 5}}
    shown = preset_fields(TOY_MODEL, "fast")
    untouched = changed_fields(shown, shown)
    assert untouched == Advanced()
    cfg = resolve_request(TransferRequest(None, "a red circle", "", advanced=untouched, extra=below))
    assert (cfg.heads.alpha, cfg.heads.rule, cfg.motion.rope) == (2.0, "release", "scaled")
    assert (cfg.generate.motion_scale, cfg.generate.spatial_scale, cfg.generate.seed) == (0.7, 0.2, 5)
    assert cfg.motion.steps == 60 and cfg.model.device == resolve_config({}).model.device
    edited = changed_fields(shown, replace(shown, head_alpha=3.0, seed=9, device="cpu"))
    assert edited == Advanced(head_alpha=3.0, seed=9, device="cpu")
    cfg = resolve_request(TransferRequest(None, "a red circle", "", advanced=edited, extra=below))
    assert (cfg.heads.release_ratio, cfg.heads.rule, cfg.generate.seed, cfg.generate.motion_scale) == (
        3.0, "release", 9, 0.7)  # the field is the threshold of the rule the file chose
    assert cfg.heads.alpha == 2.0


def test_generate_fields_follow_the_one_precedence(tmp_path):
    """A Generate job's settings: recipe < the run's config.yaml < the fields given (as `fym generate`)."""
    from follow_your_motion.app.work import generation_settings

    data = resolve_config({"prompt": "a red circle"}).model_dump(mode="json")
    data["generate"] = {"guidance": 2.5, "seed": 1}  # a config.yaml without the toy recipe's 20 steps
    (tmp_path / "config.yaml").write_text(json.dumps(data))
    settings = generation_settings(tmp_path, 4, None, 0.5)
    assert (settings.guidance, settings.seed, settings.spatial_scale, settings.motion_scale, settings.steps) == (
        2.5, 4, 0.5, 1.0, 20)
    with pytest.raises(InputError, match="invalid settings: generate.seed"):
        generation_settings(tmp_path, "many", None, None)


def test_the_transfer_button_sends_the_fields_the_user_changed(tmp_path, monkeypatch):
    pytest.importorskip("gradio", reason="gradio not installed (pip install -e .[app] or .[dev])")
    from follow_your_motion.app.ui import build_ui

    service = AppService(tmp_path / "runs")
    sent = []

    def record(request):
        sent.append(request.advanced)
        raise InputError("recorded")

    monkeypatch.setattr(service, "start_transfer", record)
    page = build_ui(service)
    [start] = [f.fn for f in page.fns.values() if f.name == "start" and len(f.inputs) == 17]
    shown = preset_fields(TOY_MODEL, "fast")
    values = [float(v) if isinstance(v, int) else v for v in vars(shown).values()][:10]  # as Gradio sends them
    start(None, "a red circle", "", None, TOY_MODEL, "fast", *values, "cpu")
    values[6] = 2.0  # Head alpha
    start(None, "a red circle", "", None, TOY_MODEL, "fast", *values, "cpu")
    assert sent == [Advanced(device="cpu"), Advanced(head_alpha=2.0, device="cpu")]


def test_page_has_the_labelled_inputs_and_errors_never_show_a_traceback(tmp_path, caplog):
    gr = pytest.importorskip("gradio", reason="gradio not installed (pip install -e .[app] or .[dev])")
    from follow_your_motion.app.ui import build_ui, page_error, sharing_note

    page = build_ui(AppService(tmp_path / "runs"))
    blocks = list(page.blocks.values())
    labels = {b.label: b for b in blocks if getattr(b, "label", None)}
    for label in ("Reference video", "Bundled example", "Reference caption", "Target prompt", "Image", "Model",
                  "Preset", "Advanced", "Spatial LoRA steps", "Motion LoRA steps", "LoRA rank", "Sparse K",
                  "RoPE mode", "Head rule", "Head alpha", "Motion LoRA scale", "Spatial LoRA scale", "Seed",
                  "Reference", "Result", "Head types", "Motion LoRA (diffusers)", "Motion LoRA (ComfyUI)",
                  "Run config", "Runs", "Run", "New target prompt"):
        assert label in labels, label
    assert labels["Image"].visible is False  # no image-to-video model yet
    assert labels["Preset"].value == "fast" and labels["Model"].value.startswith("toy")
    shown = [labels[k].value for k in ("Spatial LoRA steps", "Motion LoRA steps", "LoRA rank", "Sparse K")]
    assert shown == [20, 60, 8, 5]  # the values the fast preset runs (a number field cannot show "unset")
    assert {b.value for b in blocks if type(b) is gr.Button} >= {"Transfer", "Cancel", "Generate", "Refresh"}
    assert "only this machine" in sharing_note("127.0.0.1") and "reach 0.0.0.0" in sharing_note("0.0.0.0")
    assert page_error(InputError("ref.mp4: too few frames")) == "**Error:** ref.mp4: too few frames"
    assert page_error(ZeroDivisionError("bug")) == f"**Error:** {INTERNAL_ERROR}"
    assert any(r.exc_info and r.exc_info[0] is ZeroDivisionError for r in caplog.records)


# -- runs, regeneration, metrics --------------------------------------------------------------------------------
def test_runs_list_and_regenerate_from_the_saved_lora_without_tuning(finished):
    service, job = finished
    run = job.run_dir
    [listed] = [r for r in list_runs(service.runs_root) if r.name == run.name]
    assert (listed.caption, listed.target_prompt, listed.status) == ("a red circle", "a blue square", "tuned")
    assert listed.reference == run / "reference.mp4" and listed.result is not None
    weights = {p: p.read_bytes() for p in run.glob("*_lora.safetensors")}
    steps = len(events(run, "step"))

    again = finish(service, service.start_generate(run.name, "a green triangle", seed=3, motion_scale=0.5))
    assert again.state == DONE, again.message
    result = Path(again.result["result"])
    assert result.parent == run / "samples" and result.name.startswith("app-")
    assert read_video(result).frames.shape == (9, 32, 32, 3)
    assert again.result["metrics"]["target_colour"] == "green"
    assert len(events(run, "step")) == steps and not events(run, "resume")  # no tuning
    assert {p: p.read_bytes() for p in run.glob("*_lora.safetensors")} == weights
    assert set(again.result["downloads"]) == {"Motion LoRA (diffusers)", "Motion LoRA (ComfyUI)", "Run config"}
    assert all(Path(p).is_file() and service.runs_root in Path(p).parents for p in again.result["downloads"].values())
    newest = [r for r in list_runs(service.runs_root) if r.name == run.name][0]
    assert (newest.result, newest.result_prompt) == (result, "a green triangle")  # newest sample first

    for name in ("../x", ".gradio", ".examples", str(run), "missing-run", "", None):
        with pytest.raises(InputError):
            resolve_run(service.runs_root, name)
    bad = finish(service, service.start_generate(run.name, "a blue unicorn"))
    assert bad.state == FAILED and bad.message.startswith("the toy model does not know 'unicorn'")
    assert run.is_dir() and {p: p.read_bytes() for p in run.glob("*_lora.safetensors")} == weights


def recoloured(frames: np.ndarray, old: str, new: str) -> np.ndarray:
    out = frames.copy()
    out[(frames == COLOURS[old]).all(-1)] = COLOURS[new]
    return out


def test_metrics_shapesworld_ground_truth_and_tracker_otherwise():
    cfg = resolve_config({"prompt": "a red circle"})
    reference = render(EXAMPLES["single-orbit-cw"]).frames  # exact colours (no video compression)
    exact = result_metrics(cfg, reference, recoloured(reference, "red", "blue"), "a blue square")
    assert exact["kind"] == "shapesworld" and exact["centred_error"] == 0.0
    assert exact["displacement_cosine"] == pytest.approx(1.0) and exact["reference_colour_leaked"] is False
    assert exact["target_found_frames"] == 9
    leaked = result_metrics(cfg, reference, reference, "a blue square")
    assert leaked["reference_colour_leaked"] is True and leaked["centred_error"] is None  # no blue object: n/a
    assert "| Trajectory error | n/a |" in metrics_markdown(leaked)
    other = cfg.model_copy(update={"model": cfg.model.model_copy(update={"source": "some/wan-model"})})
    tracked = result_metrics(other, reference, reference, "a blue square")
    assert tracked["kind"] == "tracker" and tracked["motion_fidelity_det"] == pytest.approx(1.0)
    assert "Motion fidelity (DeT)" in metrics_markdown(tracked)


# -- the server -------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_keeps_uploads_and_served_files_inside_the_runs_folder(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gradio", reason="gradio not installed (pip install -e .[app] or .[dev])")
    from follow_your_motion.app import serve

    for var in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE", "GRADIO_ANALYTICS_ENABLED"):
        monkeypatch.setenv(var, "restored after the test")
    runs, port = tmp_path / "runs", free_port()
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web")
    page = serve(runs, "127.0.0.1", port, block=False)
    try:
        assert "Sharing is off" in capsys.readouterr().out and page.share_url is None
        base = f"http://127.0.0.1:{port}/gradio_api"
        video = (runs / ".examples" / "single-orbit-cw.mp4").read_bytes()
        sent = httpx.post(f"{base}/upload", files={"files": ("../../x.mp4", video, "video/mp4")}, timeout=30)
        [stored] = map(Path, sent.json())
        assert stored.name == "x.mp4" and (runs / ".gradio") in stored.parents
        deadline = time.monotonic() + 10
        while not stored.is_file() and time.monotonic() < deadline:  # moved into the cache in the background
            time.sleep(0.05)
        assert stored.read_bytes() == video
        assert [p for p in tmp_path.rglob("x.mp4") if runs not in p.parents] == []
        assert httpx.get(f"{base}/file={stored}", timeout=30).content == video
        assert httpx.get(f"{base}/file={secret}", timeout=30).status_code == 403
        assert httpx.get(f"{base}/file={runs}/../secret.txt", timeout=30).status_code == 403
    finally:
        page.close()


def test_fym_app_passes_its_options_to_serve(monkeypatch, tmp_path):
    import follow_your_motion.app as app_package

    calls = []
    monkeypatch.setattr(app_package, "serve", lambda *args: calls.append(args))
    assert CliRunner().invoke(cli, ["app"]).exit_code == 0
    given = CliRunner().invoke(cli, ["app", "--runs", str(tmp_path), "--host", "0.0.0.0", "--port", "8123"])
    assert given.exit_code == 0, given.output
    assert calls == [(Path("runs"), "127.0.0.1", 7860), (tmp_path, "0.0.0.0", 8123)]
