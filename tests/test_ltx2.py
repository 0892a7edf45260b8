"""LTX-2: detected with its recipe, stage 1's q/k and the kept frames' positions checked against diffusers' own code,
head masks exact, the audio path untouched by the video LoRA, exports that LTX2Pipeline's loader reads and that
reproduce the tuned model, resume bit-identical, and `fym` end to end on a tiny LTX-2 pipeline."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import record_attention_inputs, train_motion, trained_output
from diffusers import LTX2Pipeline, LTX2VideoTransformer3DModel
from diffusers.models.transformers import transformer_ltx2
from safetensors.torch import load_file
from test_cli import moving_square, ok
from tiny_ltx2 import AUDIO_CHANNELS, CLI_SETTINGS, HEAD_DIM, HEADS, LATENT_CHANNELS, LAYERS, build_tiny_ltx2_pipeline

from follow_your_motion.backbones import detect_family, detect_image_mode, load_backbone
from follow_your_motion.backbones.ltx2 import LTX2Backbone, video_coords
from follow_your_motion.errors import InputError
from follow_your_motion.method.export import export_lora
from follow_your_motion.precedence import resolve_config
from follow_your_motion.video import read_video, write_video

PROMPT = "a robot walks"
SELECTION = {0: [1], 1: [0]}  # heads per layer the LoRA may touch
RANK, ALPHA = 4, 8.0  # alpha != rank: a lost alpha would change the output
ROLES = ("to_q", "to_k", "to_v", "to_out.0")


@pytest.fixture(scope="module")
def ltx2_dir(tmp_path_factory) -> Path:
    return build_tiny_ltx2_pipeline(tmp_path_factory.mktemp("tiny-ltx2") / "pipe")


@pytest.fixture
def ltx2(ltx2_dir) -> LTX2Backbone:
    """A freshly loaded tiny LTX-2 backbone (adapters never leak between tests)."""
    return LTX2Backbone.load(str(ltx2_dir))


def _noisy(seed: int = 0, frames: int = 3) -> torch.Tensor:
    return torch.randn(1, LATENT_CHANNELS, frames, 2, 3, generator=torch.Generator().manual_seed(seed))


def _audio(seed: int = 5, tokens: int = 6) -> torch.Tensor:
    return torch.randn(1, tokens, AUDIO_CHANNELS * 2, generator=torch.Generator().manual_seed(seed))


def _transformer_call(transformer, noisy: torch.Tensor, timestep: torch.Tensor, cond, audio: torch.Tensor,
                      isolate: bool = True, timestep_per_token: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The transformer called as LTX2Pipeline's denoising loop calls it (its own video and audio coordinates), on
    method-layout latents: (video in the method's layout, packed audio)."""
    _, _, f, h, w = noisy.shape
    video, audio_out = transformer(
        hidden_states=LTX2Pipeline._pack_latents(noisy), audio_hidden_states=audio,
        encoder_hidden_states=cond.tensors["text"], audio_encoder_hidden_states=cond.tensors["audio_text"],
        timestep=timestep if timestep_per_token is None else timestep_per_token, audio_timestep=timestep,
        sigma=timestep, encoder_attention_mask=cond.tensors["text_mask"],
        audio_encoder_attention_mask=cond.tensors["text_mask"], num_frames=f, height=h, width=w, fps=24.0,
        audio_num_frames=audio.shape[1], isolate_modalities=isolate, return_dict=False)
    return LTX2Pipeline._unpack_latents(video, f, h, w), audio_out


# -- detection, recipe, registry --------------------------------------------------------------------
def test_ltx2_is_detected_and_loaded_with_its_video_sites_shift_and_recipe(ltx2_dir):
    assert detect_family(str(ltx2_dir)) == "ltx2" and detect_image_mode(str(ltx2_dir)) == "optional"
    backbone = load_backbone(str(ltx2_dir))
    assert isinstance(backbone, LTX2Backbone) and isinstance(backbone.pipe, LTX2Pipeline)
    transformer = backbone.experts[0].module
    assert isinstance(transformer, LTX2VideoTransformer3DModel) and transformer is backbone.pipe.transformer
    for i, site in enumerate(backbone.experts[0].sites):
        assert site.targets() == {role: f"transformer_blocks.{i}.attn1.{p}" for role, p in zip("qkvo", ROLES,
                                                                                             strict=True)}
        assert (site.heads, site.head_dim, site.text_tokens, site.qk_norm) == (HEADS, HEAD_DIM, "none", "across_heads")
    assert len(backbone.experts[0].sites) == LAYERS and backbone.image_mode == "optional"
    g = backbone.geometry
    assert (g.temporal_stride, g.spatial_stride, g.patch) == (8, 32, (1, 1, 1))
    assert backbone.flow_shift == pytest.approx(backbone.clip_shift(121, 512, 768)) and backbone.flow_shift > 1
    cfg = resolve_config({"model": {"source": str(ltx2_dir)}})
    assert (cfg.model.family, cfg.model.dtype, cfg.video.auto_frames, cfg.video.auto_size, cfg.video.fps) == (
        "ltx2", "bfloat16", 121, (512, 768), 24.0)
    assert (cfg.motion.keep_frames, cfg.generate.steps, cfg.generate.guidance) == (4, 30, 3.0)


def test_the_hub_id_is_known_without_download():
    assert detect_family("Lightricks/LTX-2") == "ltx2" and detect_image_mode("Lightricks/LTX-2") == "optional"


@pytest.mark.parametrize(("pipeline", "named"), [
    ("LTX2ConditionPipeline", "LTX-2 conditioning (keyframes, video)"),
    ("LTX2InContextPipeline", "LTX-2 in-context (IC-LoRA)"),
    ("LTX2DFRPipeline", "LTX-2 DFR"),
    ("LTX2DFRTemporalRefinePipeline", "LTX-2 DFR temporal refinement"),
    ("LTX2HDRPipeline", "LTX-2 HDR"),
    ("LTX2LatentUpsamplePipeline", "LTX-2 latent upsampling"),
    ("LTX2VideoDiffusionDecodePipeline", "LTX-2 diffusion decoding"),
])
def test_other_ltx2_pipelines_are_refused_by_name(tmp_path, pipeline, named):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    with pytest.raises(InputError, match=re.escape(f"is a {named} pipeline ({pipeline}), which this project does not")):
        detect_family(str(tmp_path))


# -- the numerics of stage 1 and 3 ------------------------------------------------------------------
@pytest.mark.parametrize("rope_type", ["split", "interleaved"])
@pytest.mark.parametrize("positions", [None, [0.0, 2.0, 5.5]], ids=["stock", "replaced"])
def test_capture_qk_equals_the_processor_bit_for_bit(tmp_path, monkeypatch, rope_type, positions):
    """Stage 1 scores the video tokens' q and k as LTX2AudioVideoAttnProcessor attends with them (norms across
    heads, either rotation, replaced frame positions when given), and only the video self-attention's."""
    backbone = LTX2Backbone.load(str(build_tiny_ltx2_pipeline(tmp_path / "pipe", rope_type=rope_type)))
    cond = backbone.encode_prompt(PROMPT)  # before recording: the text connectors attend too
    processor_qk = record_attention_inputs(monkeypatch, transformer_ltx2, "dispatch_attention_fn")
    frame_positions = None if positions is None else torch.tensor(positions, dtype=torch.float64)
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    expert = backbone.experts[0]
    with torch.no_grad(), backbone.capture_qk(expert, lambda layer, q, k: captured.update({layer: (q, k)})):
        backbone.predict(expert, _noisy(), torch.tensor([700.0]), cond, frame_positions)
    video_self = processor_qk[0::4]  # per block: attn1, audio_attn1, attn2, audio_attn2 (no audio-video attention)
    assert len(processor_qk) == 4 * LAYERS and len(captured) == LAYERS
    for layer, (q, k) in captured.items():
        ref_q, ref_k = video_self[layer]
        assert q.shape == (1, 3 * 2 * 3, HEADS, HEAD_DIM)
        assert torch.equal(q, ref_q.float()) and torch.equal(k, ref_k.float()), layer


def test_stock_coordinates_are_the_transformers_and_kept_frames_keep_the_full_clips():
    """`video_coords` with no replacement is `prepare_video_coords` bit for bit; kept frames at their own positions
    get the full clip's rows; a shrunk clip's cells start where every s-th full-size cell does and span s cells."""
    rope = LTX2VideoTransformer3DModel(num_attention_heads=2, attention_head_dim=8, num_layers=1,
                                       audio_num_attention_heads=2, audio_attention_head_dim=4).rope
    full = rope.prepare_video_coords(2, 5, 4, 6, torch.device("cpu"), fps=24.0)
    assert torch.equal(video_coords(rope, 2, (5, 4, 6), 24.0, torch.device("cpu")), full)
    assert torch.equal(video_coords(rope, 2, (5, 4, 6), 24.0, torch.device("cpu"), torch.arange(5.0)), full)
    kept = [0, 2, 3]
    sparse = video_coords(rope, 1, (3, 4, 6), 24.0, torch.device("cpu"), torch.tensor(kept, dtype=torch.float64))
    assert torch.equal(sparse.view(3, 3, 4, 6, 2), full[:1].view(3, 5, 4, 6, 2)[:, kept])
    spaced = video_coords(rope, 1, (5, 2, 3), 24.0, torch.device("cpu"), spatial_stride=2).view(3, 5, 2, 3, 2)
    grid = full[:1].view(3, 5, 4, 6, 2)
    assert torch.equal(spaced[0], grid[0, :, ::2, ::2])  # time untouched
    assert torch.equal(spaced[1:, ..., 0], grid[1:, :, ::2, ::2, 0])  # starts of every second row and column
    assert torch.equal(spaced[1:, ..., 1] - spaced[1:, ..., 0], torch.full_like(spaced[1:, ..., 0], 64.0))
    with pytest.raises(InputError, match="2 frame positions for 5 latent frames"):
        video_coords(rope, 1, (5, 4, 6), 24.0, torch.device("cpu"), torch.tensor([0.0, 1.0]))


def test_predict_is_the_pipelines_video_step_with_the_audio_stream_cut_off(ltx2, ltx2_dir):
    """Stock positions: bit-identical to a fresh pipeline's transformer with the audio-video attention off, whatever
    audio it is given (the video never reads it then), and to the stock positions given explicitly; replaced
    positions move the output."""
    cond = ltx2.encode_prompt(PROMPT)
    noisy, t = _noisy(frames=5), torch.tensor([600.0])
    fresh = LTX2Pipeline.from_pretrained(str(ltx2_dir)).transformer
    with torch.no_grad():
        ours = ltx2.predict(ltx2.experts[0], noisy, t, cond)
        theirs, _ = _transformer_call(fresh, noisy, t, cond, _audio())
        other_audio, _ = _transformer_call(fresh, noisy, t, cond, _audio(seed=9, tokens=11))
        joint, _ = _transformer_call(fresh, noisy, t, cond, _audio(), isolate=False)
        explicit = ltx2.predict(ltx2.experts[0], noisy, t, cond, torch.arange(5, dtype=torch.float64))
        moved = ltx2.predict(ltx2.experts[0], noisy, t, cond, torch.tensor([0.0, 3.0, 6.0, 9.0, 12.0]))
    assert torch.equal(ours, theirs) and torch.equal(ours, other_audio) and torch.equal(ours, explicit)
    assert (ours - joint).abs().max() > 1e-5  # with the audio attended to, the video would depend on it
    assert (ours - moved).abs().max() > 1e-5


def test_image_condition_is_the_i2v_pipelines_clean_first_frame_with_timestep_zero(ltx2):
    image = (torch.rand(64, 96, 3, generator=torch.Generator().manual_seed(3)) * 255).byte().numpy()
    first = ltx2.encode_image(image, 9, 64, 96)
    assert first.fixed_frames == (0,) and first.tensors["first_frame"].shape == (1, LATENT_CHANNELS, 1, 2, 3)
    cond = ltx2.encode_prompt(PROMPT).merged(first)
    noisy, t = _noisy(frames=3), torch.tensor([600.0])
    placed = noisy.clone()
    placed[:, :, :1] = first.tensors["first_frame"]
    mask = torch.zeros(1, 3, 6)
    mask[:, 0] = 1.0  # LTX2ImageToVideoPipeline: timestep * (1 - conditioning_mask), per token
    with torch.no_grad():
        ours = ltx2.predict(ltx2.experts[0], noisy, t, cond)
        theirs, _ = _transformer_call(ltx2.experts[0].module, placed, t, cond, _audio(),
                                      timestep_per_token=t.unsqueeze(-1) * (1 - mask.flatten(1)))
    assert torch.equal(ours, theirs)


# -- tuning, the audio path, export -----------------------------------------------------------------
def _train_motion(ltx2_dir: Path, run: Path, stop_after: int | None = None):
    """A motion adapter on selected heads, trained (or resumed) in `run` on sparse frames of a random clip."""
    backbone = LTX2Backbone.load(str(ltx2_dir))
    clip = torch.rand(3, 33, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1  # 5 latent frames of 2x3
    return (backbone, *train_motion(backbone, clip, run, SELECTION, RANK, ALPHA, stop_after))


@pytest.fixture(scope="module")
def trained(ltx2_dir, tmp_path_factory):
    """The tiny LTX-2 with a trained motion adapter, probe inputs and the adapter's output."""
    backbone, latents, cond, _ = _train_motion(ltx2_dir, tmp_path_factory.mktemp("ltx2-train") / "run")
    return (backbone, *trained_output(backbone, latents, cond))


def test_head_masks_are_exact_and_only_video_self_attention_is_trained(trained):
    transformer = trained[0].experts[0].module
    trainable = {name.rsplit(".lora_", 1)[0] for name, p in transformer.named_parameters() if ".lora_" in name}
    assert trainable == {f"transformer_blocks.{i}.attn1.{p}" for i in range(LAYERS) for p in ROLES}
    for layer in range(LAYERS):
        for projection in ROLES:
            module = transformer.get_submodule(f"transformer_blocks.{layer}.attn1.{projection}")
            lora_a, lora_b = module.lora_A["motion"].weight, module.lora_B["motion"].weight
            for head in range(HEADS):
                part = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
                block = lora_a[:, part] if projection == "to_out.0" else lora_b[part]
                if head in SELECTION.get(layer, []):
                    assert block.abs().sum() > 0, (layer, projection, head)
                else:
                    assert torch.equal(block, torch.zeros_like(block)), (layer, projection, head)


def test_the_video_lora_never_changes_the_audio_path(trained):
    """With the trained adapter on, in the pipeline's own joint call: block 0's audio self-attention gives the base
    model's output bit for bit, and with the audio-video attention off (tuning) so does the whole audio stream; the
    video changes. With it on, the sampled audio follows the video through the video-to-audio attention."""
    backbone, noisy, timestep, cond, _ = trained
    transformer = backbone.experts[0].module
    seen: list[torch.Tensor] = []
    handle = transformer.transformer_blocks[0].audio_attn1.register_forward_hook(
        lambda module, args, output: seen.append(output.detach().clone()))
    try:
        outputs = {}
        for scale in (0.0, 1.0):
            with torch.no_grad(), backbone.adapters({"motion": scale}):
                outputs[scale] = [_transformer_call(transformer, noisy, timestep, cond, _audio(), isolate=isolate)
                                  for isolate in (False, True)]
    finally:
        handle.remove()
    (base_joint, base_cut), (lora_joint, lora_cut) = outputs[0.0], outputs[1.0]
    assert torch.equal(seen[0], seen[2]) and torch.equal(seen[1], seen[3])
    assert torch.equal(base_cut[1], lora_cut[1])
    assert (base_cut[0] - lora_cut[0]).abs().max() > 1e-4
    assert (base_joint[1] - lora_joint[1]).abs().max() > 0


def test_the_pipeline_still_returns_its_audio_with_the_lora(trained):
    backbone = trained[0]
    call = {"prompt": PROMPT, "negative_prompt": "", "num_frames": 9, "height": 64, "width": 64,
            "num_inference_steps": 2, "output_type": "np", "max_sequence_length": backbone.text_length}
    shapes = {}
    for scale in (0.0, 1.0):
        with backbone.adapters({"motion": scale}):
            out = backbone.pipe(**call, generator=torch.Generator().manual_seed(0))
        shapes[scale] = (out.frames.shape, tuple(out.audio.shape))
    assert shapes[0.0] == shapes[1.0] and shapes[1.0][1][:2] == (1, 2)


def test_exported_diffusers_file_loads_into_the_pipeline_and_reproduces_the_model(trained, ltx2_dir, tmp_path):
    """Exactly the adapted modules' keys, read by LTX2Pipeline.load_lora_weights (diffusers' own loader, nothing left
    over) into a model that gives the tuned output, as does our own loader."""
    backbone, noisy, timestep, cond, out = trained
    path = export_lora(backbone, backbone.experts[0], "motion", tmp_path / "motion.safetensors", "diffusers")
    assert set(load_file(str(path))) == {f"transformer.transformer_blocks.{i}.attn1.{p}.lora_{ab}.weight"
                                         for i in SELECTION for p in ROLES for ab in "AB"}
    pipe = LTX2Pipeline.from_pretrained(str(ltx2_dir))
    with torch.no_grad():
        base, _ = _transformer_call(pipe.transformer, noisy, timestep, cond, _audio())
        pipe.load_lora_weights(str(path), adapter_name="x")
        loaded, _ = _transformer_call(pipe.transformer, noisy, timestep, cond, _audio())
    assert {n.rsplit(".lora_", 1)[0] for n, _ in pipe.transformer.named_parameters() if ".lora_" in n} == {
        f"transformer_blocks.{i}.attn1.{p}" for i in range(LAYERS) for p in ROLES}
    assert (out - base).abs().max() > 1e-3  # the trained adapter changes the model
    assert torch.allclose(loaded, out, atol=1e-5, rtol=0), (loaded - out).abs().max()
    fresh = LTX2Backbone.load(str(ltx2_dir))  # and our own loader (what `fym generate --lora` uses)
    fresh.load_lora(fresh.experts[0], str(path), "motion")
    with torch.no_grad():
        ours = fresh.predict(fresh.experts[0], noisy, timestep, cond)
    assert torch.allclose(ours, out, atol=1e-5, rtol=0), (ours - out).abs().max()


def test_comfyui_file_has_comfyuis_module_names_and_loads_back(trained, ltx2_dir, tmp_path):
    """ComfyUI's LTX-AV model names the video self-attention as diffusers does: `diffusion_model.` + the name, with
    each module's alpha; diffusers' LTX-2 converter reads it back to the tuned model. Other modules are refused."""
    backbone, noisy, timestep, cond, out = trained
    path = export_lora(backbone, backbone.experts[0], "motion", tmp_path / "motion_comfy.safetensors", "comfyui")
    assert set(load_file(str(path))) == {
        f"diffusion_model.transformer_blocks.{i}.attn1.{p}.{suffix}"
        for i in SELECTION for p in ROLES for suffix in ("lora_A.weight", "lora_B.weight", "alpha")}
    fresh = LTX2Backbone.load(str(ltx2_dir))
    fresh.load_lora(fresh.experts[0], str(path), "motion")
    with torch.no_grad():
        ours = fresh.predict(fresh.experts[0], noisy, timestep, cond)
    assert torch.allclose(ours, out, atol=1e-5, rtol=0), (ours - out).abs().max()
    for name in ("transformer_blocks.0.audio_attn1.to_q", "transformer_blocks.0.attn2.to_q",
                 "transformer_blocks.0.video_to_audio_attn.to_k"):
        with pytest.raises(InputError, match="is not an LTX-2 video self-attention projection"):
            LTX2Backbone.comfyui_key(name)


def test_resume_is_bit_identical(ltx2_dir, tmp_path):
    whole = _train_motion(ltx2_dir, tmp_path / "whole")[3]
    _train_motion(ltx2_dir, tmp_path / "run", stop_after=2)
    resumed = _train_motion(ltx2_dir, tmp_path / "run")[3]
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)


# -- fym end to end ---------------------------------------------------------------------------------
def test_cli_end_to_end_on_ltx2(ltx2_dir, tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump(CLI_SETTINGS))
    ref = write_video(tmp_path / "ref.mp4", moving_square(17, 64), 8)
    run = tmp_path / "run"
    ok("transfer", ref, "-p", PROMPT, "-m", ltx2_dir, "-o", run, "-c", settings)
    heads = json.loads((run / "heads.json").read_text())
    assert [len(layer["heads"]) for layer in heads["layers"]] == [HEADS] * LAYERS
    assert read_video(run / "samples" / "result.mp4").frames.shape == (17, 64, 64, 3)
    ok("generate", "--run", run, "--name", "again", "--seed", 1)
    assert read_video(run / "samples" / "again.mp4").frames.shape == (17, 64, 64, 3)
    for fmt, prefix in (("diffusers", "transformer.transformer_blocks."),
                        ("comfyui", "diffusion_model.transformer_blocks.")):
        ok("export", "--run", run, "-f", fmt)
        for adapter in ("spatial", "motion"):
            state = load_file(str(run / "export" / fmt / f"{adapter}_lora_{fmt}.safetensors"))
            assert state and all(k.startswith(prefix) and ".attn1." in k for k in state), sorted(state)[:3]
