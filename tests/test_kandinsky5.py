"""Kandinsky 5 Lite text-to-video: detected with its recipe, stage 1's q/k and the sparse positions checked against
diffusers' own code, head masks exact, exports that Kandinsky5T2VPipeline's loader reads and that reproduce the tuned
model, resume bit-identical, and `fym` end to end on a tiny Kandinsky 5 pipeline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import record_attention_inputs, train_motion, trained_output
from diffusers import Kandinsky5T2VPipeline, Kandinsky5Transformer3DModel
from diffusers.models.transformers import transformer_kandinsky
from safetensors.torch import load_file
from test_cli import moving_square, ok
from tiny_kandinsky5 import HEAD_DIM, HEADS, LATENT_CHANNELS, LAYERS, SHIFT, build_tiny_kandinsky5_pipeline

from follow_your_motion.backbones import detect_family, detect_variant, load_backbone
from follow_your_motion.backbones.kandinsky5 import Kandinsky5Backbone
from follow_your_motion.errors import InputError
from follow_your_motion.method.export import export_lora
from follow_your_motion.precedence import resolve_config
from follow_your_motion.video import read_video, write_video

PROMPT = "a robot walks"
SELECTION = {0: [1], 1: [0]}  # heads per layer the LoRA may touch
RANK, ALPHA = 4, 8.0  # alpha != rank: a lost alpha would change the output
ROLES = ("to_query", "to_key", "to_value", "out_layer")


@pytest.fixture(scope="module")
def k5_dir(tmp_path_factory) -> Path:
    return build_tiny_kandinsky5_pipeline(tmp_path_factory.mktemp("tiny-kandinsky5") / "pipe")


@pytest.fixture
def k5(k5_dir) -> Kandinsky5Backbone:
    """A freshly loaded tiny Kandinsky 5 backbone (adapters never leak between tests)."""
    return Kandinsky5Backbone.load(str(k5_dir))


def _noisy(seed: int = 0, frames: int = 3) -> torch.Tensor:
    return torch.randn(1, LATENT_CHANNELS, frames, 4, 4, generator=torch.Generator().manual_seed(seed))


def _transformer_call(transformer, noisy: torch.Tensor, timestep: torch.Tensor, cond, size: int = 32) -> torch.Tensor:
    """The transformer called as Kandinsky5T2VPipeline's denoising loop calls it, on method-layout latents."""
    hidden = noisy.permute(0, 2, 3, 4, 1)
    hidden = torch.cat([hidden, torch.zeros_like(hidden), hidden[..., :1] * 0], dim=-1)
    f, h, w = hidden.shape[1:4]
    out = transformer(hidden_states=hidden, encoder_hidden_states=cond.tensors["text"],
                      pooled_projections=cond.tensors["pooled"], timestep=timestep,
                      visual_rope_pos=[torch.arange(f), torch.arange(h // 2), torch.arange(w // 2)],
                      text_rope_pos=torch.arange(cond.tensors["text"].shape[1]), scale_factor=(1, 3.16, 3.16),
                      sparse_params=None, return_dict=False)
    return out.permute(0, 4, 1, 2, 3)


# -- detection, recipe, registry --------------------------------------------------------------------
def test_kandinsky5_is_detected_and_loaded_with_its_sites_shift_and_recipe(k5_dir):
    assert detect_family(str(k5_dir)) == "kandinsky5" and detect_variant(str(k5_dir)) is None
    backbone = load_backbone(str(k5_dir))
    assert isinstance(backbone, Kandinsky5Backbone) and isinstance(backbone.pipe, Kandinsky5T2VPipeline)
    assert isinstance(backbone.experts[0].module, Kandinsky5Transformer3DModel)
    assert [s.q for s in backbone.experts[0].sites] == [
        f"visual_transformer_blocks.{i}.self_attention.to_query" for i in range(LAYERS)]
    assert {(s.heads, s.head_dim, s.text_tokens, s.qk_norm) for s in backbone.experts[0].sites} == {
        (HEADS, HEAD_DIM, "none", "per_head")}
    assert backbone.flow_shift == SHIFT and backbone.image_mode == "none"
    assert (backbone.geometry.temporal_stride, backbone.geometry.spatial_stride, backbone.geometry.patch) == (
        4, 8, (1, 2, 2))
    cfg = resolve_config({"model": {"source": str(k5_dir)}})
    assert (cfg.video.auto_frames, cfg.video.auto_size, cfg.video.fps) == (121, (512, 768), 24.0)
    assert (cfg.motion.keep_frames, cfg.generate.steps, cfg.generate.guidance) == (7, 50, 5.0)
    assert cfg.model.family == "kandinsky5"


def test_hub_ids_are_known_without_download():
    for kind in ("sft", "nocfg", "distilled16steps", "pretrain"):
        assert detect_family(f"kandinskylab/Kandinsky-5.0-T2V-Lite-{kind}-5s-Diffusers") == "kandinsky5"


@pytest.mark.parametrize(("pipeline", "named"), [
    ("Kandinsky5I2VPipeline", "Kandinsky 5 image-to-video"),
    ("Kandinsky5T2IPipeline", "Kandinsky 5 text-to-image"),
    ("Kandinsky5I2IPipeline", "Kandinsky 5 image editing"),
])
def test_other_kandinsky5_pipelines_are_refused_by_name(tmp_path, pipeline, named):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    with pytest.raises(InputError, match=re.escape(f"is a {named} pipeline ({pipeline}), which this project does not")):
        detect_family(str(tmp_path))


def test_nabla_sparse_attention_is_refused(k5_dir):
    pipe = Kandinsky5T2VPipeline.from_pretrained(str(k5_dir))
    pipe.transformer.register_to_config(attention_type="nabla")
    with pytest.raises(InputError, match="NABLA sparse attention"):
        Kandinsky5Backbone(pipe)


# -- the numerics of stage 1 and 3 ------------------------------------------------------------------
@pytest.mark.parametrize("positions", [None, [0.0, 2.0, 5.5]], ids=["stock", "replaced"])
def test_capture_qk_equals_the_processor_bit_for_bit(k5, monkeypatch, positions):
    """Stage 1 scores the video tokens' q and k as Kandinsky5AttnProcessor attends with them (per-head norm,
    rotation, replaced frame positions when given)."""
    processor_qk = record_attention_inputs(monkeypatch, transformer_kandinsky, "dispatch_attention_fn")
    frame_positions = None if positions is None else torch.tensor(positions, dtype=torch.float64)
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad(), k5.capture_qk(k5.experts[0], lambda layer, q, k: captured.update({layer: (q, k)})):
        k5.predict(k5.experts[0], _noisy(), torch.tensor([700.0]), k5.encode_prompt(PROMPT), frame_positions)
    self_attention = processor_qk[1::2]  # the text block's self-attention, then each visual block's self and cross
    assert len(captured) == len(self_attention) == LAYERS
    for layer, (q, k) in captured.items():
        ref_q, ref_k = self_attention[layer]
        assert q.shape == (1, 3 * 2 * 2, HEADS, HEAD_DIM)
        assert torch.equal(q, ref_q.float()) and torch.equal(k, ref_k.float()), layer


def test_predict_is_the_pipelines_step_and_positions_move_only_kept_frames(k5, k5_dir):
    """Stock positions: bit-identical to a fresh pipeline's transformer call, and to the stock positions given
    explicitly. Kept frames at their own positions: the full clip's rotary rows for those frames."""
    cond = k5.encode_prompt(PROMPT)
    noisy, t = _noisy(frames=5), torch.tensor([600.0])
    fresh = Kandinsky5T2VPipeline.from_pretrained(str(k5_dir)).transformer
    with torch.no_grad():
        ours = k5.predict(k5.experts[0], noisy, t, cond)
        theirs = _transformer_call(fresh, noisy, t, cond)
        explicit = k5.predict(k5.experts[0], noisy, t, cond, torch.arange(5, dtype=torch.float64))
        moved = k5.predict(k5.experts[0], noisy, t, cond, torch.tensor([0.0, 3.0, 6.0, 9.0, 12.0]))
    assert torch.equal(ours, theirs) and torch.equal(ours, explicit)
    assert (ours - moved).abs().max() > 1e-5
    rope = k5.experts[0].module.visual_rope_embeddings
    grid = [torch.arange(5), torch.arange(2), torch.arange(2)]
    full = rope((1, 5, 2, 2), grid, (1, 3.16, 3.16))
    kept = [0, 2, 4]
    with rope.placed(torch.tensor(kept, dtype=torch.float64), 1):
        sparse = rope((1, 3, 2, 2), [torch.arange(3), *grid[1:]], (1, 3.16, 3.16))
    assert rope.frame_positions is None
    assert torch.equal(sparse, full[:, kept])


# -- tuning and export ------------------------------------------------------------------------------
def _train_motion(k5_dir: Path, run: Path, stop_after: int | None = None):
    """A motion adapter on selected heads, trained (or resumed) in `run` on sparse frames of a random clip."""
    k5 = Kandinsky5Backbone.load(str(k5_dir))
    clip = torch.rand(3, 17, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1  # 5 latent frames of 4x4
    return (k5, *train_motion(k5, clip, run, SELECTION, RANK, ALPHA, stop_after))


@pytest.fixture(scope="module")
def trained(k5_dir, tmp_path_factory):
    """The tiny Kandinsky 5 with a trained motion adapter, probe inputs and the adapter's output."""
    k5, latents, cond, _ = _train_motion(k5_dir, tmp_path_factory.mktemp("k5-train") / "run")
    return (k5, *trained_output(k5, latents, cond))


def test_head_masks_are_exact_after_training(trained):
    transformer = trained[0].experts[0].module
    for layer in range(LAYERS):
        for projection in ROLES:
            module = transformer.get_submodule(f"visual_transformer_blocks.{layer}.self_attention.{projection}")
            lora_a, lora_b = module.lora_A["motion"].weight, module.lora_B["motion"].weight
            for head in range(HEADS):
                part = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
                block = lora_a[:, part] if projection == "out_layer" else lora_b[part]
                if head in SELECTION.get(layer, []):
                    assert block.abs().sum() > 0, (layer, projection, head)
                else:
                    assert torch.equal(block, torch.zeros_like(block)), (layer, projection, head)


def test_exported_diffusers_file_loads_into_the_pipeline_and_reproduces_the_model(trained, k5_dir, tmp_path):
    """Exactly the adapted modules' keys, read by Kandinsky5T2VPipeline.load_lora_weights (diffusers' own
    loader) into a model that gives the tuned output, as does our own loader."""
    k5, noisy, timestep, cond, out = trained
    path = export_lora(k5, k5.experts[0], "motion", tmp_path / "motion.safetensors", "diffusers")
    assert set(load_file(str(path))) == {
        f"transformer.visual_transformer_blocks.{i}.self_attention.{p}.lora_{ab}.weight"
        for i in SELECTION for p in ROLES for ab in "AB"}
    pipe = Kandinsky5T2VPipeline.from_pretrained(str(k5_dir))
    with torch.no_grad():
        base = _transformer_call(pipe.transformer, noisy, timestep, cond)
        pipe.load_lora_weights(str(path), adapter_name="x")
        loaded = _transformer_call(pipe.transformer, noisy, timestep, cond)
    assert (out - base).abs().max() > 1e-3  # the trained adapter changes the model
    assert torch.allclose(loaded, out, atol=1e-5, rtol=0), (loaded - out).abs().max()
    fresh = Kandinsky5Backbone.load(str(k5_dir))  # and our own loader (what `fym generate --lora` uses)
    fresh.load_lora(fresh.experts[0], str(path), "motion")
    with torch.no_grad():
        ours = fresh.predict(fresh.experts[0], noisy, timestep, cond)
    assert torch.allclose(ours, out, atol=1e-5, rtol=0), (ours - out).abs().max()


def test_comfyui_file_has_comfyuis_module_names_and_is_refused_here(trained, tmp_path):
    """ComfyUI's native Kandinsky 5 model names its modules as diffusers does: `diffusion_model.` + the name, with
    each module's alpha. Our loader refuses it by name (diffusers has no converter for it)."""
    k5 = trained[0]
    path = export_lora(k5, k5.experts[0], "motion", tmp_path / "motion_comfy.safetensors", "comfyui")
    assert set(load_file(str(path))) == {
        f"diffusion_model.visual_transformer_blocks.{i}.self_attention.{p}.{suffix}"
        for i in SELECTION for p in ROLES for suffix in ("lora_A.weight", "lora_B.weight", "alpha")}
    with pytest.raises(InputError, match="ComfyUI-native Kandinsky 5 LoRA"):
        k5.load_lora(k5.experts[0], str(path), "other")
    with pytest.raises(InputError, match="is not a Kandinsky 5 visual self-attention projection"):
        Kandinsky5Backbone.comfyui_key("text_transformer_blocks.0.self_attention.to_query")


def test_resume_is_bit_identical(k5_dir, tmp_path):
    whole = _train_motion(k5_dir, tmp_path / "whole")[3]
    _train_motion(k5_dir, tmp_path / "run", stop_after=2)
    resumed = _train_motion(k5_dir, tmp_path / "run")[3]
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)


# -- fym end to end ---------------------------------------------------------------------------------
def test_cli_end_to_end_on_kandinsky5(k5_dir, tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({
        "model": {"dtype": "float32"}, "video": {"frames": 9, "height": 32, "width": 32, "fps": None},
        "heads": {"num_queries": 16}, "spatial": {"steps": 2, "rank": 4},
        "motion": {"steps": 2, "rank": 4, "keep_frames": 2}, "generate": {"steps": 2},
    }))
    ref = write_video(tmp_path / "ref.mp4", moving_square(9), 8)
    run = tmp_path / "run"
    ok("transfer", ref, "-p", PROMPT, "-m", k5_dir, "-o", run, "-c", settings)
    heads = json.loads((run / "heads.json").read_text())
    assert [len(layer["heads"]) for layer in heads["layers"]] == [HEADS] * LAYERS
    assert read_video(run / "samples" / "result.mp4").frames.shape == (9, 32, 32, 3)
    ok("generate", "--run", run, "--name", "again", "--seed", 1)
    assert read_video(run / "samples" / "again.mp4").frames.shape == (9, 32, 32, 3)
    for fmt, prefix in (("diffusers", "transformer.visual_transformer_blocks."),
                        ("comfyui", "diffusion_model.visual_transformer_blocks.")):
        ok("export", "--run", run, "-f", fmt)
        for adapter in ("spatial", "motion"):
            state = load_file(str(run / "export" / fmt / f"{adapter}_lora_{fmt}.safetensors"))
            assert state and all(k.startswith(prefix) for k in state), sorted(state)[:3]
