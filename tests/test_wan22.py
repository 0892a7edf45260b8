"""Wan2.2-T2V-A14B: two experts, each classified, tuned on its own noise levels, exported and generated with."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_config
from diffusers import WanPipeline
from safetensors.torch import load_file
from test_cli import moving_square
from tiny_wan import build_tiny_wan_pipeline

from follow_your_motion.backbones import detect_family, detect_variant, load_backbone
from follow_your_motion.errors import InputError
from follow_your_motion.method.objective import sample_sigmas
from follow_your_motion.precedence import resolve_config
from follow_your_motion.run_export import export_run
from follow_your_motion.transfer import Transfer
from follow_your_motion.video import write_video

BOUNDARY = 0.875
PROMPT = "a robot walks"


@pytest.fixture(scope="module")
def a14b_dir(tmp_path_factory) -> Path:
    return build_tiny_wan_pipeline(tmp_path_factory.mktemp("tiny-a14b") / "pipe", boundary_ratio=BOUNDARY)


@pytest.fixture(scope="module")
def inputs(a14b_dir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("a14b-inputs")
    (root / "config.yaml").write_text(tiny_config(4))
    return {"root": root, "ref": write_video(root / "ref.mp4", moving_square(9), 8), "config": root / "config.yaml"}


def config(a14b_dir, inputs):
    flags = {"reference": str(inputs["ref"]), "prompt": PROMPT, "model": {"source": str(a14b_dir), "dtype": "float32"}}
    return resolve_config(flags, inputs["config"])


@pytest.fixture(scope="module")
def finished(a14b_dir, inputs, tmp_path_factory) -> tuple[Transfer, dict[str, list[float]]]:
    """A whole transfer on the tiny A14B, recording every training timestep each expert was given."""
    job = Transfer(config(a14b_dir, inputs), tmp_path_factory.mktemp("a14b-run") / "run")
    seen: dict[str, list[float]] = {"high_noise": [], "low_noise": []}
    predict = job.backbone.predict

    def recording(expert, latents, timesteps, cond, *positions):
        if torch.is_grad_enabled():  # a training step, not stage 1 or sampling
            seen[expert.name] += timesteps.tolist()
        return predict(expert, latents, timesteps, cond, *positions)

    job.backbone.predict = recording
    job.all()
    job.backbone.predict = predict
    return job, seen


def test_a14b_is_recognised_with_its_recipe_and_two_experts(a14b_dir, inputs):
    assert detect_family(str(a14b_dir)) == "wan" and detect_variant(str(a14b_dir)) == "wan2.2-t2v-a14b"
    cfg = config(a14b_dir, inputs)
    assert (cfg.generate.steps, cfg.generate.guidance, cfg.generate.guidance_2) == (2, 4.0, 3.0)  # steps: the YAML
    backbone = load_backbone(str(a14b_dir))
    assert [(e.name, e.sigma_range) for e in backbone.experts] == [("high_noise", (BOUNDARY, 1.0)),
                                                                  ("low_noise", (0.0, BOUNDARY))]
    assert backbone.experts[1].module is backbone.pipe.transformer_2
    assert backbone.expert_for(0.9).name == "high_noise" and backbone.expert_for(0.5).name == "low_noise"


@pytest.mark.parametrize(("pipeline", "named"), [
    ("WanVACEPipeline", "Wan VACE"), ("WanAnimatePipeline", "Wan Animate"),
    ("WanVideoToVideoPipeline", "Wan video-to-video"),
])
def test_unsupported_wan_variants_are_refused_by_name(tmp_path, pipeline, named):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    with pytest.raises(InputError, match=re.escape(f"is a {named} pipeline ({pipeline}), which this project does not")):
        detect_family(str(tmp_path))


def test_each_expert_trains_only_on_its_own_noise_levels(finished):
    _, seen = finished
    assert len(seen["high_noise"]) == len(seen["low_noise"]) == 4 + 4  # spatial and motion steps, each expert
    assert all(t >= BOUNDARY * 1000 for t in seen["high_noise"])
    assert all(t < BOUNDARY * 1000 for t in seen["low_noise"])


def test_sigmas_of_a_range_are_the_shifted_distribution_cut_to_it():
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    full = sample_sigmas(4000, gen(), "uniform", 3.0)
    high = sample_sigmas(4000, gen(), "uniform", 3.0, (BOUNDARY, 1.0))
    low = sample_sigmas(4000, gen(), "uniform", 3.0, (0.0, BOUNDARY))
    assert high.min() >= BOUNDARY - 1e-6 and low.max() < BOUNDARY
    # the share of the full distribution above the boundary is what the cut leaves out of (0, 1)
    assert abs((full >= BOUNDARY).float().mean() - (1 - 0.875 / (3 - 2 * 0.875))) < 0.02
    assert torch.equal(full, sample_sigmas(4000, gen(), "uniform", 3.0, (0.0, 1.0)))


def test_heads_per_expert_and_masks_exact_on_both(finished):
    job, _ = finished
    heads = json.loads(job.run.heads.read_text())
    assert set(heads["experts"]) == {"high_noise", "low_noise"}
    assert heads["experts"]["low_noise"]["settings"]["sigma_used"] == BOUNDARY / 2  # its own noise levels
    assert (job.run.root / "heads_high_noise.png").is_file() and (job.run.root / "heads_low_noise.png").is_file()
    for expert in job.backbone.experts:
        layers = heads["experts"][expert.name]["layers"]
        temporal = [[h["type"] == "temporal" for h in layer["heads"]] for layer in layers]
        state = load_file(str(job.run.lora("motion", expert.suffix)))
        hd = expert.sites[0].head_dim
        for layer, row in enumerate(temporal):
            key = f"transformer.blocks.{layer}.attn1.to_v.lora_B.weight"
            if not any(row):
                assert key not in state
                continue
            for head, is_temporal in enumerate(row):
                block = state[key][head * hd:(head + 1) * hd]
                assert (block.abs().sum() > 0) == is_temporal, (expert.name, layer, head)


def _expert_outputs(transformers, job) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    noisy = torch.randn(1, 16, 3, 4, 4, generator=gen)
    text = job.backbone.encode_prompt(PROMPT).tensors["text"]
    with torch.no_grad():
        return [t(hidden_states=noisy, timestep=torch.tensor([t_]), encoder_hidden_states=text, return_dict=False)[0]
                for t, t_ in zip(transformers, (950.0, 300.0), strict=True)]


@pytest.mark.parametrize("fmt", ["diffusers", "comfyui"])
def test_each_expert_file_loads_with_diffusers_and_reproduces_the_trained_model(finished, a14b_dir, tmp_path, fmt):
    job, _ = finished
    written = export_run(job.run.root, fmt, tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{a}_lora_{e}_{fmt}.safetensors" for a in ("spatial", "motion")
                                                     for e in ("high_noise", "low_noise"))
    pipe = WanPipeline.from_pretrained(str(a14b_dir))
    pipe.load_lora_weights(str(tmp_path / f"motion_lora_high_noise_{fmt}.safetensors"), adapter_name="m")
    pipe.load_lora_weights(str(tmp_path / f"motion_lora_low_noise_{fmt}.safetensors"), adapter_name="m",
                           load_into_transformer_2=True)
    with job.backbone.adapters({"motion": 1.0}):
        trained = _expert_outputs([e.module for e in job.backbone.experts], job)
    loaded = _expert_outputs([pipe.transformer, pipe.transformer_2], job)
    untuned_pipe = WanPipeline.from_pretrained(str(a14b_dir))
    base = _expert_outputs([untuned_pipe.transformer, untuned_pipe.transformer_2], job)
    for mine, theirs, untuned in zip(trained, loaded, base, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-5, rtol=0), (mine - theirs).abs().max()
        assert (mine - untuned).abs().max() > 1e-4  # each expert's LoRA changes that expert


def test_resume_across_experts_is_bit_identical(finished, a14b_dir, inputs, tmp_path):
    job, _ = finished
    run = tmp_path / "run"
    first = Transfer(config(a14b_dir, inputs), run)
    assert first.tune_motion(stop_after=2) is None  # stops inside the high-noise expert's motion stage
    assert not (run / "motion_lora_high_noise.safetensors").exists()
    again = Transfer(config(a14b_dir, inputs), run)
    assert again.tune_motion() == [run / f"motion_lora_{e}.safetensors" for e in ("high_noise", "low_noise")]
    for expert in ("high_noise", "low_noise"):
        for adapter in ("spatial", "motion"):
            ours, theirs = (load_file(str(r / f"{adapter}_lora_{expert}.safetensors")) for r in (run, job.run.root))
            assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), (adapter,
                                                                                                          expert)


def test_generation_runs_both_experts_with_their_loras(finished):
    job, _ = finished
    calls = {e.name: 0 for e in job.backbone.experts}
    handles = []
    for expert in job.backbone.experts:
        lora_b = expert.module.get_submodule("blocks.0.attn1.to_q").lora_B["motion"]

        def count(*_, name=expert.name):
            calls[name] += 1

        handles.append(lora_b.register_forward_hook(count))
    try:
        job.generate(name="experts")
    finally:
        for handle in handles:
            handle.remove()
    # 2 sampling steps with classifier-free guidance: the first step at high noise, the second below the boundary
    assert calls["high_noise"] > 0 and calls["low_noise"] > 0


def test_high_noise_only_tunes_one_expert(a14b_dir, inputs, tmp_path):
    settings = yaml.safe_load(tiny_config(2))
    settings["motion"]["experts"] = "high_noise"
    path = tmp_path / "high.yaml"
    path.write_text(yaml.safe_dump(settings))
    cfg = resolve_config({"reference": str(inputs["ref"]), "prompt": PROMPT, "model": {"source": str(a14b_dir)}}, path)
    job = Transfer(cfg, tmp_path / "run")
    job.all()
    names = sorted(p.name for p in (tmp_path / "run").glob("*_lora*.safetensors"))
    assert names == ["motion_lora_high_noise.safetensors", "spatial_lora_high_noise.safetensors",
                     "spatial_lora_low_noise.safetensors"]
    assert "motion" not in job.backbone.experts[1].loaded_adapters()
    assert job.stage_done("motion")


def test_guidance_2_is_refused_on_a_single_transformer(wan):
    with pytest.raises(InputError, match="guidance_2 is the low-noise expert's guidance"):
        wan.generate(PROMPT, negative_prompt="", num_frames=5, height=32, width=32, steps=1, guidance=1.0,
                     guidance_2=2.0, seed=0, adapter_scales={})


def test_cli_end_to_end_on_a14b(a14b_dir, inputs, tmp_path):
    from test_cli import ok

    run = tmp_path / "run"
    ok("transfer", inputs["ref"], "-p", PROMPT, "-m", a14b_dir, "-o", run, "-c", inputs["config"])
    result = ok("classify", inputs["ref"], "-p", PROMPT, "-m", a14b_dir, "-o", run, "-c", inputs["config"])
    assert "(high_noise expert)" in result.stdout and "(low_noise expert)" in result.stdout
    ok("generate", "--run", run, "--name", "g2", "--guidance-2", 1.5)
    assert (run / "samples" / "g2.mp4").is_file()
    # guidance_2 reaches the low-noise expert's steps only: the result differs from the default's
    ok("generate", "--run", run, "--name", "g3")
    from follow_your_motion.video import read_video

    g2, g3 = (read_video(run / "samples" / f"{name}.mp4").frames for name in ("g2", "g3"))
    assert not np.array_equal(g2, g3)


def test_ti2v_5b_is_recognised_and_transfers_text_to_video(tmp_path):
    """A TI2V-5B directory is known as what it is (its recipe, its 16x VAE and 48 channels), not Wan2.1 by luck."""
    from test_cli import ok
    from tiny_wan import build_tiny_ti2v_pipeline

    from follow_your_motion.config import TransferConfig

    model = build_tiny_ti2v_pipeline(tmp_path / "ti2v")
    assert detect_variant(str(model)) == "wan2.2-ti2v-5b"
    cfg = resolve_config({"model": {"source": str(model)}})
    assert (cfg.video.auto_frames, cfg.video.auto_size, cfg.video.fps) == (121, (704, 1280), 24.0)
    backbone = load_backbone(str(model))
    assert backbone.geometry.spatial_stride == 16 and backbone.geometry.size_multiple == 32
    assert len(backbone.experts) == 1 and backbone.pipe.config.expand_timesteps
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({
        "model": {"dtype": "float32"}, "video": {"frames": 9, "height": 64, "width": 64, "fps": None},
        "heads": {"num_queries": 16}, "spatial": {"steps": 2, "rank": 4}, "motion": {"steps": 2, "rank": 4,
                                                                                    "keep_frames": 2},
        "generate": {"steps": 2},
    }))
    ref = write_video(tmp_path / "ref.mp4", np.repeat(moving_square(9), 2, axis=1).repeat(2, axis=2), 8)
    ok("transfer", ref, "-p", PROMPT, "-m", model, "-o", tmp_path / "run", "-c", settings)
    assert backbone.image_mode == "optional"  # text-to-video here; --image below
    saved = TransferConfig.load(tmp_path / "run" / "config.yaml").video
    assert saved.auto_frames == 121 and saved.first_frame_condition is False
    assert load_file(str(tmp_path / "run" / "motion_lora.safetensors"))


def test_ti2v_image_mode_keeps_the_first_frame_clean_in_tuning_and_generation(tmp_path, monkeypatch):
    """With --image, TI2V is tuned with the reference's first frame given clean (timestep 0 on its tokens, kept
    in every sparse step, left out of the losses) and generates from the picture."""
    from PIL import Image
    from test_cli import ok
    from tiny_wan import build_tiny_ti2v_pipeline

    from follow_your_motion.config import MotionSettings, TransferConfig
    from follow_your_motion.method import train
    from follow_your_motion.method.sparse import sample_frames
    from follow_your_motion.video import read_video

    model = build_tiny_ti2v_pipeline(tmp_path / "ti2v")
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({
        "model": {"dtype": "float32"}, "video": {"frames": 17, "height": 64, "width": 64, "fps": None},
        "heads": {"num_queries": 16}, "spatial": {"steps": 2, "rank": 4},
        "motion": {"steps": 3, "rank": 4, "keep_frames": 2}, "generate": {"steps": 2},
    }))
    ref = write_video(tmp_path / "ref.mp4", np.repeat(moving_square(17), 2, axis=1).repeat(2, axis=2), 8)
    pictures = []
    for i, value in enumerate((40, 220)):
        pictures.append(tmp_path / f"p{i}.png")
        Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(pictures[-1])
    scored = []
    loss = train.flow_matching_loss
    monkeypatch.setattr(train, "flow_matching_loss", lambda pred, target: scored.append(pred.shape[2]) or
                        loss(pred, target))
    run = tmp_path / "run"
    ok("transfer", ref, "-p", PROMPT, "-m", model, "-o", run, "-c", settings, "--image", pictures[0])
    assert TransferConfig.load(run / "config.yaml").video.first_frame_condition is True
    # stage 2: single frames, all learnt; stage 3: K = 2 kept frames plus the clean first one, which is not scored
    kept = [set(sample_frames(5, 2, "uniform-random-phase", 0, step).tolist()) | {0} for step in range(3)]
    assert scored == [1, 1] + [len(k) - 1 for k in kept]

    job = Transfer.open(run)
    cond = job.reference().cond
    assert cond.fixed_frames == (0,) and set(cond.tensors) == {"text", "first_frame"}
    m = MotionSettings(keep_frames=2)
    for step in range(6):
        batch = train.motion_inputs(job.reference().latents, cond, m)(step, torch.Generator())
        assert batch.cond.fixed_frames == (0,) and batch.frame_positions[0] == 0  # frame 0 at its own position
    # the noisy first frame does not matter: the clean one is put in its place
    expert = job.backbone.experts[0]
    gen = torch.Generator().manual_seed(0)
    noisy = torch.randn(job.reference().latents.shape, generator=gen)
    other = noisy.clone()
    other[:, :, 0] = torch.randn(other[:, :, 0].shape, generator=gen)
    with torch.no_grad():
        a, b = (job.backbone.predict(expert, x, torch.tensor([600.0]), cond) for x in (noisy, other))
    assert torch.equal(a[:, :, 1:], b[:, :, 1:])
    ok("generate", "--run", run, "--image", pictures[1], "--name", "other")
    first, second = (read_video(run / "samples" / f"{n}.mp4").frames for n in ("result", "other"))
    assert first.shape == (17, 64, 64, 3) and not np.array_equal(first, second)


def test_adaptive_rope_on_each_expert(a14b_dir):
    """Stock positions given explicitly are bit-identical to none, and other positions change the output, on
    both experts (each has its own rotary module)."""
    backbone = load_backbone(str(a14b_dir))
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 3, 8, 8, generator=gen)
    cond = backbone.encode_prompt(PROMPT)
    with torch.no_grad():
        for expert, t in zip(backbone.experts, (950.0, 300.0), strict=True):
            stock = backbone.predict(expert, latents, torch.tensor([t]), cond)
            same = backbone.predict(expert, latents, torch.tensor([t]), cond, torch.arange(3, dtype=torch.float64))
            moved = backbone.predict(expert, latents, torch.tensor([t]), cond, torch.tensor([0.0, 4.0, 8.0]))
            assert torch.equal(stock, same), expert.name
            assert (stock - moved).abs().max() > 1e-5, expert.name
            assert expert.module.rope.frame_positions is None
