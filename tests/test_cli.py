"""`fym` end to end on the tiny Wan, in-process through typer's CliRunner, exactly as a user types it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_config
from safetensors.torch import load_file
from typer.testing import CliRunner

from follow_your_motion.cli import app
from follow_your_motion.precedence import resolve_config
from follow_your_motion.transfer import Transfer
from follow_your_motion.video import read_video, write_video

PROMPT = "a robot walks"
NUM_LAYERS, NUM_HEADS = 2, 4  # tiny_wan.build_tiny_wan_pipeline
CONFIG = tiny_config(4)
RUN_FILES = (
    "config.yaml", "heads.json", "heads.png", "spatial_lora.safetensors", "motion_lora.safetensors",
    "log.jsonl", "samples/result.mp4", "samples/result_side_by_side.mp4", "samples/result_side_by_side.gif",
)
GAP = 4  # video.side_by_side's default gap between reference and result


def moving_square(frames: int, size: int = 32) -> np.ndarray:
    """A white 8x8 square moving right over black, (T, H, W, 3) uint8."""
    video = np.zeros((frames, size, size, 3), np.uint8)
    for t in range(frames):
        x = 2 + (size - 12) * t // max(frames - 1, 1)
        video[t, 12:20, x : x + 8] = 255
    return video


def fym(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(*args: object):
    result = fym(*args)
    assert result.exit_code == 0, f"fym {' '.join(map(str, args))} failed:\n{result.output}\n{result.exception!r}"
    return result


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def steps(run: Path, stage: str) -> list[int]:
    return [e["step"] for e in events(run) if e["event"] == "step" and e["stage"] == stage]


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Every file and folder under `root` (hidden ones too): content hash, size and mtime."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel.startswith(skip):
                continue
            if path.is_file():
                stat = path.stat()
                out[rel] = (hashlib.sha256(path.read_bytes()).hexdigest(), stat.st_size, stat.st_mtime_ns)
            else:
                out[rel] = ("dir",)
    return out


def tensors_equal(a: Path, b: Path) -> None:
    sa, sb = load_file(str(a)), load_file(str(b))
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def result_frames(run: Path, name: str) -> np.ndarray:
    """The frames of samples/<name>.mp4 (x264 runs without mbtree, so its output is a function of its input:
    `test_generate_mp4_is_deterministic`)."""
    return read_video(run / "samples" / f"{name}.mp4").frames


@pytest.fixture(scope="module")
def inputs(tiny_wan_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-inputs")
    (root / "config.yaml").write_text(CONFIG)
    return {
        "root": root,
        "model": tiny_wan_dir,
        "config": root / "config.yaml",
        "ref": write_video(root / "ref.mp4", moving_square(9), 8),
    }


def transfer_args(inputs, out: Path, **override) -> list:
    return ["transfer", override.get("ref", inputs["ref"]), "-p", PROMPT, "-m", override.get("model", inputs["model"]),
            "-o", out, "-c", override.get("config", inputs["config"])]


@pytest.fixture(scope="module")
def finished(inputs, tmp_path_factory) -> Path:
    """A run directory after one uninterrupted `fym transfer`."""
    run = tmp_path_factory.mktemp("cli-finished") / "run"
    result = ok(*transfer_args(inputs, run))
    for key in ("video", "side_by_side", "side_by_side_gif"):
        assert f"{key}: " in result.stdout
    shutil.copy(run / "samples" / "result.mp4", run.parent / "first_result.mp4")
    return run


@pytest.fixture(scope="module")
def partial_template(inputs, tmp_path_factory) -> Path:
    """A run whose spatial stage is done and whose motion stage stopped (on purpose) after step 2 of 4."""
    run = tmp_path_factory.mktemp("cli-partial") / "run"
    cfg = resolve_config({"reference": str(inputs["ref"]), "prompt": PROMPT, "model": {"source": str(inputs["model"])}},
                         inputs["config"])
    assert Transfer(cfg, run).tune_motion(stop_after=2) is None
    assert (run / "spatial_lora.safetensors").is_file()
    assert not (run / "motion_lora.safetensors").exists()
    assert sorted(p.name for p in (run / "checkpoints" / "motion").iterdir()) == ["step-0000002"]
    return run


@pytest.fixture
def partial(partial_template, tmp_path) -> Path:
    """A private copy of `partial_template` (same reference and config, so its caches stay valid)."""
    return Path(shutil.copytree(partial_template, tmp_path / "run"))


# -- 1. end to end --------------------------------------------------------------------------------------
def test_transfer_generate_export(finished, inputs, tmp_path):
    run = finished
    for name in RUN_FILES:
        assert (run / name).is_file(), name

    heads = json.loads((run / "heads.json").read_text())
    assert [layer["layer"] for layer in heads["layers"]] == list(range(NUM_LAYERS))
    for layer in heads["layers"]:
        assert layer["counts"]["spatial"] + layer["counts"]["temporal"] == NUM_HEADS
        assert len(layer["heads"]) == NUM_HEADS
        temporal = sum(h["type"] == "temporal" for h in layer["heads"])
        assert layer["counts"]["temporal"] == temporal
    assert heads["total"]["spatial"] + heads["total"]["temporal"] == NUM_LAYERS * NUM_HEADS
    assert heads["total"]["temporal"] >= 1  # otherwise there would be no motion LoRA to train

    log = events(run)  # every line is JSON
    assert steps(run, "spatial") == [1, 2, 3, 4]
    assert steps(run, "motion") == [1, 2, 3, 4]
    assert [e["adapter"] for e in log if e["event"] == "saved"] == ["spatial", "motion"]
    assert not any(e["event"] == "resume" for e in log)

    clip = read_video(run / "samples" / "result.mp4")
    assert clip.frames.shape == (9, 32, 32, 3)
    assert read_video(run / "samples" / "result_side_by_side.mp4").frames.shape == (9, 32, 64 + GAP, 3)
    assert read_video(run / "samples" / "result_side_by_side.gif").frames.shape == (9, 32, 64 + GAP, 3)

    result = ok("generate", "--run", run, "-p", "a robot walks", "--name", "robot")
    assert f"video: {run / 'samples' / 'robot.mp4'}" in result.stdout
    assert read_video(run / "samples" / "robot.mp4").frames.shape == (9, 32, 32, 3)
    assert (run / "samples" / "robot_side_by_side.gif").is_file()
    generated = [e for e in events(run) if e["event"] == "generated"]
    assert generated[-1]["prompt"] == "a robot walks" and generated[-1]["video"] == "robot.mp4"

    result = ok("export", "--run", run, "-f", "diffusers")
    folder = run / "export" / "diffusers"
    written = [folder / f"{adapter}_lora_diffusers.safetensors" for adapter in ("spatial", "motion")]
    assert result.stdout.split() == [str(p) for p in written]
    for path in written:
        keys = load_file(str(path)).keys()
        assert keys and all(k.startswith("transformer.") for k in keys), sorted(keys)[:3]

    comfy = tmp_path / "comfy"
    result = ok("export", "--run", run, "-f", "comfyui", "-o", comfy)
    written = [comfy / f"{adapter}_lora_comfyui.safetensors" for adapter in ("spatial", "motion")]
    assert result.stdout.split() == [str(p) for p in written]
    for path in written:
        state = load_file(str(path))
        assert state and all(k.startswith("diffusion_model.blocks.") for k in state), sorted(state)[:3]
        assert any(k.endswith(".alpha") for k in state)
    assert not (run / "export" / "comfyui").exists()


def test_export_is_lossless(finished, tmp_path):
    """Both formats hold exactly the tensors the run trained (same values, same dtype), only renamed."""
    ok("export", "--run", finished, "-f", "diffusers", "-o", tmp_path / "diffusers")
    ok("export", "--run", finished, "-f", "comfyui", "-o", tmp_path / "comfyui")
    roles = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o"}
    for adapter in ("spatial", "motion"):
        trained = load_file(str(finished / f"{adapter}_lora.safetensors"))
        tensors_equal(tmp_path / "diffusers" / f"{adapter}_lora_diffusers.safetensors",
                      finished / f"{adapter}_lora.safetensors")
        comfy = load_file(str(tmp_path / "comfyui" / f"{adapter}_lora_comfyui.safetensors"))
        expected = {}
        for key, tensor in trained.items():  # transformer.blocks.N.attn1.<proj>.lora_X.weight
            _, _, layer, _, rest = key.split(".", 4)
            proj, which = rest.rsplit(".", 2)[0], rest.rsplit(".", 2)[1]
            module = f"diffusion_model.blocks.{layer}.self_attn.{roles[proj]}"
            expected[f"{module}.{which}.weight"] = tensor
            expected[f"{module}.alpha"] = torch.tensor(4.0)  # alpha defaults to the rank
        assert comfy.keys() == expected.keys()
        for key, tensor in expected.items():
            assert comfy[key].dtype == tensor.dtype and torch.equal(comfy[key], tensor), key


def test_generate_reproduces_transfer_result(finished):
    """The run's own prompt and default settings: `fym generate` samples what `fym transfer` sampled."""
    ok("generate", "--run", finished, "--name", "again")
    first = read_video(finished.parent / "first_result.mp4").frames
    assert np.array_equal(result_frames(finished, "again"), first)


# -- 2. a finished run is reused ------------------------------------------------------------------------
def test_rerun_recomputes_nothing(finished, inputs):
    before = snapshot(finished, skip=("samples", "log.jsonl", "export"))
    old_events = len(events(finished))
    ok(*transfer_args(inputs, finished))
    assert snapshot(finished, skip=("samples", "log.jsonl", "export")) == before
    new = events(finished)[old_events:]
    assert [e["event"] for e in new] == ["generated"]  # no step, heads, saved or resume events


# -- 3. kill + resume through the CLI -------------------------------------------------------------------
def test_cli_resumes_interrupted_motion_stage(partial, finished, inputs):
    run = partial
    args = transfer_args(inputs, run)[1:]
    result = ok("tune-motion", *args)
    assert result.stdout.strip() == str(run / "motion_lora.safetensors")
    ok("transfer", *args)

    resumes = [e for e in events(run) if e["event"] == "resume"]
    assert [(e["stage"], e["step"]) for e in resumes] == [("motion", 2)]
    assert steps(run, "spatial") == [1, 2, 3, 4]
    assert steps(run, "motion") == [1, 2, 3, 4]
    assert (run / "samples" / "result.mp4").is_file()
    # bit-identical to the uninterrupted run
    tensors_equal(run / "spatial_lora.safetensors", finished / "spatial_lora.safetensors")
    tensors_equal(run / "motion_lora.safetensors", finished / "motion_lora.safetensors")


# -- 4. bad input: exit code 2, one clear line, nothing written -----------------------------------------
@pytest.fixture(scope="module")
def bad(inputs) -> Path:
    """Bad inputs of every kind, in one folder."""
    root = inputs["root"] / "bad"
    root.mkdir()
    (root / "text").mkdir()
    (root / "text" / "ref.mp4").write_text("this is not a video\n")
    write_video(root / "short.mp4", moving_square(3), 8)
    write_video(root / "long.mp4", moving_square(17), 8)
    for name, old, new in (("frames", "frames: 9", "frames: 10"), ("height", "height: 32", "height: 30"),
                           ("steps", "motion: {steps: 4", "motion: {steps: 5")):
        assert CONFIG.count(old) == 1
        (root / f"{name}.yaml").write_text(CONFIG.replace(old, new))
    (root / "flux").mkdir()
    (root / "flux" / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    (root / "empty").mkdir()
    return root


def motion_checkpoint(run: Path) -> Path:
    (folder,) = (run / "checkpoints" / "motion").glob("step-*")
    return folder / "lora.safetensors"


def _bad_cases(inputs, b: Path, finished: Path, partial: Path) -> dict[str, tuple[list, Path, str]]:
    """name -> (argv, directory that must stay untouched, text the error line must contain)."""
    checkpoint = motion_checkpoint(partial)
    return {
        "missing reference": (transfer_args(inputs, finished, ref=b / "nope.mp4"), finished,
                              f"{b / 'nope.mp4'}: file not found"),
        "text as video": (transfer_args(inputs, finished, ref=b / "text" / "ref.mp4"), finished,
                          "not a readable video"),
        "too few frames": (transfer_args(inputs, finished, ref=b / "short.mp4"), finished,
                           "short.mp4: clip has 3 frames, but motion transfer on this model needs at least 5 (4k+1; "
                           "fewer have no motion to learn): use a longer clip"),
        "more frames than the clip": ([*transfer_args(inputs, finished), "--frames", 13], finished,
                                      "ref.mp4: clip has 9 frames, but --frames (video.frames) asks for 13: pass "
                                      "--frames 9 or fewer"),
        "too few frames at fps": ([*transfer_args(inputs, finished), "--fps", 2], finished,
                                  "clip has 3 frames (at --fps 2), but motion transfer on this model needs at least 5 "
                                  "(4k+1; fewer have no motion to learn): use a longer clip or a higher --fps"),
        "bad size": ([*transfer_args(inputs, finished), "--size", "32by32"], finished,
                     "--size must be HxW in pixels"),
        "frames not 4k+1": (transfer_args(inputs, finished, ref=b / "long.mp4", config=b / "frames.yaml"), finished,
                            "frames must be 4k+1 (got 10"),
        "height": (transfer_args(inputs, finished, config=b / "height.yaml"), finished,
                   "height must be a positive multiple of 16 (got 30)"),
        "no model": (transfer_args(inputs, finished, model=b / "no-model"), finished, "no model_index.json"),
        "unsupported pipeline": (transfer_args(inputs, finished, model=b / "flux"), finished,
                                 "unsupported pipeline 'FluxPipeline'"),
        "other settings": (transfer_args(inputs, finished, config=b / "steps.yaml"), finished,
                           "holds a run made with other settings (motion.steps: 4 -> 5)"),
        "generate without config": (["generate", "--run", b / "empty"], b / "empty",
                                    "not a run directory (no config.yaml)"),
        "export format": (["export", "--run", finished, "-f", "bogus"], finished, "unknown LoRA format 'bogus'"),
        "corrupt checkpoint": (transfer_args(inputs, partial), partial,
                               f"{checkpoint}: not a readable safetensors file"),
    }


BAD_CASES = (
    "missing reference", "text as video", "too few frames", "more frames than the clip", "too few frames at fps",
    "bad size", "frames not 4k+1", "height", "no model",
    "unsupported pipeline", "other settings", "generate without config", "export format", "corrupt checkpoint",
)


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_exits_2_and_touches_nothing(case, inputs, bad, finished, partial):
    argv, untouched, message = _bad_cases(inputs, bad, finished, partial)[case]
    if case == "corrupt checkpoint":  # truncated, as by a full disk
        checkpoint = motion_checkpoint(partial)
        data = checkpoint.read_bytes()
        checkpoint.write_bytes(data[: len(data) // 2])
    before = snapshot(untouched)
    result = fym(*argv)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr[-2000:]
    assert message in errors[0]
    assert snapshot(untouched) == before


# -- 5. generation options ------------------------------------------------------------------------------
def test_generate_spatial_scale_and_seed(finished):
    ok("generate", "--run", finished, "--seed", "5", "--name", "first")
    ok("generate", "--run", finished, "--seed", "5", "--name", "second")
    ok("generate", "--run", finished, "--seed", "5", "--spatial-scale", "1.0", "--name", "spatial")
    first, second = result_frames(finished, "first"), result_frames(finished, "second")
    assert first.shape == (9, 32, 32, 3)
    assert np.array_equal(first, second)  # same seed, same settings: the same video
    assert not np.array_equal(first, result_frames(finished, "spatial"))  # the spatial LoRA changes it
    assert not np.array_equal(first, result_frames(finished, "result"))  # seed 5 differs from the default 0


def test_generate_settings_follow_the_one_precedence_and_are_checked_before_the_model_loads(finished, tmp_path,
                                                                                            monkeypatch):
    """recipe < the run's config.yaml < the options given, through `resolve_config` as every command; a bad value
    is refused with its message before the model loads."""
    run = tmp_path / "run"
    run.mkdir()
    cfg = yaml.safe_load((finished / "config.yaml").read_text())
    cfg["generate"] = {"guidance": 2.5, "seed": 1}  # a run's config without the recipe's steps
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    used = []

    class Job:
        def generate(self, prompt, settings, name):
            used.append(settings)
            return SimpleNamespace(paths={})

    monkeypatch.setattr(Transfer, "open", lambda *args, **kwargs: Job())
    ok("generate", "--run", run, "--seed", "3")
    recipe = resolve_config({"model": cfg["model"]}).generate
    assert (used[0].guidance, used[0].seed, used[0].steps) == (2.5, 3, recipe.steps)

    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Transfer, "open", loaded)
    refused = fym("generate", "--run", run, "--steps", "0")
    assert refused.exit_code == 2
    assert "error: invalid settings: generate.steps: Input should be greater than or equal to 1" in refused.stderr


def test_generate_logs_its_steps_and_the_vae_decode(finished):
    log = ok("generate", "--run", finished, "--name", "logged").stderr
    assert "\r" not in log
    decode = [line for line in log.splitlines() if line.startswith("generate: decode (VAE)")]
    assert len(decode) == 2 and "1/1" in decode[1]
    assert any(line.startswith("generate: 100%") for line in log.splitlines())  # the pipeline's denoising steps


def test_classify_encodes_only_what_stage_1_needs(inputs, tmp_path, monkeypatch):
    """The clip and its caption; not stage 2's single frames (nor stage 3's shrunk clip)."""
    from follow_your_motion.backbones.wan import WanBackbone

    calls = []
    encode = WanBackbone.encode_video
    monkeypatch.setattr(WanBackbone, "encode_video",
                        lambda self, video: calls.append(tuple(video.shape)) or encode(self, video))
    ok("classify", inputs["ref"], "-p", PROMPT, "-m", inputs["model"], "-o", tmp_path / "run", "-c", inputs["config"])
    assert calls == [(3, 9, 32, 32)]
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "run" / "cache").iterdir()) == ["latents", "text"]


def test_generate_mp4_is_deterministic(finished):
    """The same seed gives the same mp4, not only the same gif (x264's output must be a function of its input)."""
    names = [f"mp4-{i}" for i in range(4)]
    for name in names:
        ok("generate", "--run", finished, "--seed", "5", "--name", name)
    videos = [read_video(finished / "samples" / f"{name}.mp4").frames for name in names]
    for name, video in zip(names[1:], videos[1:], strict=True):
        assert np.array_equal(videos[0], video), f"{name}.mp4 decodes to other frames than {names[0]}.mp4"


def test_generate_with_another_length_and_size(finished):
    ok("generate", "--run", finished, "--frames", 13, "--height", 48, "--width", 32, "--steps", 2, "--name", "long")
    frames = read_video(finished / "samples" / "long.mp4").frames
    assert frames.shape == (13, 48, 32, 3)
    pair = read_video(finished / "samples" / "long_side_by_side.mp4").frames
    assert len(pair) == 13  # the 9-frame reference is held on its last frame
