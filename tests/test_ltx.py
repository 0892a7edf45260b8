"""LTX-Video: detected and loaded from a pipeline directory, the numerics stage 1 and 3 rest on checked against
diffusers' own code, masks exact, exports loadable by diffusers, and `fym` end to end on a tiny LTXPipeline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import record_attention_inputs
from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline
from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_ltxv_lora_to_diffusers
from diffusers.models.transformers import transformer_ltx
from safetensors.torch import load_file
from test_cli import moving_square, ok
from tiny_ltx import HEAD_DIM, HEADS, LATENT_CHANNELS, LAYERS, build_tiny_ltx_pipeline

from follow_your_motion.backbones import detect_family, detect_variant, load_backbone
from follow_your_motion.backbones.ltx import LTXBackbone
from follow_your_motion.config import MotionSettings
from follow_your_motion.errors import InputError
from follow_your_motion.method.export import export_lora
from follow_your_motion.method.lora import add_masked_lora
from follow_your_motion.method.objective import shift_sigmas
from follow_your_motion.method.train import motion_inputs, train_adapter
from follow_your_motion.precedence import resolve_config
from follow_your_motion.runs import RunDir
from follow_your_motion.video import read_video, write_video

PROMPT = "a robot walks"
SELECTION = {0: [0, 2], 1: [3]}  # heads per layer the LoRA may touch
RANK, ALPHA = 4, 8.0  # alpha != rank: a lost alpha would change the output
ROLES = ("to_q", "to_k", "to_v", "to_out.0")


@pytest.fixture(scope="module")
def ltx_dir(tmp_path_factory) -> Path:
    return build_tiny_ltx_pipeline(tmp_path_factory.mktemp("tiny-ltx") / "pipe")


@pytest.fixture
def ltx(ltx_dir) -> LTXBackbone:
    """A freshly loaded tiny LTX backbone (adapters never leak between tests)."""
    return LTXBackbone.load(str(ltx_dir))


def _noisy(seed: int = 0, frames: int = 3) -> torch.Tensor:
    return torch.randn(1, LATENT_CHANNELS, frames, 2, 3, generator=torch.Generator().manual_seed(seed))


# -- detection, loading, geometry, encoding ---------------------------------------------------------
def test_ltx_is_detected_and_loaded_with_its_sites_and_recipe(ltx_dir):
    assert detect_family(str(ltx_dir)) == "ltx" and detect_variant(str(ltx_dir)) is None
    backbone = load_backbone(str(ltx_dir))
    assert isinstance(backbone, LTXBackbone)
    assert [(e.name, e.sigma_range) for e in backbone.experts] == [("", (0.0, 1.0))]
    transformer = backbone.experts[0].module
    assert transformer is backbone.pipe.transformer
    sites = backbone.experts[0].sites
    assert len(sites) == LAYERS
    for i, site in enumerate(sites):
        assert (site.heads, site.head_dim, site.text_tokens, site.qk_norm) == (HEADS, HEAD_DIM, "none", "across_heads")
        assert site.targets() == {role: f"transformer_blocks.{i}.attn1.{p}" for role, p in zip("qkvo", ROLES,
                                                                                             strict=True)}
        for role, name in site.targets().items():
            linear = transformer.get_submodule(name)
            assert isinstance(linear, torch.nn.Linear)
            assert (linear.in_features if role == "o" else linear.out_features) == HEADS * HEAD_DIM
    g = backbone.geometry
    assert (g.temporal_stride, g.spatial_stride, g.patch, g.size_multiple) == (8, 32, (1, 1, 1), 32)
    with pytest.raises(InputError, match=r"frames must be 8k\+1 \(got 16; nearest valid: 9 or 17\)"):
        g.check(16, 64, 64)
    cfg = resolve_config({"model": {"source": str(ltx_dir)}})
    assert (cfg.model.dtype, cfg.video.auto_frames, cfg.video.auto_size, cfg.video.fps) == ("bfloat16", 161,
                                                                                          (512, 704), 25.0)
    assert (cfg.generate.steps, cfg.generate.guidance, cfg.motion.keep_frames) == (50, 3.0, 5)


def test_flow_shift_is_the_samplers_shift_at_the_recipe_size(ltx):
    """Training noise levels are shifted as LTXPipeline's scheduler shifts its sigmas for 161 frames of 512x704
    (21 x 16 x 22 tokens, mu from calculate_shift), without the sampler's terminal stretch."""
    config = dict(ltx.pipe.scheduler.config)
    tokens = 21 * 16 * 22
    mu = config["base_shift"] + (tokens - config["base_image_seq_len"]) * (
        (config["max_shift"] - config["base_shift"]) / (config["max_image_seq_len"] - config["base_image_seq_len"]))
    assert ltx.flow_shift == pytest.approx(math.exp(mu), rel=1e-12)
    sampler = FlowMatchEulerDiscreteScheduler.from_config({**config, "shift_terminal": None})
    sigmas = np.linspace(1.0, 1 / 50, 50)
    sampler.set_timesteps(sigmas=sigmas, mu=mu)
    want = shift_sigmas(torch.tensor(sigmas), ltx.flow_shift)
    assert torch.allclose(sampler.sigmas[:-1].double(), want, atol=1e-6)


def test_training_follows_the_samplers_shift_for_the_runs_clip(ltx_dir, tmp_path, monkeypatch):
    """LTXPipeline shifts by token count, so a run tunes at the shift its own clip size samples at (17 frames of
    64x64: 3 x 2 x 2 tokens), not the recipe size's; an explicit `timestep_shift` is kept."""
    import follow_your_motion.transfer as transfer

    seen: list[tuple[str, float]] = []
    train = transfer.train_adapter

    def recording(backbone, expert, run, stage, adapter, settings, *args, **kwargs):
        seen.append((adapter, settings.timestep_shift))
        return train(backbone, expert, run, stage, adapter, settings, *args, **kwargs)

    monkeypatch.setattr(transfer, "train_adapter", recording)
    ref = write_video(tmp_path / "ref.mp4", moving_square(17, size=64), 8)
    settings = {"reference": str(ref), "prompt": PROMPT, "model": {"source": str(ltx_dir), "dtype": "float32"},
                "video": {"frames": 17, "height": 64, "width": 64, "fps": None}, "heads": {"num_queries": 12},
                "spatial": {"steps": 1, "rank": 4}, "motion": {"steps": 1, "rank": 4, "keep_frames": 2}}
    job = transfer.Transfer(resolve_config(settings), tmp_path / "run")
    job.tune_motion()
    config = dict(job.backbone.pipe.scheduler.config)
    mu = config["base_shift"] + (12 - config["base_image_seq_len"]) * (
        (config["max_shift"] - config["base_shift"]) / (config["max_image_seq_len"] - config["base_image_seq_len"]))
    assert seen == [("spatial", pytest.approx(math.exp(mu), rel=1e-12)),
                    ("motion", pytest.approx(math.exp(mu), rel=1e-12))]
    assert seen[0][1] != pytest.approx(job.backbone.flow_shift)  # the recipe size's
    seen.clear()
    settings["motion"] |= {"timestep_shift": 2.0}
    transfer.Transfer(resolve_config(settings), tmp_path / "run2").tune_motion()
    assert seen[1] == ("motion", 2.0)


def test_latents_and_prompt_are_what_the_pipeline_makes(ltx):
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(3, 17, 64, 64, generator=gen) * 2 - 1
    latents = ltx.encode_video(video)
    assert latents.shape == (1, LATENT_CHANNELS, 3, 2, 2)
    vae = ltx.pipe.vae
    with torch.no_grad():
        mode = vae.encode(video[None]).latent_dist.mode()
    mean, std = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
    assert not torch.allclose(mean, torch.zeros_like(mean))  # the tiny VAE's statistics are not the identity
    assert torch.allclose(latents, (mode - mean) / std, atol=1e-6)

    cond = ltx.encode_prompt(PROMPT)
    text, mask = cond.tensors["text"], cond.tensors["text_mask"]
    assert text.shape == (1, 128, 32) and mask.shape == (1, 128) and mask.dtype == torch.bool
    assert mask.sum() == len(PROMPT.split()) + 1  # the words and </s>
    # predict hands the mask to the transformer: what the padding holds does not matter, without the mask it does
    noisy, t = _noisy(), torch.tensor([700.0])
    padded = text.clone()
    padded[:, int(mask.sum()):] = torch.randn(padded[:, int(mask.sum()):].shape, generator=gen)
    with torch.no_grad():
        stock = ltx.predict(ltx.experts[0], noisy, t, cond)
        other_padding = ltx.predict(ltx.experts[0], noisy, t, type(cond)({"text": padded, "text_mask": mask}))
        unmasked = ltx.predict(ltx.experts[0], noisy, t, type(cond)({"text": padded,
                                                                        "text_mask": torch.ones_like(mask)}))
    assert torch.allclose(stock, other_padding, atol=1e-6, rtol=0)
    assert (stock - unmasked).abs().max() > 1e-4


def test_predict_is_one_step_of_the_pipeline(ltx):
    """The transformer is called as LTXPipeline calls it: packed tokens, timestep = sigma * 1000, grid, frame rate."""
    noisy, t = _noisy(1), torch.tensor([640.0])
    cond = ltx.encode_prompt(PROMPT)
    with torch.no_grad():
        ours = ltx.predict(ltx.experts[0], noisy, t, cond)
        theirs = ltx.pipe.transformer(
            hidden_states=LTXPipeline._pack_latents(noisy), encoder_hidden_states=cond.tensors["text"], timestep=t,
            encoder_attention_mask=cond.tensors["text_mask"], num_frames=3, height=2, width=3,
            rope_interpolation_scale=(8 / 25, 32, 32), return_dict=False)[0]
    assert torch.equal(ours, LTXPipeline._unpack_latents(theirs, 3, 2, 3))


# -- the numerics of stage 1 and 3 ----------------------------------------------------------------------
@pytest.fixture
def processor_qk(monkeypatch):
    """Every (query, key) that diffusers' LTXVideoAttnProcessor hands to attention, in call order."""
    return record_attention_inputs(monkeypatch, transformer_ltx, "dispatch_attention_fn")


@pytest.mark.parametrize("positions", [None, [0.0, 2.0, 5.5]], ids=["stock", "replaced"])
def test_capture_qk_equals_the_processor_bit_for_bit(ltx, processor_qk, positions):
    """Stage 1 scores the q and k the model attends with (after q/k norm and RoPE, and with replaced frame
    positions when given), (B, S, H, d) in frame-major order, exactly as diffusers' processor computes them."""
    noisy = _noisy()
    cond = ltx.encode_prompt(PROMPT)
    frame_positions = None if positions is None else torch.tensor(positions, dtype=torch.float64)
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad(), ltx.capture_qk(ltx.experts[0], lambda layer, q, k: captured.update({layer: (q, k)})):
        ltx.predict(ltx.experts[0], noisy, torch.tensor([700.0]), cond, frame_positions)
    self_attention = processor_qk[0::2]  # each block calls attn1 (self) then attn2 (cross-attention)
    assert len(captured) == len(self_attention) == LAYERS
    for layer, (q, k) in captured.items():
        ref_q, ref_k = self_attention[layer]
        assert q.shape == (1, 3 * 2 * 3, HEADS, HEAD_DIM) and ref_k.shape == ref_q.shape
        assert torch.equal(q, ref_q.float()) and torch.equal(k, ref_k.float()), layer
    if positions is not None:  # the replaced positions reach the rotary tables (so the test above can tell)
        with torch.no_grad(), ltx.capture_qk(ltx.experts[0], lambda layer, q, k: captured.update({layer: (q, k)})):
            ltx.predict(ltx.experts[0], noisy, torch.tensor([700.0]), cond)
        assert not torch.equal(captured[0][0], self_attention[0][0].float())


def _tables(ltx: LTXBackbone, frames: int, positions: list[float] | None = None) -> torch.Tensor:
    """cos and sin of the rotary embedding for a (frames, 2, 3) grid, as (2, frames, 2, 3, inner width)."""
    rope = ltx.experts[0].module.rope
    rope.frame_positions = None if positions is None else torch.tensor(positions, dtype=torch.float64)
    try:
        cos, sin = rope(torch.zeros(1, frames * 6, 1), frames, 2, 3, ltx.rope_interpolation_scale)
    finally:
        rope.frame_positions = None
    return torch.stack([cos, sin]).view(2, frames, 2, 3, -1)


@pytest.mark.parametrize("positions", [[0, 2, 4], [3, 7, 20], [1, 5, 9, 13, 17], [20], [4, 2, 0]])
def test_kept_frames_get_the_rows_of_the_full_table(ltx, positions):
    full = _tables(ltx, 21)  # the stock tables of a 21-latent-frame clip
    kept = _tables(ltx, len(positions), [float(p) for p in positions])
    assert torch.equal(kept, full[:, positions])
    if positions != list(range(len(positions))):
        assert not torch.equal(kept, _tables(ltx, len(positions)))


def test_fractional_positions_move_only_the_time_channels(ltx):
    """LTX's rotary channels: dim % 6 padding channels, then pairs cycling through (time, row, column); the time
    coordinate of position p is p * rope_interpolation_scale[0] / 20, mapped to [-1, 1]."""
    inner = HEADS * HEAD_DIM
    pad, n = inner % 6, inner // 6
    time_channels = [pad + 6 * j + c for j in range(n) for c in (0, 1)]
    other = [c for c in range(inner) if c not in time_channels]
    moved, stock = _tables(ltx, 2, [0.0, 2.5]), _tables(ltx, 2)
    assert torch.equal(moved[..., other], stock[..., other])
    freqs = 10000.0 ** torch.linspace(0, 1, n, dtype=torch.float64) * math.pi / 2
    angle = (freqs * (2 * 2.5 * (8 / 25) / 20 - 1)).repeat_interleave(2)
    low = slice(0, 6)  # the three lowest frequencies: angles small enough for float32 tables to be exact to 1e-4
    assert torch.allclose(moved[0, 1, 0, 0, time_channels][low].double(), angle.cos()[low], atol=1e-4)
    assert torch.allclose(moved[1, 1, 0, 0, time_channels][low].double(), angle.sin()[low], atol=1e-4)


@pytest.mark.parametrize("positions", [None, [0.0, 2.0]])
def test_spaced_tokens_get_every_second_row_and_column_of_the_full_grid(ltx, positions):
    """LTX's positions are pixel coordinates: `spatial_stride` 2 doubles the pixels per latent cell, so a (2, 3)
    grid gets the stock tables of the (4, 6) grid, every second row and column (its kept frames' rows with frame
    positions); `predict` hands the model that scale for the call."""
    rope = ltx.experts[0].module.rope
    seconds, cell, _ = ltx.rope_interpolation_scale
    frames = 2 if positions else 3
    rope.frame_positions = None if positions is None else torch.tensor(positions, dtype=torch.float64)
    try:
        spaced = torch.stack(rope(torch.zeros(1, frames * 6, 1), frames, 2, 3, (seconds, 2 * cell, 2 * cell)))
    finally:
        rope.frame_positions = None
    full = torch.stack(rope(torch.zeros(1, 3 * 24, 1), 3, 4, 6, ltx.rope_interpolation_scale)).view(2, 3, 4, 6, -1)
    rows = full[:, [0, 2] if positions else slice(None)][:, :, ::2, ::2]
    assert torch.equal(spaced.view(rows.shape), rows)
    scales = []
    handle = rope.register_forward_pre_hook(lambda _m, args: scales.append(args[4]))  # (.., rope_interpolation_scale)
    try:
        with torch.no_grad():
            ltx.predict(ltx.experts[0], _noisy(), torch.tensor([500.0]), ltx.encode_prompt(PROMPT), spatial_stride=2)
    finally:
        handle.remove()
    assert scales == [(seconds, 2 * cell, 2 * cell)]


def test_stock_positions_are_bit_identical_and_others_change_the_output(ltx):
    noisy, t = _noisy(), torch.tensor([500.0])
    cond = ltx.encode_prompt(PROMPT)
    expert = ltx.experts[0]
    with torch.no_grad():
        stock = ltx.predict(expert, noisy, t, cond)
        same = ltx.predict(expert, noisy, t, cond, torch.arange(3, dtype=torch.float64))
        moved = ltx.predict(expert, noisy, t, cond, torch.tensor([0.0, 4.0, 8.0], dtype=torch.float64))
        with pytest.raises(InputError, match="4 frame positions for 3 latent frames"):
            ltx.predict(expert, noisy, t, cond, torch.arange(4, dtype=torch.float64))
        again = ltx.predict(expert, noisy, t, cond)
    assert torch.equal(stock, same)
    assert (stock - moved).abs().max() > 1e-4
    assert torch.equal(stock, again) and expert.module.rope.frame_positions is None  # restored after a failure


def test_bfloat16_keeps_stock_positions_bit_identical_and_capture_exact(ltx_dir, processor_qk):
    """The recipe's dtype: the same guarantees with bf16 weights (q/k handed over in float32)."""
    ltx = LTXBackbone.load(str(ltx_dir), dtype=torch.bfloat16)
    noisy, t = _noisy(2), torch.tensor([300.0])
    cond = ltx.encode_prompt(PROMPT)
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with torch.no_grad():
        with ltx.capture_qk(ltx.experts[0], lambda layer, q, k: captured.update({layer: (q, k)})):
            stock = ltx.predict(ltx.experts[0], noisy, t, cond)
        same = ltx.predict(ltx.experts[0], noisy, t, cond, torch.arange(3, dtype=torch.float64))
    assert torch.equal(stock, same)
    for layer, (q, k) in captured.items():
        assert torch.equal(q, processor_qk[2 * layer][0].float()) and torch.equal(k, processor_qk[2 * layer][1].float())


def test_generate_refuses_guidance_2_and_images(ltx):
    args = {"negative_prompt": "", "num_frames": 9, "height": 32, "width": 32, "steps": 1, "guidance": 1.0,
            "seed": 0, "adapter_scales": {}}
    with pytest.raises(InputError, match="guidance_2 is the low-noise expert's guidance"):
        ltx.generate(PROMPT, guidance_2=2.0, **args)
    with pytest.raises(InputError, match="no image mode"):
        ltx.generate(PROMPT, image=np.zeros((32, 32, 3), np.uint8), **args)


# -- tuning and export ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(ltx_dir, tmp_path_factory):
    """The tiny LTX with a motion adapter trained on sparse frames, probe inputs and the adapter's output."""
    ltx = LTXBackbone.load(str(ltx_dir))
    gen = torch.Generator().manual_seed(0)
    latents = ltx.encode_video(torch.rand(3, 33, 64, 96, generator=gen) * 2 - 1)  # 5 latent frames of 2x3
    cond = ltx.encode_prompt(PROMPT)
    add_masked_lora(ltx.experts[0], "motion", SELECTION, rank=RANK, alpha=ALPHA)
    settings = MotionSettings(steps=4, keep_frames=3, lr=5e-2, rank=RANK, alpha=ALPHA, max_grad_norm=None)
    train_adapter(ltx, ltx.experts[0], RunDir(tmp_path_factory.mktemp("ltx-train") / "run"), "motion", "motion",
                  settings, motion_inputs(latents, cond, settings), motion_weight=1.0)
    noisy = 0.4 * latents + 0.6 * torch.randn(latents.shape, generator=gen)
    timestep = torch.tensor([600.0])
    with torch.no_grad(), ltx.adapters({"motion": 1.0}):
        out = ltx.predict(ltx.experts[0], noisy, timestep, cond)
    return ltx, noisy, timestep, cond, out


def test_head_masks_are_exact_after_training(trained):
    ltx = trained[0]
    transformer = ltx.experts[0].module
    for layer in range(LAYERS):
        selected = SELECTION.get(layer, [])
        for projection in ROLES:
            module = transformer.get_submodule(f"transformer_blocks.{layer}.attn1.{projection}")
            lora_a, lora_b = module.lora_A["motion"].weight, module.lora_B["motion"].weight
            for head in range(HEADS):
                part = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
                block = lora_a[:, part] if projection == "to_out.0" else lora_b[part]
                if head in selected:
                    assert block.abs().sum() > 0, (layer, projection, head)
                else:
                    assert torch.equal(block, torch.zeros_like(block)), (layer, projection, head)


def _fresh_output(ltx_dir: Path, noisy, timestep, cond, lora: Path | dict | None = None) -> torch.Tensor:
    """A fresh LTXPipeline's transformer output (with `lora` loaded by `load_lora_weights`), as the pipeline
    calls it."""
    pipe = LTXPipeline.from_pretrained(str(ltx_dir))
    if lora is not None:
        pipe.load_lora_weights(lora if isinstance(lora, dict) else str(lora), adapter_name="x")
    _, _, frames, rows, cols = noisy.shape
    with torch.no_grad():
        out = pipe.transformer(
            hidden_states=LTXPipeline._pack_latents(noisy), encoder_hidden_states=cond.tensors["text"],
            timestep=timestep, encoder_attention_mask=cond.tensors["text_mask"], num_frames=frames, height=rows,
            width=cols, rope_interpolation_scale=(8 / 25, 32, 32), return_dict=False)[0]
    return LTXPipeline._unpack_latents(out, frames, rows, cols)


def test_diffusers_file_loads_into_a_fresh_pipeline_and_reproduces_the_model(trained, ltx_dir, tmp_path):
    ltx, noisy, timestep, cond, out = trained
    path = export_lora(ltx, ltx.experts[0], "motion", tmp_path / "motion.safetensors")
    keys = set(load_file(str(path)))
    assert keys == {f"transformer.transformer_blocks.{i}.attn1.{p}.lora_{ab}.weight"
                    for i in SELECTION for p in ROLES for ab in "AB"}
    base = _fresh_output(ltx_dir, noisy, timestep, cond)
    loaded = _fresh_output(ltx_dir, noisy, timestep, cond, path)
    assert (out - base).abs().max() > 1e-3  # the trained adapter changes the model
    assert torch.allclose(loaded, out, atol=1e-5, rtol=0), (loaded - out).abs().max()


def test_comfyui_file_has_the_keys_diffusers_converter_reads(trained, ltx_dir, tmp_path):
    """ComfyUI-native keys: `diffusion_model.` + diffusers' module names (ComfyUI's LTXV model names them so),
    plus one alpha per module. diffusers' converter maps the weights onto the diffusers file's keys; its
    `load_lora_weights` refuses `.alpha` keys, so it is checked with the alpha folded in as ComfyUI applies it
    (scale alpha / rank), and through our `load_lora`, which keeps rank and alpha."""
    ltx, noisy, timestep, cond, out = trained
    comfy = load_file(str(export_lora(ltx, ltx.experts[0], "motion", tmp_path / "c.safetensors", "comfyui")))
    diffusers_file = load_file(str(export_lora(ltx, ltx.experts[0], "motion", tmp_path / "d.safetensors")))
    assert set(comfy) == {f"diffusion_model.transformer_blocks.{i}.attn1.{p}.{suffix}"
                          for i in SELECTION for p in ROLES for suffix in ("lora_A.weight", "lora_B.weight", "alpha")}
    assert all(float(v) == ALPHA for k, v in comfy.items() if k.endswith(".alpha"))
    weights = {k: v for k, v in comfy.items() if not k.endswith(".alpha")}
    converted = _convert_non_diffusers_ltxv_lora_to_diffusers(weights)
    assert converted.keys() == diffusers_file.keys()
    assert all(torch.equal(converted[k], diffusers_file[k]) for k in converted)

    folded = {k: v * ALPHA / RANK if ".lora_B." in k else v for k, v in weights.items()}
    loaded = _fresh_output(ltx_dir, noisy, timestep, cond, folded)
    assert torch.allclose(loaded, out, atol=1e-5, rtol=0), (loaded - out).abs().max()

    fresh = LTXBackbone.load(str(ltx_dir))
    fresh.load_lora(fresh.experts[0], str(tmp_path / "c.safetensors"), "motion")
    config = fresh.experts[0].module.peft_config["motion"]
    assert (config.r, config.lora_alpha) == (RANK, ALPHA)
    with torch.no_grad():
        ours = fresh.predict(fresh.experts[0], noisy, timestep, cond)
    assert torch.allclose(ours, out, atol=1e-5, rtol=0), (ours - out).abs().max()


# -- fym end to end ---------------------------------------------------------------------------------
def test_cli_end_to_end_on_ltx(ltx_dir, tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({
        "model": {"dtype": "float32"}, "video": {"frames": 17, "height": 64, "width": 64, "fps": None},
        "heads": {"num_queries": 12}, "spatial": {"steps": 2, "rank": 4},
        "motion": {"steps": 2, "rank": 4, "keep_frames": 2}, "generate": {"steps": 2},
    }))
    ref = write_video(tmp_path / "ref.mp4", moving_square(17, size=64), 8)
    run = tmp_path / "run"
    ok("transfer", ref, "-p", PROMPT, "-m", ltx_dir, "-o", run, "-c", settings)
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
            assert state and all(k.startswith(prefix) for k in state), sorted(state)[:3]


def _train_motion(ltx_dir: Path, run: Path, stop_after: int | None = None) -> dict[str, torch.Tensor]:
    """The motion LoRA of `trained`'s recipe, trained (or resumed) in `run`."""
    ltx = LTXBackbone.load(str(ltx_dir))
    gen = torch.Generator().manual_seed(0)
    latents = ltx.encode_video(torch.rand(3, 33, 64, 96, generator=gen) * 2 - 1)
    add_masked_lora(ltx.experts[0], "motion", SELECTION, rank=RANK, alpha=ALPHA)
    settings = MotionSettings(steps=4, keep_frames=3, lr=5e-2, rank=RANK, alpha=ALPHA, max_grad_norm=None,
                              checkpoint_every=1)
    return train_adapter(ltx, ltx.experts[0], RunDir(run), "motion", "motion", settings,
                         motion_inputs(latents, ltx.encode_prompt(PROMPT), settings), motion_weight=1.0,
                         stop_after=stop_after)


def test_resume_is_bit_identical(ltx_dir, tmp_path):
    whole = _train_motion(ltx_dir, tmp_path / "whole")
    _train_motion(ltx_dir, tmp_path / "run", stop_after=2)
    resumed = _train_motion(ltx_dir, tmp_path / "run")
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)
