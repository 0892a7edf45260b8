"""HunyuanVideo 1.5: detection, video-token capture against diffusers' joint-attention processor, adaptive RoPE,
head masks, the LoRA file through the transformer's own diffusers loader, the guider's scale, the ComfyUI file
(fused qkv), and the CLI end to end, on a tiny pipeline."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import record_attention_inputs
from diffusers import HunyuanVideo15Pipeline
from diffusers.models.transformers import transformer_hunyuan_video15 as hv_module
from safetensors.torch import load_file
from test_cli import moving_square, ok
from tiny_hunyuan_video15 import GUIDANCE, HEAD_DIM, HEADS, LAYERS, SHIFT, build_tiny_hunyuan_video15_pipeline

from follow_your_motion.backbones import detect_family, load_backbone
from follow_your_motion.backbones import hunyuan_video15 as hv_backbone
from follow_your_motion.backbones.hunyuan_video15 import HunyuanVideo15Backbone
from follow_your_motion.config import MotionSettings
from follow_your_motion.errors import InputError
from follow_your_motion.method.export import export_lora
from follow_your_motion.method.lora import add_masked_lora
from follow_your_motion.method.train import motion_inputs, train_adapter
from follow_your_motion.precedence import resolve_config
from follow_your_motion.runs import RunDir
from follow_your_motion.video import read_video, write_video

PROMPT = "a tiger walks through snow"
SELECTION = {0: [0], 1: [1]}  # one head of two in each layer
RANK, ALPHA = 4, 8.0  # alpha != rank: a lost alpha would change the output
ROLES = ("to_q", "to_k", "to_v", "to_out.0")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_hunyuan_video15_pipeline(tmp_path_factory.mktemp("tiny-hv15") / "pipe")


@pytest.fixture(scope="module")
def backbone(tiny_dir) -> HunyuanVideo15Backbone:
    """One loaded backbone for the read-only tests (no adapters are added to it)."""
    return load_backbone(str(tiny_dir))


def _latents(backbone: HunyuanVideo15Backbone, frames: int = 3, seed: int = 0) -> torch.Tensor:
    pixel = backbone.geometry.pixel_frames(frames)
    video = torch.rand(3, pixel, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    latents = backbone.encode_video(video)
    assert latents.shape == (1, 4, frames, 2, 2)
    return latents


# -- detection, sites, recipe, geometry, conditioning ---------------------------------------------------------


def test_detected_with_one_expert_joint_attention_sites_and_its_recipe(tiny_dir, backbone):
    assert detect_family(str(tiny_dir)) == "hunyuan_video15"
    assert isinstance(backbone, HunyuanVideo15Backbone)
    assert [(e.name, e.sigma_range) for e in backbone.experts] == [("", (0.0, 1.0))]
    sites = backbone.experts[0].sites
    assert len(sites) == LAYERS == len(backbone.experts[0].module.transformer_blocks)
    for i, site in enumerate(sites):
        assert (site.q, site.k, site.v, site.o) == tuple(f"transformer_blocks.{i}.attn.{r}" for r in ROLES)
        assert (site.heads, site.head_dim, site.text_tokens, site.qk_norm) == (HEADS, HEAD_DIM, "after", "per_head")
    assert (backbone.objective, backbone.flow_shift, backbone.num_train_timesteps) == ("flow", SHIFT, 1000)
    geometry = backbone.geometry
    assert (geometry.temporal_stride, geometry.spatial_stride, geometry.patch) == (4, 16, (1, 1, 1))
    with pytest.raises(InputError, match="height must be a positive multiple of 16"):
        geometry.check(9, 24, 32)
    cfg = resolve_config({"model": {"source": str(tiny_dir)}})
    assert (cfg.model.dtype, cfg.motion.keep_frames, cfg.motion.rank, cfg.generate.steps, cfg.generate.guidance,
            cfg.video.auto_frames, cfg.video.auto_size, cfg.video.fps) == (
        "bfloat16", 7, 128, 50, 6.0, 121, (480, 848), 24.0)


def test_conditioning_carries_both_encoders_and_their_masks(backbone):
    cond = backbone.encode_prompt(PROMPT)
    ref = backbone.pipe.encode_prompt(PROMPT, device=torch.device("cpu"), dtype=backbone.dtype)
    names = ("text", "text_mask", "text_2", "text_mask_2")
    assert all(torch.equal(cond.tensors[n], r) for n, r in zip(names, ref, strict=True))
    assert int(cond.tensors["text_mask"].sum()) == len(PROMPT.split())  # the template's 108 tokens are cropped
    assert int(cond.tensors["text_mask_2"].sum()) == 0  # no quoted text: the glyph prompt is masked out
    quoted = backbone.encode_prompt('a sign that says "snow"')
    assert int(quoted.tensors["text_mask_2"].sum()) > 0
    assert cond.expand(2).tensors["text"].shape[0] == 2


def test_lora_targets_are_the_video_stream_projections_only(tiny_dir):
    fresh = load_backbone(str(tiny_dir))
    add_masked_lora(fresh.experts[0], "motion", SELECTION, rank=RANK, alpha=ALPHA)
    wrapped = {name for name, module in fresh.experts[0].module.named_modules() if hasattr(module, "lora_A")}
    assert wrapped == {f"transformer_blocks.{i}.attn.{r}" for i in range(LAYERS) for r in ROLES}
    # the text stream and the token refiner's own self-attention over the prompt are untouched
    assert not any("add_" in n or "to_add_out" in n or "context_embedder" in n for n in wrapped)


# -- capture and positions ------------------------------------------------------------------------------------


@pytest.fixture
def processor_qk(monkeypatch):
    """Every (query, key) that HunyuanVideo15AttnProcessor2_0 hands to attention (B, S, heads, d), in call order:
    it calls its module's `dispatch_attention_fn` (the token refiner's processor does not)."""
    return record_attention_inputs(monkeypatch, hv_module, "dispatch_attention_fn")


@pytest.mark.parametrize("positions", [None, [0.0, 2.0, 5.5]], ids=["stock", "replaced"])
def test_capture_qk_is_the_video_part_of_the_processors_q_and_k(backbone, processor_qk, positions):
    """Stage 1 scores the video tokens' q and k the model attends with (after per-head RMS norm and RoPE, with
    replaced frame positions when given), exactly as the processor computes them over [video, text]."""
    expert = backbone.experts[0]
    latents = _latents(backbone)
    cond = backbone.encode_prompt(PROMPT)
    frame_positions = None if positions is None else torch.tensor(positions, dtype=torch.float64)
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    processor_qk.clear()
    with torch.no_grad(), backbone.capture_qk(expert, lambda layer, q, k: captured.update({layer: (q, k)})):
        backbone.predict(expert, latents, torch.tensor([700.0]), cond, frame_positions)
    video = math.prod(backbone.token_grid(latents))
    assert len(captured) == len(processor_qk) == LAYERS
    for layer, (q, k) in captured.items():
        ref_q, ref_k = processor_qk[layer]
        assert ref_q.shape[1] > video  # text tokens follow the video tokens
        assert q.shape == (1, video, HEADS, HEAD_DIM)
        assert torch.equal(q, ref_q[:, :video].float()), layer
        assert torch.equal(k, ref_k[:, :video].float()), layer
    if positions is not None:  # the replaced positions reach the queries (so the comparison above can tell)
        stock: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        with torch.no_grad(), backbone.capture_qk(expert, lambda layer, q, k: stock.update({layer: (q, k)})):
            backbone.predict(expert, latents, torch.tensor([700.0]), cond)
        assert not torch.equal(stock[0][0], captured[0][0])


def test_stock_positions_are_bit_identical_and_others_change_the_output(backbone):
    expert = backbone.experts[0]
    latents = _latents(backbone)
    cond = backbone.encode_prompt(PROMPT)
    t = torch.tensor([500.0])
    with torch.no_grad():
        stock = backbone.predict(expert, latents, t, cond)
        same = backbone.predict(expert, latents, t, cond, torch.arange(3, dtype=torch.float64))
        moved = backbone.predict(expert, latents, t, cond, torch.tensor([0.0, 4.0, 8.0]))
    assert torch.equal(stock, same)
    assert (stock - moved).abs().max() > 1e-4
    assert expert.module.rope.frame_positions is None  # restored after the call
    with pytest.raises(InputError, match="2 frame positions for 3 frames"):
        backbone.predict(expert, latents, t, cond, torch.tensor([0.0, 1.0]))


def test_kept_frames_keep_their_rows_of_the_whole_clips_rope_tables(backbone):
    rope = backbone.experts[0].module.rope
    whole = torch.zeros(1, 9, 5, 2, 2)
    kept = torch.tensor([0, 2, 4])
    full = rope(whole)
    rope.frame_positions = kept.double()
    try:
        part = rope(whole[:, :, kept])
    finally:
        rope.frame_positions = None
    for f, p in zip(full, part, strict=True):
        assert torch.equal(f.view(5, 4, -1)[kept].reshape(-1, f.shape[-1]), p)


def test_spaced_tokens_get_every_second_row_and_column_of_the_full_grid(backbone):
    """`spatial_stride` 2 (stage 3 on a clip shrunk twice): the stock tables of the twice-larger grid, every
    second row and column; with kept frames, their rows of it too. `predict` sets it for one call only."""
    expert = backbone.experts[0]
    rope = expert.module.rope
    small, full = torch.zeros(1, 9, 3, 2, 3), torch.zeros(1, 9, 3, 4, 6)
    stock = torch.stack(rope(full)).view(2, 3, 4, 6, -1)
    kept = torch.tensor([0, 2])
    rope.spatial_stride = 2
    try:
        spaced = torch.stack(rope(small)).view(2, 3, 2, 3, -1)
        rope.frame_positions = kept.double()
        both = torch.stack(rope(small[:, :, kept])).view(2, 2, 2, 3, -1)
    finally:
        rope.frame_positions, rope.spatial_stride = None, 1
    assert torch.equal(spaced, stock[:, :, ::2, ::2])
    assert torch.equal(both, stock[:, kept][:, :, ::2, ::2])
    assert not torch.equal(spaced, torch.stack(rope(small)).view(2, 3, 2, 3, -1))
    latents, cond, t = _latents(backbone), backbone.encode_prompt(PROMPT), torch.tensor([500.0])
    with torch.no_grad():
        moved = backbone.predict(expert, latents, t, cond, spatial_stride=2)
        stock_out = backbone.predict(expert, latents, t, cond)
    assert (moved - stock_out).abs().max() > 1e-4 and rope.spatial_stride == 1


# -- tracing on fake tensors (`fym plan`) ----------------------------------------------------------------------------


def _transformer_inputs(backbone: HunyuanVideo15Backbone, image: bool) -> dict:
    """A step's inputs for a batch of two prompts with different masks: one quotes text (valid byT5 tokens), and
    one of the Qwen masks has a hole (each group of tokens must keep its order); zero image tokens (text-to-video)
    or random ones."""
    conds = [backbone.encode_prompt(PROMPT).tensors, backbone.encode_prompt('a dog runs by a sign "snow"').tensors]
    text, text_mask, text_2, text_mask_2 = (torch.cat([c[k] for c in conds])
                                            for k in ("text", "text_mask", "text_2", "text_mask_2"))
    text_mask[1, 1] = 0
    assert 0 < int(text_mask_2[1].sum()) < text_mask_2.shape[1] and int(text_mask_2[0].sum()) == 0
    generator = torch.Generator().manual_seed(3)
    config = backbone.experts[0].module.config
    shape = (2, 729, config.image_embed_dim)
    images = torch.randn(shape, generator=generator) if image else torch.zeros(shape)
    return {"hidden_states": torch.randn(2, config.in_channels, 2, 2, 2, generator=generator).to(backbone.dtype),
            "timestep": torch.tensor([600.0, 600.0]).to(backbone.dtype), "encoder_hidden_states": text,
            "encoder_attention_mask": text_mask, "encoder_hidden_states_2": text_2,
            "encoder_attention_mask_2": text_mask_2, "image_embeds": images.to(backbone.dtype), "return_dict": False}


def _run(transformer, inputs: dict) -> list[torch.Tensor]:
    """What the first block is given (video and text tokens, the time embedding, the joint mask: the text tokens'
    order, values and mask as the forward made them), the output, and the gradient of the input."""
    hidden = inputs["hidden_states"].clone().requires_grad_()
    seen = []
    hook = transformer.transformer_blocks[0].register_forward_pre_hook(
        lambda module, args: seen.extend(a.detach() for a in args[:4]))
    try:
        out = transformer(**inputs | {"hidden_states": hidden})[0]
    finally:
        hook.remove()
    out.square().sum().backward()
    return [*seen, out.detach(), hidden.grad]


@pytest.mark.parametrize("image", [False, True], ids=["text-only", "image"])
def test_the_forward_fym_plan_traces_computes_what_diffusers_does_bit_for_bit(backbone, image):
    """`fym plan` runs the transformer on fake tensors through `fixed_shape_forward` (its shapes known without the
    masks' values); on real tensors it gives the blocks diffusers' own joint text tokens and mask, and gives its
    outputs and gradients, exactly, with and without image tokens and gradient checkpointing, so what the plan
    traces is the real computation."""
    transformer = backbone.experts[0].module
    inputs = _transformer_inputs(backbone, image)
    for checkpointing in (False, True):
        if checkpointing:
            transformer.enable_gradient_checkpointing()
        try:
            stock = _run(transformer, inputs)
            with backbone.on_fake_tensors():
                assert transformer.forward.__func__ is hv_backbone.fake_forward  # fixed_shape_forward on real inputs
                traced = _run(transformer, inputs)
        finally:
            transformer.disable_gradient_checkpointing()
        assert len(stock) == len(traced) == 6
        for i, (a, b) in enumerate(zip(stock, traced, strict=True)):
            assert a.dtype == b.dtype and torch.equal(a, b), (checkpointing, i)
    out = stock[-2]
    assert "forward" not in vars(transformer)  # diffusers' own forward again
    with torch.no_grad():  # the inputs reach the output: the masks' hole, and the image tokens where given
        holed = dict(inputs, encoder_attention_mask=inputs["encoder_attention_mask"].clone())
        holed["encoder_attention_mask"][1, 1] = 1
        assert not torch.equal(transformer(**inputs)[0][1], transformer(**holed)[0][1])
        if image:
            assert not torch.equal(out, transformer(**inputs | {"image_embeds": inputs["image_embeds"] * 2})[0])


# -- training, masks, the LoRA file -----------------------------------------------------------------------------


def _train(backbone: HunyuanVideo15Backbone, run: Path, stop_after: int | None = None) -> dict[str, torch.Tensor]:
    expert = backbone.experts[0]
    if "motion" not in expert.loaded_adapters():
        add_masked_lora(expert, "motion", SELECTION, rank=RANK, alpha=ALPHA)
    settings = MotionSettings(steps=4, keep_frames=3, lr=5e-2, rank=RANK, alpha=ALPHA, max_grad_norm=None,
                              checkpoint_every=2)
    return train_adapter(backbone, expert, RunDir(run), "motion", "motion", settings,
                         motion_inputs(_latents(backbone, 5), backbone.encode_prompt(PROMPT), settings),
                         motion_weight=1.0, stop_after=stop_after)


@pytest.fixture(scope="module")
def trained(tiny_dir, tmp_path_factory):
    """The tiny model with a trained head-masked motion adapter, a probe input and its output."""
    backbone = load_backbone(str(tiny_dir))
    expert = backbone.experts[0]
    cond = backbone.encode_prompt(PROMPT)
    state = _train(backbone, tmp_path_factory.mktemp("hv15-train") / "run")
    noisy = torch.randn(1, 4, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), backbone.adapters({"motion": 1.0}):
        out = backbone.predict(expert, noisy, torch.tensor([600.0]), cond)
    return SimpleNamespace(backbone=backbone, state=state, noisy=noisy, cond=cond, out=out)


def test_training_keeps_head_masks_exact(trained):
    for layer, selected in SELECTION.items():
        for proj in ROLES:
            a = trained.state[f"transformer_blocks.{layer}.attn.{proj}.lora_A.weight"]
            b = trained.state[f"transformer_blocks.{layer}.attn.{proj}.lora_B.weight"]
            for head in range(HEADS):
                cut = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
                block = a[:, cut] if proj == "to_out.0" else b[cut]
                assert (block.abs().sum() > 0) == (head in selected), (layer, proj, head)


def test_resume_is_bit_identical(trained, tiny_dir, tmp_path):
    _train(load_backbone(str(tiny_dir)), tmp_path / "run", stop_after=2)
    state = _train(load_backbone(str(tiny_dir)), tmp_path / "run")
    assert state.keys() == trained.state.keys()
    assert all(torch.equal(state[k], trained.state[k]) for k in state)


def _pipe_output(pipe: HunyuanVideo15Pipeline, noisy: torch.Tensor, cond) -> torch.Tensor:
    """diffusers' own transformer on the probe, with the inputs the pipeline builds for text-to-video."""
    b, c, f, h, w = noisy.shape
    hidden = torch.cat([noisy, torch.zeros(b, c, f, h, w), torch.zeros(b, 1, f, h, w)], dim=1)
    t = cond.tensors
    with torch.no_grad():
        return pipe.transformer(
            hidden_states=hidden, timestep=torch.tensor([600.0]), encoder_hidden_states=t["text"],
            encoder_attention_mask=t["text_mask"], encoder_hidden_states_2=t["text_2"],
            encoder_attention_mask_2=t["text_mask_2"],
            image_embeds=torch.zeros(b, pipe.vision_num_semantic_tokens, pipe.transformer.config.image_embed_dim),
            return_dict=False)[0]


def test_lora_file_loads_into_a_fresh_pipeline_with_diffusers_loader_and_reproduces_the_trained_model(
        trained, tiny_dir, tmp_path):
    backbone = trained.backbone
    path = export_lora(backbone, backbone.experts[0], "motion", tmp_path / "motion.safetensors")
    keys = set(load_file(str(path)))
    assert keys == {f"transformer.{k}" for k in trained.state}
    pipe = HunyuanVideo15Pipeline.from_pretrained(str(tiny_dir))
    base = _pipe_output(pipe, trained.noisy, trained.cond)
    # diffusers' own loader (prefix "transformer"); use_safetensors makes it read the adapter config in the metadata
    pipe.transformer.load_lora_adapter(str(path), adapter_name="x", use_safetensors=True)
    loaded = _pipe_output(pipe, trained.noisy, trained.cond)
    assert torch.allclose(loaded, trained.out, atol=1e-5, rtol=0), (loaded - trained.out).abs().max()
    assert (loaded - base).abs().max() > 1e-3
    assert pipe.transformer.peft_config["x"].r == RANK and pipe.transformer.peft_config["x"].lora_alpha == ALPHA
    # and our own loader reads the same file back into a fresh backbone
    fresh = load_backbone(str(tiny_dir))
    fresh.load_lora(fresh.experts[0], str(path), "motion")
    with torch.no_grad(), fresh.adapters({"motion": 1.0}):
        out = fresh.predict(fresh.experts[0], trained.noisy, torch.tensor([600.0]), trained.cond)
    assert torch.allclose(out, trained.out, atol=1e-5, rtol=0), (out - trained.out).abs().max()


def _comfyui_patched(comfy: dict[str, torch.Tensor], weight: torch.Tensor, key: str) -> torch.Tensor:
    """What ComfyUI's LoRA patch makes of a weight: W + alpha / rank * up @ down, rank = lora_down's rows
    (comfy/weight_adapter/lora.py)."""
    down, up = comfy[f"{key}.lora_A.weight"], comfy[f"{key}.lora_B.weight"]
    return weight + float(comfy[f"{key}.alpha"]) / down.shape[0] * (up @ down)


def test_comfyui_file_fuses_qkv_as_comfyuis_model_does(trained, tiny_dir, tmp_path):
    backbone = trained.backbone
    path = export_lora(backbone, backbone.experts[0], "motion", tmp_path / "comfy.safetensors", "comfyui")
    comfy = load_file(str(path))
    assert set(comfy) == {f"diffusion_model.double_blocks.{i}.img_attn.{m}.{part}" for i in range(LAYERS)
                          for m in ("qkv", "proj") for part in ("lora_A.weight", "lora_B.weight", "alpha")}
    width = HEADS * HEAD_DIM
    for layer, selected in SELECTION.items():
        qkv = f"diffusion_model.double_blocks.{layer}.img_attn.qkv"
        assert comfy[f"{qkv}.lora_A.weight"].shape == (3 * RANK, width)
        assert comfy[f"{qkv}.lora_B.weight"].shape == (3 * width, 3 * RANK)
        assert float(comfy[f"{qkv}.alpha"]) == 3 * ALPHA  # alpha / rank stays ALPHA / RANK
        assert float(comfy[f"diffusion_model.double_blocks.{layer}.img_attn.proj.alpha"]) == ALPHA
        b = comfy[f"{qkv}.lora_B.weight"]
        for part in range(3):  # q, k, v rows of unselected heads exactly zero; selected ones trained
            for head in range(HEADS):
                rows = b[part * width + head * HEAD_DIM:part * width + (head + 1) * HEAD_DIM]
                assert (rows.abs().sum() > 0) == (head in selected), (layer, part, head)
    # a fresh model patched the way ComfyUI patches its fused weights computes what the trained adapter does
    fresh = load_backbone(str(tiny_dir))
    with torch.no_grad():
        for layer in range(LAYERS):
            attn = fresh.experts[0].module.transformer_blocks[layer].attn
            key = f"diffusion_model.double_blocks.{layer}.img_attn"
            fused = torch.cat([attn.to_q.weight, attn.to_k.weight, attn.to_v.weight])
            for part, linear in zip(_comfyui_patched(comfy, fused, f"{key}.qkv").chunk(3), (
                    attn.to_q, attn.to_k, attn.to_v), strict=True):
                linear.weight.copy_(part)
            attn.to_out[0].weight.copy_(_comfyui_patched(comfy, attn.to_out[0].weight, f"{key}.proj"))
        out = fresh.predict(fresh.experts[0], trained.noisy, torch.tensor([600.0]), trained.cond)
    assert torch.allclose(out, trained.out, atol=1e-5, rtol=0), (out - trained.out).abs().max()
    with pytest.raises(InputError, match="a ComfyUI-native file .fused qkv. is for ComfyUI"):
        backbone.load_lora(backbone.experts[0], str(path), "other")
    with pytest.raises(InputError, match="not a HunyuanVideo 1.5 video-stream attention projection"):
        HunyuanVideo15Backbone.comfyui_key("transformer_blocks.0.attn.add_q_proj")


# -- generation and the CLI -----------------------------------------------------------------------------------


def test_generate_sets_the_guiders_scale_and_restores_it(backbone):
    calls: list[int] = []
    handle = backbone.pipe.transformer.register_forward_pre_hook(lambda _m, _a: calls.append(1))
    args = {"negative_prompt": "", "num_frames": 5, "height": 32, "width": 32, "steps": 2, "seed": 0,
            "adapter_scales": {}}
    try:
        plain = backbone.generate(PROMPT, guidance=1.0, **args)
        unguided = len(calls)
        calls.clear()
        guided = backbone.generate(PROMPT, guidance=3.0, **args)
    finally:
        handle.remove()
    assert (unguided, len(calls)) == (2, 4)  # guidance 1: one pass a step; otherwise conditional + unconditional
    assert plain.shape == guided.shape == (5, 32, 32, 3) and plain.dtype == np.uint8
    assert not np.array_equal(plain, guided)
    assert backbone.pipe.guider.guidance_scale == GUIDANCE
    with pytest.raises(InputError, match="guidance_2"):
        backbone.generate(PROMPT, guidance=3.0, guidance_2=2.0, **args)


def test_cli_transfer_generate_export(tiny_dir, tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text(yaml.safe_dump({
        "model": {"dtype": "float32"}, "video": {"frames": 9, "height": 32, "width": 32},
        "heads": {"num_queries": 8},
        "spatial": {"steps": 2, "rank": 4, "grad_checkpointing": False, "mixed_precision": "no"},
        "motion": {"steps": 2, "rank": 4, "keep_frames": 2, "grad_checkpointing": False, "mixed_precision": "no"},
        "generate": {"steps": 2},
    }))
    ref = write_video(tmp_path / "ref.mp4", moving_square(9), 24)
    run = tmp_path / "run"
    ok("transfer", ref, "-p", PROMPT, "-m", tiny_dir, "-o", run, "-c", settings)
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
    assert all(key.startswith("diffusion_model.double_blocks.") for key in comfy)


def test_the_traced_forward_is_checked_against_the_diffusers_forward_it_was_written_from():
    """`fixed_shape_forward` follows diffusers 0.42's forward step for step; the bit-for-bit tests above run the tiny
    model's paths only (no timestep_r, no attention scale), so a new diffusers forward must be re-read, not assumed:
    same parameters and defaults, and the source it was written from."""
    import hashlib
    import inspect

    stock = hv_module.HunyuanVideo15Transformer3DModel.forward

    def params(f):
        return [(p.name, p.default) for p in inspect.signature(f).parameters.values()]
    assert params(stock) == params(hv_backbone.fixed_shape_forward)
    digest = hashlib.sha256(inspect.getsource(stock).encode()).hexdigest()
    assert digest == "6a119831862d5f463cc7b762d6321605401492c10a74f9cf8adf72dc1f9d343e", (
        "diffusers' HunyuanVideo15Transformer3DModel.forward changed: re-read backbones/hunyuan_video15.py's "
        "fixed_shape_forward against it, then update this digest")


def test_tracing_puts_back_the_forward_a_hook_had_set(tiny_dir):
    backbone = load_backbone(str(tiny_dir))
    transformer = backbone.experts[0].module
    wrapper = transformer.forward  # as accelerate's offload hooks set one on the instance
    transformer.forward = wrapper
    with pytest.raises(RuntimeError), backbone.on_fake_tensors():
        assert transformer.forward.__func__ is hv_backbone.fake_forward
        raise RuntimeError("a trace that fails")
    assert vars(transformer)["forward"] is wrapper
    del transformer.forward
    with backbone.on_fake_tensors():
        pass
    assert "forward" not in vars(transformer)  # diffusers' own, from the class
