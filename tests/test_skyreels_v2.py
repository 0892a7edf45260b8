"""SkyReels-V2: detected with its recipe, stage 1's q/k and the sparse positions checked against diffusers' own
code, head masks exact, exports that SkyReelsV2Pipeline's loader reads and that reproduce the tuned model,
resume bit-identical, and `fym` end to end on tiny SkyReels-V2 text- and image-to-video pipelines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import record_attention_inputs, train_motion, trained_output
from diffusers import SkyReelsV2Pipeline, SkyReelsV2Transformer3DModel
from diffusers.models.transformers import transformer_skyreels_v2
from PIL import Image
from safetensors.torch import load_file
from test_cli import moving_square, ok
from tiny_skyreels_v2 import HEAD_DIM, HEADS, LAYERS, build_tiny_skyreels_v2_pipeline

from follow_your_motion.backbones import HUB_VARIANTS, detect_family, detect_variant, load_backbone
from follow_your_motion.backbones.skyreels_v2 import SkyReelsV2Backbone
from follow_your_motion.errors import InputError
from follow_your_motion.method.export import export_lora
from follow_your_motion.precedence import resolve_config
from follow_your_motion.video import read_video, write_video

PROMPT = "a robot walks"
SELECTION = {0: [1, 3], 1: [2]}  # heads per layer the LoRA may touch
RANK, ALPHA = 4, 8.0  # alpha != rank: a lost alpha would change the output
ROLES = ("to_q", "to_k", "to_v", "to_out.0")


@pytest.fixture(scope="module")
def sky_dir(tmp_path_factory) -> Path:
    return build_tiny_skyreels_v2_pipeline(tmp_path_factory.mktemp("tiny-skyreels") / "pipe")


@pytest.fixture
def sky(sky_dir) -> SkyReelsV2Backbone:
    """A freshly loaded tiny SkyReels-V2 backbone (adapters never leak between tests)."""
    return SkyReelsV2Backbone.load(str(sky_dir))


def _noisy(seed: int = 0, frames: int = 3) -> torch.Tensor:
    return torch.randn(1, 16, frames, 4, 4, generator=torch.Generator().manual_seed(seed))


# -- detection, recipe, registry --------------------------------------------------------------------
def test_skyreels_v2_is_detected_and_loaded_with_its_sites_shift_and_recipe(sky_dir):
    assert detect_family(str(sky_dir)) == "skyreels_v2" and detect_variant(str(sky_dir)) is None
    backbone = load_backbone(str(sky_dir))
    assert isinstance(backbone, SkyReelsV2Backbone) and isinstance(backbone.pipe, SkyReelsV2Pipeline)
    assert [(e.name, e.sigma_range) for e in backbone.experts] == [("", (0.0, 1.0))]
    assert isinstance(backbone.experts[0].module, SkyReelsV2Transformer3DModel)
    assert [s.q for s in backbone.experts[0].sites] == [f"blocks.{i}.attn1.to_q" for i in range(LAYERS)]
    assert {(s.heads, s.head_dim, s.text_tokens, s.qk_norm) for s in backbone.experts[0].sites} == {
        (HEADS, HEAD_DIM, "none", "across_heads")}
    # the release's shift (8 for text-to-video) on the sampler, whatever the checkpoint's scheduler says (3 here)
    assert backbone.flow_shift == backbone.pipe.scheduler.config.flow_shift == 8.0
    assert backbone.image_mode == "none"
    cfg = resolve_config({"model": {"source": str(sky_dir)}})
    assert (cfg.video.auto_frames, cfg.video.auto_size, cfg.video.fps) == (97, (544, 960), 24.0)
    assert (cfg.motion.keep_frames, cfg.generate.steps, cfg.generate.guidance) == (6, 50, 6.0)
    assert cfg.model.family == "skyreels_v2"


def test_hub_ids_are_known_without_download():
    source = "Skywork/SkyReels-V2-T2V-14B-540P-Diffusers"
    assert detect_family(source) == "skyreels_v2" and source not in HUB_VARIANTS
    assert HUB_VARIANTS["Skywork/SkyReels-V2-T2V-14B-720P-Diffusers"] == "skyreels-v2-720p"
    for size, recipe in (("1.3B-540P", "skyreels-v2-i2v"), ("14B-540P", "skyreels-v2-i2v"),
                         ("14B-720P", "skyreels-v2-i2v-720p")):
        source = f"Skywork/SkyReels-V2-I2V-{size}-Diffusers"
        assert (detect_family(source), HUB_VARIANTS[source]) == ("skyreels_v2", recipe)


@pytest.mark.parametrize(("model", "recipe"), [
    ("Skywork/SkyReels-V2-T2V-14B-540P-Diffusers", (97, (544, 960), 24.0, 6, 6.0)),
    ("Skywork/SkyReels-V2-T2V-14B-720P-Diffusers", (121, (720, 1280), 24.0, 7, 6.0)),
    ("Skywork/SkyReels-V2-I2V-14B-540P-Diffusers", (97, (544, 960), 24.0, 6, 5.0)),
    ("Skywork/SkyReels-V2-I2V-14B-720P-Diffusers", (121, (720, 1280), 24.0, 7, 5.0)),
])
def test_each_checkpoint_gets_the_release_size_of_its_resolution(monkeypatch, model, recipe):
    """The README's "544 * 960 * 97f" for 540P and "720 * 1280 * 121f" for 720P; I2V's guidance 5."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = resolve_config({"model": {"source": model}})
    v = cfg.video
    assert (v.auto_frames, v.auto_size, v.fps, cfg.motion.keep_frames, cfg.generate.guidance) == recipe


@pytest.mark.parametrize(("folders", "recipe"), [
    (("SkyReels-V2-T2V-14B-720P-Diffusers",), "skyreels-v2-720p"),
    (("skyreels_720p",), "skyreels-v2-720p"),
    (("SkyReels-V2-T2V-14B-540P-Diffusers",), None),
    (("720p-runs", "skyreels-540P"), None),  # only the checkpoint's own folder counts
    (("models--Skywork--SkyReels-V2-T2V-14B-720P-Diffusers", "snapshots", "0123abcd"), "skyreels-v2-720p"),
    (("models--Skywork--SkyReels-V2-T2V-14B-540P-Diffusers", "snapshots", "0123abcd"), None),
])
def test_a_local_checkpoint_is_720p_by_its_folder_name(tmp_path, folders, recipe):
    """720P and 540P checkpoints have identical configs: the folder's name (or the Hugging Face cache's
    repository folder) tells them apart."""
    folder = tmp_path.joinpath(*folders)
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "SkyReelsV2Pipeline"}))
    assert detect_variant(str(folder)) == recipe
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "SkyReelsV2ImageToVideoPipeline"}))
    assert detect_variant(str(folder)) == ("skyreels-v2-i2v-720p" if recipe else "skyreels-v2-i2v")


@pytest.mark.parametrize(("pipeline", "named"), [
    ("SkyReelsV2DiffusionForcingPipeline", "SkyReels-V2 diffusion-forcing"),
    ("SkyReelsV2DiffusionForcingImageToVideoPipeline", "SkyReels-V2 diffusion-forcing image-to-video"),
    ("SkyReelsV2DiffusionForcingVideoToVideoPipeline", "SkyReels-V2 diffusion-forcing video-to-video"),
])
def test_diffusion_forcing_pipelines_are_refused_by_name(tmp_path, pipeline, named):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    with pytest.raises(InputError, match=re.escape(f"is a {named} pipeline ({pipeline}), which this project does not")):
        detect_family(str(tmp_path))


@pytest.mark.parametrize("size", ["1.3B-540P", "14B-540P", "14B-720P"])
def test_diffusion_forcing_hub_ids_are_refused_before_any_download(size):
    source = f"Skywork/SkyReels-V2-DF-{size}-Diffusers"
    with pytest.raises(InputError, match=re.escape(f"model {source!r} is a SkyReels-V2 diffusion-forcing pipeline")):
        detect_family(source)


# -- the numerics of stage 1 and 3 ------------------------------------------------------------------
@pytest.mark.parametrize("positions", [None, [0.0, 2.0, 5.5]], ids=["stock", "replaced"])
def test_capture_qk_equals_the_processor_bit_for_bit(sky, monkeypatch, positions):
    """Stage 1 scores the video tokens' q and k as SkyReelsV2AttnProcessor attends with them (q/k norm, RoPE,
    replaced frame positions when given)."""
    processor_qk = record_attention_inputs(monkeypatch, transformer_skyreels_v2, "dispatch_attention_fn")
    frame_positions = None if positions is None else torch.tensor(positions, dtype=torch.float64)
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad(), sky.capture_qk(sky.experts[0], lambda layer, q, k: captured.update({layer: (q, k)})):
        sky.predict(sky.experts[0], _noisy(), torch.tensor([700.0]), sky.encode_prompt(PROMPT), frame_positions)
    self_attention = processor_qk[0::2]  # each block calls attn1 (self) then attn2 (cross-attention)
    assert len(captured) == len(self_attention) == LAYERS
    for layer, (q, k) in captured.items():
        ref_q, ref_k = self_attention[layer]
        assert q.shape == (1, 3 * 2 * 2, HEADS, HEAD_DIM)
        assert torch.equal(q, ref_q.float()) and torch.equal(k, ref_k.float()), layer


def test_predict_is_the_pipelines_step_and_positions_move_only_kept_frames(sky, sky_dir):
    """Stock positions: bit-identical to a fresh pipeline's transformer call, and to the stock positions given
    explicitly. Kept frames at their own positions: the full clip's rotary rows for those frames."""
    cond = sky.encode_prompt(PROMPT)
    noisy, t = _noisy(frames=5), torch.tensor([600.0])
    fresh = SkyReelsV2Pipeline.from_pretrained(str(sky_dir)).transformer
    with torch.no_grad():
        ours = sky.predict(sky.experts[0], noisy, t, cond)
        theirs = fresh(hidden_states=noisy, timestep=t, encoder_hidden_states=cond.tensors["text"],
                       return_dict=False)[0]
        explicit = sky.predict(sky.experts[0], noisy, t, cond, torch.arange(5, dtype=torch.float64))
        moved = sky.predict(sky.experts[0], noisy, t, cond, torch.tensor([0.0, 3.0, 6.0, 9.0, 12.0]))
    assert torch.equal(ours, theirs) and torch.equal(ours, explicit)
    assert (ours - moved).abs().max() > 1e-5
    rope = sky.experts[0].module.rope
    full = [table.view(5, 2, 2, -1) for table in rope(noisy)]
    kept = [0, 2, 4]
    with rope.placed(torch.tensor(kept, dtype=torch.float64), 1):
        sparse = [table.view(3, 2, 2, -1) for table in rope(noisy[:, :, kept])]
    assert rope.frame_positions is None
    for whole, part in zip(full, sparse, strict=True):
        assert torch.allclose(part, whole[kept], atol=1e-6, rtol=0)


# -- tuning and export ------------------------------------------------------------------------------
def _train_motion(sky_dir: Path, run: Path, stop_after: int | None = None):
    """A motion adapter on selected heads, trained (or resumed) in `run` on sparse frames of a random clip."""
    sky = SkyReelsV2Backbone.load(str(sky_dir))
    clip = torch.rand(3, 17, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1  # 5 latent frames of 4x4
    return (sky, *train_motion(sky, clip, run, SELECTION, RANK, ALPHA, stop_after))


@pytest.fixture(scope="module")
def trained(sky_dir, tmp_path_factory):
    """The tiny SkyReels-V2 with a trained motion adapter, probe inputs and the adapter's output."""
    sky, latents, cond, _ = _train_motion(sky_dir, tmp_path_factory.mktemp("sky-train") / "run")
    return (sky, *trained_output(sky, latents, cond))


def test_head_masks_are_exact_after_training(trained):
    transformer = trained[0].experts[0].module
    for layer in range(LAYERS):
        for projection in ROLES:
            module = transformer.get_submodule(f"blocks.{layer}.attn1.{projection}")
            lora_a, lora_b = module.lora_A["motion"].weight, module.lora_B["motion"].weight
            for head in range(HEADS):
                part = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
                block = lora_a[:, part] if projection == "to_out.0" else lora_b[part]
                if head in SELECTION.get(layer, []):
                    assert block.abs().sum() > 0, (layer, projection, head)
                else:
                    assert torch.equal(block, torch.zeros_like(block)), (layer, projection, head)


def _pipeline_output(sky_dir: Path, noisy, timestep, cond, lora: Path | None = None) -> torch.Tensor:
    """A fresh SkyReelsV2Pipeline's transformer output, with `lora` loaded by its `load_lora_weights`."""
    pipe = SkyReelsV2Pipeline.from_pretrained(str(sky_dir))
    if lora is not None:
        pipe.load_lora_weights(str(lora), adapter_name="x")
    with torch.no_grad():
        return pipe.transformer(hidden_states=noisy, timestep=timestep, encoder_hidden_states=cond.tensors["text"],
                                return_dict=False)[0]


@pytest.mark.parametrize(("fmt", "keys"), [
    ("diffusers", {f"transformer.blocks.{i}.attn1.{p}.lora_{ab}.weight" for i in SELECTION for p in ROLES
                   for ab in "AB"}),
    ("comfyui", {f"diffusion_model.blocks.{i}.self_attn.{p}.{suffix}" for i in SELECTION for p in "qkvo"
                 for suffix in ("lora_A.weight", "lora_B.weight", "alpha")}),
])
def test_exported_file_loads_into_skyreels_pipeline_and_reproduces_the_model(trained, sky_dir, tmp_path, fmt, keys):
    """Both formats: exactly the adapted modules' keys (ComfyUI's: Wan's native names, as SkyReels-V2's
    checkpoints carry them), read by SkyReelsV2Pipeline.load_lora_weights (whose Wan converter refuses any key
    it leaves over) into a model that gives the tuned output, as does our own loader."""
    sky, noisy, timestep, cond, out = trained
    path = export_lora(sky, sky.experts[0], "motion", tmp_path / f"motion_{fmt}.safetensors", fmt)
    assert set(load_file(str(path))) == keys
    base = _pipeline_output(sky_dir, noisy, timestep, cond)
    loaded = _pipeline_output(sky_dir, noisy, timestep, cond, path)
    assert (out - base).abs().max() > 1e-3  # the trained adapter changes the model
    assert torch.allclose(loaded, out, atol=1e-5, rtol=0), (loaded - out).abs().max()
    fresh = SkyReelsV2Backbone.load(str(sky_dir))  # and our own loader (what `fym generate --lora` uses)
    fresh.load_lora(fresh.experts[0], str(path), "motion")
    with torch.no_grad():
        ours = fresh.predict(fresh.experts[0], noisy, timestep, cond)
    assert torch.allclose(ours, out, atol=1e-5, rtol=0), (ours - out).abs().max()


def test_resume_is_bit_identical(sky_dir, tmp_path):
    whole = _train_motion(sky_dir, tmp_path / "whole")[3]
    _train_motion(sky_dir, tmp_path / "run", stop_after=2)
    resumed = _train_motion(sky_dir, tmp_path / "run")[3]
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)


# -- fym end to end ---------------------------------------------------------------------------------
def _settings(tmp_path: Path) -> Path:
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({
        "model": {"dtype": "float32"}, "video": {"frames": 9, "height": 32, "width": 32, "fps": None},
        "heads": {"num_queries": 16}, "spatial": {"steps": 2, "rank": 4},
        "motion": {"steps": 2, "rank": 4, "keep_frames": 2}, "generate": {"steps": 2},
    }))
    return settings


def test_cli_end_to_end_on_skyreels_v2(sky_dir, tmp_path):
    ref = write_video(tmp_path / "ref.mp4", moving_square(9), 8)
    run = tmp_path / "run"
    ok("transfer", ref, "-p", PROMPT, "-m", sky_dir, "-o", run, "-c", _settings(tmp_path))
    heads = json.loads((run / "heads.json").read_text())
    assert [len(layer["heads"]) for layer in heads["layers"]] == [HEADS] * LAYERS
    assert read_video(run / "samples" / "result.mp4").frames.shape == (9, 32, 32, 3)
    ok("generate", "--run", run, "--name", "again", "--seed", 1)
    assert read_video(run / "samples" / "again.mp4").frames.shape == (9, 32, 32, 3)
    for fmt, prefix in (("diffusers", "transformer.blocks."), ("comfyui", "diffusion_model.blocks.")):
        ok("export", "--run", run, "-f", fmt)
        for adapter in ("spatial", "motion"):
            state = load_file(str(run / "export" / fmt / f"{adapter}_lora_{fmt}.safetensors"))
            assert state and all(k.startswith(prefix) for k in state), sorted(state)[:3]


def test_image_to_video_end_to_end(tmp_path):
    """SkyReelsV2ImageToVideoPipeline: its variant's recipe and shift, --image required, tuned and generated from
    the picture."""
    model = build_tiny_skyreels_v2_pipeline(tmp_path / "i2v", image=True)
    assert detect_family(str(model)) == "skyreels_v2" and detect_variant(str(model)) == "skyreels-v2-i2v"
    cfg = resolve_config({"model": {"source": str(model)}})
    assert (cfg.video.auto_frames, cfg.generate.guidance) == (97, 5.0)
    backbone = load_backbone(str(model))
    assert backbone.image_mode == "required" and backbone.flow_shift == 5.0
    ref = write_video(tmp_path / "ref.mp4", moving_square(9), 8)
    pictures = []
    for i, value in enumerate((40, 220)):
        pictures.append(tmp_path / f"p{i}.png")
        Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(pictures[-1])
    run = tmp_path / "run"
    ok("transfer", ref, "-p", PROMPT, "-m", model, "-o", run, "-c", _settings(tmp_path), "--image", pictures[0])
    ok("generate", "--run", run, "--image", pictures[1], "--name", "other")
    first, second = (read_video(run / "samples" / f"{n}.mp4").frames for n in ("result", "other"))
    assert first.shape == (9, 32, 32, 3) and not np.array_equal(first, second)
