"""CogVideoX: detection, joint-attention capture against diffusers' processor, positions (RoPE and 2B's absolute
sin-cos), the v-prediction objective, masks, resume, export round trips and the CLI end to end, on tiny pipelines."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import record_attention_inputs
from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline
from safetensors.torch import load_file
from test_cli import moving_square, ok
from tiny_cogvideox import HEAD_DIM, HEADS, LAYERS, build_tiny_cogvideox_pipeline

from follow_your_motion.backbones import detect_family, detect_variant, load_backbone
from follow_your_motion.backbones.cogvideox import CogVideoXBackbone
from follow_your_motion.config import MotionSettings
from follow_your_motion.errors import InputError
from follow_your_motion.method.export import export_lora
from follow_your_motion.method.lora import add_masked_lora
from follow_your_motion.method.objective import (
    capture_sample,
    noisy_sample,
    sample_sigmas,
    sample_timesteps,
    timestep_for_sigma,
    timestep_range,
    training_sample,
    v_prediction_sample,
)
from follow_your_motion.method.train import motion_inputs, train_adapter
from follow_your_motion.precedence import resolve_config
from follow_your_motion.runs import RunDir
from follow_your_motion.transfer import Transfer
from follow_your_motion.video import read_video, write_video

PROMPT = "a tiger walks through snow"
LAYOUTS = ("5b", "2b", "1.5")
SELECTION = {0: [0], 1: [1]}  # one head of two in each layer
RANK, ALPHA = 4, 8.0  # alpha != rank: a lost alpha would change the output
COMFY_ROLES = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "attn_out"}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-cogvideox")
    return {layout: build_tiny_cogvideox_pipeline(root / layout, layout) for layout in LAYOUTS}


def _clip(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, frames, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _latents(backbone: CogVideoXBackbone, method_frames: int = 3) -> torch.Tensor:
    """Latents with `method_frames` frames of the method: latent frames on 1.0, token frames on 1.5."""
    pixel = backbone.geometry.pixel_frames(method_frames)
    latents = backbone.encode_video(_clip(pixel))
    assert latents.shape[2] == method_frames
    return latents


# -- detection, sites, recipe, geometry -------------------------------------------------------------------------


def test_detected_with_one_expert_joint_attention_sites_and_its_recipe(dirs):
    assert detect_family(str(dirs["5b"])) == "cogvideox"
    backbone = load_backbone(str(dirs["5b"]))
    assert isinstance(backbone, CogVideoXBackbone)
    assert [(e.name, e.sigma_range) for e in backbone.experts] == [("", (0.0, 1.0))]
    sites = backbone.experts[0].sites
    assert len(sites) == LAYERS
    for i, site in enumerate(sites):
        assert (site.q, site.o) == (f"transformer_blocks.{i}.attn1.to_q", f"transformer_blocks.{i}.attn1.to_out.0")
        assert (site.heads, site.head_dim, site.text_tokens, site.qk_norm) == (HEADS, HEAD_DIM, "before", "per_head")
    assert backbone.objective == "v_prediction"
    assert torch.equal(backbone.alphas_cumprod, backbone.pipe.scheduler.alphas_cumprod.float())
    cfg = resolve_config({"model": {"source": str(dirs["5b"])}})
    assert (cfg.generate.steps, cfg.generate.guidance, cfg.video.auto_frames, cfg.video.auto_size) == (
        50, 6.0, 49, (480, 720))


def test_frames_are_8k_plus_1_and_a_token_frame_is_two_latent_frames_on_1_5(dirs):
    one, one_five = load_backbone(str(dirs["5b"])), load_backbone(str(dirs["1.5"]))
    for backbone in (one, one_five):
        backbone.geometry.check(49, 32, 32)
        with pytest.raises(InputError, match=re.escape("frames must be 8k+1 (got 13; nearest valid: 9 or 17)")):
            backbone.geometry.check(13, 32, 32)
        assert backbone.geometry.min_frames == 9 and backbone.geometry.largest_valid_frames(81) == 81
    assert one.geometry.latent_frames(49) == 13 and one_five.geometry.latent_frames(81) == 11
    # 1.5: 17 frames are 5 latent frames, padded in front with the first one, packed in pairs on the channel axis
    video = _clip(17)
    raw = one_five.pipe.vae.encode(video[None]).latent_dist.mode() * one_five.pipe.vae.config.scaling_factor
    padded = torch.cat([raw[:, :, :1], raw], dim=2).permute(0, 2, 1, 3, 4)  # (1, 6, C, h, w)
    packed = one_five.encode_video(video)
    assert packed.shape == (1, 2 * raw.shape[1], 3, 4, 4)
    assert torch.equal(one_five.to_transformer_layout(packed), padded)
    assert torch.equal(one_five.to_method_layout(padded), packed)
    single = one_five.encode_video(video[:, :1])  # stage 2's single frames: one token of the frame twice
    assert single.shape[2] == 1 and torch.equal(single[:, :4], single[:, 4:])


# -- capture and positions ----------------------------------------------------------------------------------------


@pytest.fixture
def processor_qk(monkeypatch):
    """Every (query, key) that diffusers' CogVideoXAttnProcessor2_0 hands to attention (B, heads, S, d), in call
    order; its `F` is torch.nn.functional."""
    return record_attention_inputs(monkeypatch, F, "scaled_dot_product_attention")


@pytest.mark.parametrize("positions", [None, [0.0, 2.0, 5.5]], ids=["stock", "replaced"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_capture_qk_is_the_video_part_of_the_processors_q_and_k(dirs, processor_qk, layout, positions):
    """Stage 1 scores the video tokens' q and k the model attends with (after per-head norm and RoPE, with replaced
    frame positions when given), exactly as diffusers' processor computes them over [text, video]."""
    backbone = load_backbone(str(dirs[layout]))
    expert = backbone.experts[0]
    latents = _latents(backbone)
    cond = backbone.encode_prompt(PROMPT)
    frame_positions = None if positions is None else torch.tensor(positions, dtype=torch.float64)
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    processor_qk.clear()
    with torch.no_grad(), backbone.capture_qk(expert, lambda layer, q, k: captured.update({layer: (q, k)})):
        backbone.predict(expert, latents, torch.tensor([700]), cond, frame_positions)
    text = cond.tensors["text"].shape[1]
    assert len(captured) == len(processor_qk) == LAYERS
    for layer, (q, k) in captured.items():
        ref_q, ref_k = processor_qk[layer]
        assert q.shape == (1, math.prod(backbone.token_grid(latents)), HEADS, HEAD_DIM)
        assert torch.equal(q, ref_q[:, :, text:].transpose(1, 2).float()), layer
        assert torch.equal(k, ref_k[:, :, text:].transpose(1, 2).float()), layer
    if positions is not None:  # the replaced positions reach the queries (so the test above can tell)
        with torch.no_grad(), backbone.capture_qk(expert, lambda layer, q, k: captured.update({layer: (q, k)})):
            backbone.predict(expert, latents, torch.tensor([700]), cond)
        assert not torch.equal(captured[LAYERS - 1][0], processor_qk[LAYERS - 1][0][:, :, text:].transpose(1, 2))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stock_positions_are_bit_identical_and_others_change_the_output(dirs, layout):
    backbone = load_backbone(str(dirs[layout]))
    expert = backbone.experts[0]
    latents = _latents(backbone)
    cond = backbone.encode_prompt(PROMPT)
    with torch.no_grad():
        stock = backbone.predict(expert, latents, torch.tensor([500]), cond)
        same = backbone.predict(expert, latents, torch.tensor([500]), cond, torch.arange(3, dtype=torch.float64))
        moved = backbone.predict(expert, latents, torch.tensor([500]), cond, torch.tensor([0.0, 4.0, 8.0]))
    assert torch.equal(stock, same)
    assert (stock - moved).abs().max() > 1e-4
    assert backbone.experts[0].module.patch_embed.use_positional_embeddings == (layout == "2b")  # restored
    with pytest.raises(InputError, match="2 frame positions for 3 frames"):
        backbone.predict(expert, latents, torch.tensor([500]), cond, torch.tensor([0.0, 1.0]))


def test_2b_gives_each_kept_frame_the_position_embedding_it_has_in_the_whole_clip(dirs):
    """Absolute positions: the kept frames 0, 2, 4 of five, at positions 0, 2, 4, enter the first block exactly as
    those frames of the whole clip do (the ablation, positions 0, 1, 2, does not)."""
    backbone = load_backbone(str(dirs["2b"]))
    expert = backbone.experts[0]
    latents = torch.zeros(1, 4, 5, 4, 4)  # every frame's patch projection is its bias, whatever the frame count
    cond = backbone.encode_prompt(PROMPT)
    seen: list[torch.Tensor] = []
    handle = expert.module.patch_embed.register_forward_hook(lambda _m, _a, out: seen.append(out))
    kept = torch.tensor([0, 2, 4])
    with torch.no_grad():
        backbone.predict(expert, latents, torch.tensor([500]), cond)
        backbone.predict(expert, latents[:, :, kept], torch.tensor([500]), cond, kept.double())
        backbone.predict(expert, latents[:, :, kept], torch.tensor([500]), cond)
    handle.remove()
    # the forward hook records the stock output; ours is added after it, so compare what the blocks get
    text, per_frame = cond.tensors["text"].shape[1], 2 * 2
    whole = seen[0][:, text:].view(1, 5, per_frame, -1)[:, kept]
    table = backbone.sincos_table(expert.module.patch_embed, backbone.to_transformer_layout(latents[:, :, kept]),
                                  kept.double())
    ours = (seen[1] + table.to(seen[1]))[:, text:].view(1, 3, per_frame, -1)
    ablation = seen[2][:, text:].view(1, 3, per_frame, -1)
    assert torch.equal(ours, whole)
    assert torch.equal(ablation[:, 0], whole[:, 0]) and not torch.equal(ablation[:, 1:], whole[:, 1:])


@pytest.mark.parametrize("layout", ["5b", "1.5"])
def test_rope_kept_frames_keep_their_rows_of_the_whole_clips_tables(dirs, layout):
    backbone = load_backbone(str(dirs[layout]))
    whole = backbone.to_transformer_layout(_latents(backbone, 5))
    kept = torch.tensor([0, 2, 4])
    sub = backbone.to_transformer_layout(backbone.to_method_layout(whole)[:, :, kept])
    for full, part in zip(backbone.rotary_tables(whole, None), backbone.rotary_tables(sub, kept.double()),
                          strict=True):
        assert torch.equal(full.view(5, 4, HEAD_DIM)[kept].reshape(-1, HEAD_DIM), part)


def test_learned_position_embeddings_refuse_other_positions(dirs):
    backbone = load_backbone(str(dirs["2b"]))
    backbone.experts[0].module.patch_embed.use_learned_positional_embeddings = True
    latents = _latents(backbone)
    with pytest.raises(InputError, match=re.escape("set motion.rope: none, or motion.keep_frames: null")):
        backbone.predict(backbone.experts[0], latents, torch.tensor([500]), backbone.encode_prompt(PROMPT),
                         torch.tensor([0.0, 2.0, 4.0]))



def test_a_shrunk_motion_clip_is_refused_before_tuning(dirs, tmp_path):
    """CogVideoX's positions are laid over a crop of its base grid (RoPE) or absolute (2B): they cannot be spaced
    out, so `motion.downsample` is refused when the run is made (nothing written), and by `predict`."""
    backbone = load_backbone(str(dirs["5b"]))
    write_video(tmp_path / "ref.mp4", moving_square(9), 8)
    cfg = resolve_config({"reference": str(tmp_path / "ref.mp4"), "prompt": PROMPT,
                          "model": {"source": str(dirs["5b"])}, "video": {"frames": 9, "height": 32, "width": 32},
                          "motion": {"downsample": 2}})
    with pytest.raises(InputError, match="cogvideox cannot tune on a shrunk clip"):
        Transfer(cfg, tmp_path / "run", backbone)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    with pytest.raises(InputError, match="leave motion.downsample at 1"):
        backbone.predict(backbone.experts[0], _latents(backbone), torch.tensor([500]), backbone.encode_prompt(PROMPT),
                         spatial_stride=2)


def test_an_attention_backend_is_refused_not_ignored(dirs):
    """CogVideoX's processor calls PyTorch's attention itself, so diffusers' backends would silently not apply."""
    backbone = load_backbone(str(dirs["5b"]))
    with pytest.raises(InputError, match="CogVideoXAttnProcessor2_0. do not go through diffusers' attention"):
        backbone.set_attention_backend("native")

# -- the objective ------------------------------------------------------------------------------------------------


def test_v_prediction_by_hand():
    alphas = torch.tensor([0.64, 0.36, 0.0])  # sqrt(a) = 0.8, 0.6, 0; sqrt(1 - a) = 0.6, 0.8, 1
    x0 = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])
    noise = torch.tensor([[3.0, -1.0], [3.0, -1.0], [3.0, -1.0]])
    noisy, timesteps, v = v_prediction_sample(x0, noise, torch.tensor([0, 1, 2]), alphas)
    assert torch.allclose(noisy, torch.tensor([[0.8 + 1.8, 1.6 - 0.6], [0.6 + 2.4, 1.2 - 0.8], [3.0, -1.0]]))
    assert torch.allclose(v, torch.tensor([[2.4 - 0.6, -0.8 - 1.2], [1.8 - 0.8, -0.6 - 1.6], [-1.0, -2.0]]))
    assert timesteps.tolist() == [0, 1, 2]
    # the same numbers as the pipeline's scheduler, bit for bit
    scheduler = CogVideoXDDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       prediction_type="v_prediction", rescale_betas_zero_snr=True)
    gen = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 2, 2, 2, generator=gen), torch.randn(4, 3, 2, 2, 2, generator=gen)
    t = torch.tensor([0, 250, 700, 999])
    noisy, _, v = v_prediction_sample(x0, noise, t, scheduler.alphas_cumprod.float())
    assert torch.equal(noisy, scheduler.add_noise(x0, noise, t))
    assert torch.equal(v, scheduler.get_velocity(x0, noise, t))


def test_noise_levels_map_to_timesteps():
    alphas = torch.tensor([0.9375, 0.75, 0.4375, 0.0])  # sigma_t = sqrt(1 - a_t) = 0.25, 0.5, 0.75, 1 (exactly)
    assert timestep_for_sigma(alphas, 0.7) == 2 and timestep_for_sigma(alphas, 0.3) == 0
    assert timestep_range(alphas, (0.0, 1.0)) == (0, 4)
    assert timestep_range(alphas, (0.5, 1.0)) == (1, 4) and timestep_range(alphas, (0.0, 0.75)) == (0, 2)
    with pytest.raises(InputError, match="no timestep of the schedule"):
        timestep_range(alphas, (0.8, 0.9))
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    t = sample_timesteps(8000, gen(), "uniform", 1.0, (0, 1000), 1000)
    assert t.dtype == torch.int64 and t.min() >= 0 and t.max() <= 999
    assert abs(t.float().mean().item() - 499.5) < 10  # uniform over 0..999, as CogVideoX's fine-tuning draws
    cut = sample_timesteps(8000, gen(), "uniform", 1.0, (600, 1000), 1000)
    assert cut.min() >= 600 and cut.max() <= 999


def test_the_flow_objective_is_unchanged():
    """Wan and the toy model (objective "flow") get exactly what they got before the objective was chosen."""
    flow = SimpleNamespace(objective="flow", num_train_timesteps=1000, alphas_cumprod=None)
    latents, noise = torch.randn(3, 4, 2, 2, 2), torch.randn(3, 4, 2, 2, 2)
    ours = training_sample(flow, latents, noise, torch.Generator().manual_seed(5), "logit_normal", 3.0, (0.2, 0.9))
    sigmas = sample_sigmas(3, torch.Generator().manual_seed(5), "logit_normal", 3.0, (0.2, 0.9))
    for a, b in zip(ours, noisy_sample(latents, noise, sigmas, 1000), strict=True):
        assert torch.equal(a, b)
    noisy, timesteps, recorded = capture_sample(flow, latents, noise, 0.9)
    ref = noisy_sample(latents, noise, torch.full((3,), 0.9), 1000)
    assert torch.equal(noisy, ref[0]) and torch.equal(timesteps, ref[1]) and recorded == {}


# -- training, masks, resume, export ------------------------------------------------------------------------------


def _train(backbone: CogVideoXBackbone, run: Path, stop_after: int | None = None) -> dict[str, torch.Tensor]:
    latents = _latents(backbone, 5)
    cond = backbone.encode_prompt(PROMPT)
    expert = backbone.experts[0]
    if "motion" not in expert.loaded_adapters():
        add_masked_lora(expert, "motion", SELECTION, rank=RANK, alpha=ALPHA)
    settings = MotionSettings(steps=4, keep_frames=3, lr=5e-2, rank=RANK, alpha=ALPHA, max_grad_norm=None,
                              checkpoint_every=2)
    return train_adapter(backbone, expert, RunDir(run), "motion", "motion", settings,
                         motion_inputs(latents, cond, settings), motion_weight=1.0, stop_after=stop_after)


@pytest.fixture(scope="module")
def trained(dirs, tmp_path_factory):
    """The tiny 5B with a trained motion adapter (recording the training timesteps), probe inputs and its output."""
    backbone = load_backbone(str(dirs["5b"]))
    seen: list[torch.Tensor] = []
    predict = backbone.predict

    def recording(expert, latents, timesteps, cond, *positions):
        seen.append(timesteps)
        return predict(expert, latents, timesteps, cond, *positions)

    backbone.predict = recording
    state = _train(backbone, tmp_path_factory.mktemp("cog-train") / "run")
    backbone.predict = predict
    gen = torch.Generator().manual_seed(1)
    noisy = torch.randn(1, 4, 3, 4, 4, generator=gen)
    cond = backbone.encode_prompt(PROMPT)
    with torch.no_grad(), backbone.adapters({"motion": 1.0}):
        out = backbone.predict(backbone.experts[0], noisy, torch.tensor([600]), cond)
    return SimpleNamespace(backbone=backbone, state=state, timesteps=seen, noisy=noisy, cond=cond, out=out)


def test_training_uses_integer_timesteps_and_keeps_head_masks_exact(trained):
    assert len(trained.timesteps) == 4
    assert all(t.dtype == torch.int64 and 0 <= int(t) < 1000 for t in trained.timesteps)
    for layer, selected in SELECTION.items():
        for proj in COMFY_ROLES:
            a = trained.state[f"transformer_blocks.{layer}.attn1.{proj}.lora_A.weight"]
            b = trained.state[f"transformer_blocks.{layer}.attn1.{proj}.lora_B.weight"]
            for head in range(HEADS):
                cut = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
                block = a[:, cut] if proj == "to_out.0" else b[cut]
                assert (block.abs().sum() > 0) == (head in selected), (layer, proj, head)


def test_resume_is_bit_identical(trained, dirs, tmp_path):
    backbone = load_backbone(str(dirs["5b"]))
    _train(backbone, tmp_path / "run", stop_after=2)
    again = load_backbone(str(dirs["5b"]))
    state = _train(again, tmp_path / "run")
    assert state.keys() == trained.state.keys()
    assert all(torch.equal(state[k], trained.state[k]) for k in state)


def _pipe_output(pipe: CogVideoXPipeline, backbone: CogVideoXBackbone, noisy, cond) -> torch.Tensor:
    """diffusers' own transformer on the probe, with the pipeline's own RoPE tables."""
    hidden = backbone.to_transformer_layout(noisy)
    rotary = pipe._prepare_rotary_positional_embeddings(32, 32, hidden.shape[1], torch.device("cpu"))
    with torch.no_grad():
        out = pipe.transformer(hidden_states=hidden, encoder_hidden_states=cond.tensors["text"],
                               timestep=torch.tensor([600]), image_rotary_emb=rotary, return_dict=False)[0]
    return backbone.to_method_layout(out)


def test_export_loads_into_a_fresh_pipeline_and_reproduces_the_trained_model(trained, dirs, tmp_path):
    backbone = trained.backbone
    path = export_lora(backbone, backbone.experts[0], "motion", tmp_path / "motion.safetensors")
    pipe = CogVideoXPipeline.from_pretrained(str(dirs["5b"]))
    base = _pipe_output(pipe, backbone, trained.noisy, trained.cond)
    pipe.load_lora_weights(str(path), adapter_name="x")
    loaded = _pipe_output(pipe, backbone, trained.noisy, trained.cond)
    assert torch.allclose(loaded, trained.out, atol=1e-5, rtol=0), (loaded - trained.out).abs().max()
    assert (loaded - base).abs().max() > 1e-3
    assert pipe.transformer.peft_config["x"].r == RANK and pipe.transformer.peft_config["x"].lora_alpha == ALPHA


def test_comfyui_keys_are_the_native_models_and_load_back(trained, dirs, tmp_path):
    backbone = trained.backbone
    path = export_lora(backbone, backbone.experts[0], "motion", tmp_path / "comfy.safetensors", "comfyui")
    tensors = load_file(str(path))
    expected = {f"diffusion_model.blocks.{layer}.{role}.{suffix}" for layer in SELECTION
                for role in COMFY_ROLES.values() for suffix in ("lora_A.weight", "lora_B.weight", "alpha")}
    assert set(tensors) == expected
    for key, tensor in tensors.items():
        if key.endswith("alpha"):
            assert float(tensor) == ALPHA
        else:
            module = key.removesuffix(".lora_A.weight").removesuffix(".lora_B.weight")
            which = key[len(module) + 1:]
            assert torch.equal(tensor, trained.state[f"{CogVideoXBackbone.diffusers_module(module)}.{which}"])
    with pytest.raises(InputError, match="not a CogVideoX self-attention projection"):
        CogVideoXBackbone.comfyui_key("transformer_blocks.0.ff.net.2")
    fresh = load_backbone(str(dirs["5b"]))
    fresh.load_lora(fresh.experts[0], str(path), "motion")
    with torch.no_grad(), fresh.adapters({"motion": 1.0}):
        out = fresh.predict(fresh.experts[0], trained.noisy, torch.tensor([600]), trained.cond)
    assert torch.allclose(out, trained.out, atol=1e-5, rtol=0), (out - trained.out).abs().max()


# -- the CLI ------------------------------------------------------------------------------------------------------


def test_cli_transfer_generate_export(dirs, tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({
        "model": {"dtype": "float32"}, "video": {"frames": 9, "height": 32, "width": 32},
        "heads": {"num_queries": 16},
        "spatial": {"steps": 2, "rank": 4, "grad_checkpointing": False, "mixed_precision": "no"},
        "motion": {"steps": 2, "rank": 4, "keep_frames": 2, "grad_checkpointing": False, "mixed_precision": "no"},
        "generate": {"steps": 2},
    }))
    ref = write_video(tmp_path / "ref.mp4", moving_square(9), 8)
    run = tmp_path / "run"
    ok("transfer", ref, "-p", PROMPT, "-m", dirs["5b"], "-o", run, "-c", settings)
    heads = json.loads((run / "heads.json").read_text())
    assert heads["settings"]["timestep_used"] == timestep_for_sigma(load_backbone(str(dirs["5b"])).alphas_cumprod,
                                                                    0.9)
    assert read_video(run / "samples" / "result.mp4").frames.shape == (9, 32, 32, 3)
    ok("generate", "--run", run, "-p", "a robot runs on the road", "--name", "robot")
    robot = read_video(run / "samples" / "robot.mp4").frames
    assert robot.shape == (9, 32, 32, 3)
    assert not np.array_equal(robot, read_video(run / "samples" / "result.mp4").frames)
    ok("export", "--run", run, "-f", "diffusers")
    ok("export", "--run", run, "-f", "comfyui")
    assert sorted(p.name for p in (run / "export").rglob("*.safetensors")) == [
        "motion_lora_comfyui.safetensors", "motion_lora_diffusers.safetensors",
        "spatial_lora_comfyui.safetensors", "spatial_lora_diffusers.safetensors"]
    comfy = load_file(str(run / "export" / "comfyui" / "motion_lora_comfyui.safetensors"))
    assert all(key.startswith("diffusion_model.blocks.") for key in comfy)


def test_cogvideox_1_5_has_its_own_recipe(dirs):
    """1.5 is told apart by its transformer's temporal patch and gets its model card's clip, not 1.0's."""
    assert detect_variant(str(dirs["1.5"])) == "cogvideox1.5" and detect_variant(str(dirs["5b"])) is None
    video = resolve_config({"model": {"source": str(dirs["1.5"])}}).video
    assert (video.auto_frames, video.auto_size, video.fps) == (81, (768, 1360), 16.0)
    assert resolve_config({"model": {"source": str(dirs["5b"])}}).video.auto_frames == 49
