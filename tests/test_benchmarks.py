"""The benchmarks' cost model against hand counts and against what torch really computes, and the real-size
GPU benchmark run at a tiny size on the CPU so that it cannot rot. No wall-clock assertions."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from benchmarks import cost_model as cm
from follow_your_motion import cost

# One layer, D = 24 (2 heads of 12), FFN 40, 4 latent channels, patch 1x2x2, text 5 tokens of width 8,
# 3 frames of 2 x 3 tokens (S = 18), LoRA rank 3 on q/k/v/o.
TINY = cm.WanConfig("hand", layers=1, heads=2, head_dim=12, ffn_dim=40, text_dim=8, in_channels=4, out_channels=4,
                    freq_dim=16)
SHAPES = cm.Shapes(frames=3, rows=2, cols=3, text_length=5, rank=3)


def test_forward_flops_counted_by_hand():
    s, d, f, t, r = 18, 24, 40, 5, 3
    patch = 2 * s * (4 * 4) * d  # conv over 4 channels x 1x2x2 patch
    time = 2 * (16 * d + d * d + d * 6 * d)  # time embedder (2 linears) + the 6-way projection
    text = 2 * t * (8 * d + d * d)
    out = 2 * s * d * (4 * 4)
    self_proj = 4 * 2 * s * d * d
    cross_proj = 2 * 2 * s * d * d + 2 * 2 * t * d * d
    ffn = 2 * 2 * s * d * f
    attention = 2 * (2 * s * s * d) + 2 * (2 * s * t * d)  # q k^T and p v, self and cross
    lora = 4 * (2 * s * d * r + 2 * s * r * d)
    flops = cm.forward_flops(TINY, SHAPES)
    assert flops.linear == patch + time + text + out + self_proj + cross_proj + ffn == 249_216
    assert flops.attention == attention == 39_744
    assert flops.lora == lora == 20_736
    assert flops.total == 309_696


def test_training_step_flops_counted_by_hand():
    s, d, f, t, r = 18, 24, 40, 5, 3
    forward = cm.forward_flops(TINY, SHAPES).total
    # Block 0's q/k/v input is a constant: no input gradient there; o, cross q/o, FFN and the output projection
    # take one input gradient each; text k/v none.
    linear = 2 * s * d * d + 2 * (2 * s * d * d) + 2 * (2 * s * d * f) + 2 * s * d * 16
    attention = 5 * (2 * (2 * s * s * d) + 2 * (2 * s * t * d)) // 2  # 4 gradient products + recomputed q k^T
    lora = 3 * (3 * 2 * s * d * r) + 4 * 2 * s * d * r  # q/k/v: dB, d(xA), dA; o: also dx
    step = cm.train_flops(TINY, SHAPES)
    assert step.total - forward == linear + attention + lora == 278_208
    block_forward = cost.block_flops(TINY, SHAPES).total
    assert cm.train_flops(TINY, SHAPES, checkpointing=True).total == step.total + block_forward
    no_lora = replace(SHAPES, rank=0)
    assert cm.train_flops(TINY, no_lora) == cm.forward_flops(TINY, no_lora)  # nothing to train: a forward


def _flop_counter():
    """FlopCounterMode, also counting the CPU flash-attention kernels it has no formula for."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    mapping = {
        aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(
            q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward: (
            lambda g, q, k, v, *a, out_shape=None, **kw: sdpa_backward_flop_count(g, q, k, v)),
    }
    return FlopCounterMode(display=False, custom_mapping=mapping)


def _tiny_model(cfg: cm.WanConfig, rank: int, frozen_rank: int):
    """The diffusers transformer with a trained LoRA and a frozen one (stage 3) on every layer's q/k/v/o."""
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig

    torch.manual_seed(0)
    model = WanTransformer3DModel(**cfg.transformer_kwargs(rope_max_seq_len=32)).requires_grad_(False)
    targets = [f"blocks.{i}.attn1.{p}" for i in range(cfg.layers) for p in ("to_q", "to_k", "to_v", "to_out.0")]
    model.add_adapter(LoraConfig(r=frozen_rank, lora_alpha=frozen_rank, target_modules=targets), "frozen")
    model.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets), "trained")
    model.set_adapters(["frozen", "trained"])
    for name, param in model.named_parameters():
        param.requires_grad_(".trained." in name)
    return model.train()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_flops_match_what_torch_computes(checkpointing):
    cfg = replace(TINY, layers=2)
    shapes = replace(SHAPES, rank=3, frozen_rank=2)
    model = _tiny_model(cfg, shapes.rank, shapes.frozen_rank)
    if checkpointing:
        model.enable_gradient_checkpointing()
    latents = torch.randn(1, 4, 3, 4, 6)  # 3 frames of 2 x 3 tokens
    with _flop_counter() as counter:
        out = model(latents, torch.tensor([500.0]), torch.randn(1, 5, 8), return_dict=False)[0]
    assert counter.get_total_flops() == cm.forward_flops(cfg, shapes).total
    with _flop_counter() as counter:
        out.square().mean().backward()
    expected = cm.train_flops(cfg, shapes, checkpointing).total - cm.forward_flops(cfg, shapes).total
    assert counter.get_total_flops() == expected


@pytest.mark.parametrize("key", ["tiny", *cm.MODELS])
def test_parameter_count_matches_the_model(key):
    from diffusers import WanTransformer3DModel

    cfg = TINY if key == "tiny" else cm.MODELS[key]
    with torch.device("meta"):
        model = WanTransformer3DModel(**cfg.transformer_kwargs())
    assert cm.parameter_count(cfg) == sum(p.numel() for p in model.parameters())


def _saved_bytes(cfg: cm.WanConfig, shapes: cm.Shapes, dtype: str) -> int:
    """Bytes of the tensors autograd saves in a forward (parameters excluded, shared storage counted once)."""
    model = _tiny_model(cfg, shapes.rank, 1)
    model.set_adapters(["trained"])
    low = torch.bfloat16 if dtype == "bf16" else torch.float32
    for name, param in model.named_parameters():
        if ".lora_" not in name and not any(k in name for k in model._keep_in_fp32_modules):
            param.data = param.data.to(low)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    torch.manual_seed(1)
    latents = torch.randn(1, cfg.in_channels, shapes.frames, shapes.rows * 2, shapes.cols * 2, dtype=low)
    text = torch.randn(1, shapes.text_length, cfg.text_dim, dtype=low)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        model(latents, torch.tensor([500.0]), text, return_dict=False)
    return sum(seen.values())


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_block_activation_bytes_match_saved_tensors(dtype):
    cfg = cm.WanConfig("mem", layers=1, heads=3, head_dim=20, ffn_dim=72, text_dim=8, in_channels=4, out_channels=4,
                       freq_dim=16)
    shapes = cm.Shapes(frames=5, rows=3, cols=5, text_length=11, rank=6)
    one = _saved_bytes(cfg, shapes, dtype)
    two = _saved_bytes(replace(cfg, layers=2), shapes, dtype)
    assert two - one == cm.block_activation_bytes(cfg, shapes, dtype)


def test_checkpointing_keeps_one_block_and_every_block_input():
    cfg, shapes = cm.MODELS["wan2.1-1.3b"], cm.Shapes(21, 30, 52, rank=128)
    block = cm.block_activation_bytes(cfg, shapes)
    rope = 2 * shapes.tokens * cfg.head_dim * 8
    assert cm.activation_bytes(cfg, shapes, False) == 30 * block + rope
    assert cm.activation_bytes(cfg, shapes, True) == 30 * shapes.tokens * cfg.dim * 2 + block + rope


def test_sparse_dense_ratio_properties():
    for cfg in cm.MODELS.values():
        dense = cm.Shapes(21, 30, 52, text_length=0, rank=128, frozen_rank=128)
        ratios = [cm.sparse_dense_ratio(cfg, dense, k) for k in range(1, 22)]
        assert ratios[-1] == 1.0
        assert all(a < b for a, b in zip(ratios, ratios[1:], strict=False))  # more frames, more work
        for k, ratio in zip(range(1, 21), ratios, strict=False):
            # tokens drop K/F and attention (K/F)^2: the step's ratio lies between
            assert (k / 21) ** 2 < ratio < k / 21
        with_text = replace(dense, text_length=512)
        assert cm.sparse_dense_ratio(cfg, with_text, 5) > cm.sparse_dense_ratio(cfg, dense, 5)  # fixed text work


def test_head_masked_lora_costs_what_a_full_lora_costs():
    from benchmarks.common import (
        add_lora,
        half_heads,
        lora_target_names,
        predict,
        small_config,
        text_condition,
        transformer_backbone,
    )
    from benchmarks.lora_overhead import add_plain_lora

    cfg = small_config(layers=2, heads=4, head_dim=16)
    masked, plain = transformer_backbone(cfg), transformer_backbone(cfg)
    add_lora(masked, "masked", half_heads(cfg), 4)  # the method's LoRA on half of each layer's heads
    add_plain_lora(plain, "plain", lora_target_names(masked, half_heads(cfg)), 4)
    latents, cond = torch.randn(1, 16, 2, 4, 4), text_condition(torch.randn(1, 6, cfg.text_dim))
    counts = []
    for backbone in (masked, plain):
        with torch.no_grad(), _flop_counter() as counter:
            predict(backbone, latents, torch.tensor([500.0]), cond)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] == cm.forward_flops(cfg, cm.Shapes(2, 2, 2, text_length=6, rank=4)).total


def test_recipe_token_grids():
    assert cm.MODELS["wan2.1-1.3b"].token_grid(81, 480, 832) == (21, 30, 52)  # 32,760 tokens
    assert cm.MODELS["wan2.2-ti2v-5b"].token_grid(121, 704, 1280) == (31, 22, 40)
    result = cm.predictions(400.0)
    for model in result["models"].values():
        stages = {row["stage"]: row for row in model["stages"]}
        assert all(row["seconds_per_step"] > 0 for row in stages.values())
        assert 0 < model["shrunk_dense_ratio"] < model["sparse_dense_ratio"] < 1
        sparse, shrunk = (next(r for name, r in stages.items() if name.startswith("stage 3 sparse") and
                               name.endswith(end)) for end in (")", "1/2 size"))
        assert shrunk["tokens"] * 4 == sparse["tokens"]  # a quarter of the tokens per kept frame
        projected = model["projected_transfer_seconds"]
        assert projected["sparse"] - projected["shrunk"] == pytest.approx(
            sparse["steps"] * (sparse["seconds_per_step"] - shrunk["seconds_per_step"]))


def test_recipes_are_the_projects():
    from follow_your_motion.recipes import RECIPES, merge

    for key, recipe in cm.RECIPES.items():
        project = merge(RECIPES["wan"], RECIPES.get(cm.VARIANT_RECIPES[key], {}))
        assert (recipe.frames, (recipe.height, recipe.width)) == (project["video"]["auto_frames"],
                                                                 tuple(project["video"]["auto_size"]))
        assert recipe.keep == project["motion"]["keep_frames"]
        assert recipe.rank == project["motion"]["rank"] == project["spatial"]["rank"]
        assert (recipe.spatial_steps, recipe.motion_steps) == (project["spatial"]["steps"], project["motion"]["steps"])
        assert recipe.generate_steps == project["generate"]["steps"]
        assert recipe.guidance == (project["generate"]["guidance"] > 1)


def test_real_scale_runs_tiny_on_cpu(tmp_path):
    from benchmarks import real_scale

    out = tmp_path / "real_scale"
    real_scale.main(["--tiny", "--device", "cpu", "--steps", "1", "--out", str(out)])
    data = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".md").read_text().startswith("`python -m benchmarks.real_scale")
    model = data["models"]["tiny"]
    stages = {**data["encoding"], **model["stages"]}
    for name in ("encode clip", "encode frames", "encode prompt", "park encoders", "stage 1", "stage 2",
                 "stage 3 dense", "stage 3 sparse K=5", "stage 3 sparse K=5, encoders on the device",
                 "generation step", "vae decode", "encode clip at 1/2 size", "stage 3 sparse K=5, 1/2 size"):
        assert stages[name]["seconds_per_step"] > 0, name
        assert stages[name]["peak_mib"] > 0, name
    for kind in ("paper", "paper, dense stage 3", "ours", "ours, motion at 1/2 size"):
        projection = model["projections"][kind]
        for part in projection["parts"]:
            assert part["seconds"] == pytest.approx(part["steps"] * stages[part["stage"]]["seconds_per_step"])
        assert projection["total_seconds"] == pytest.approx(sum(p["seconds"] for p in projection["parts"]))
    paper = {p["stage"]: p["steps"] for p in model["projections"]["paper"]["parts"]}
    assert paper["stage 2"] == 3000 and paper["stage 3 sparse K=5"] == 2000 and paper["generation step"] == 50
    assert 0 < model["sparse_dense"]["K=5"]["predicted"] < 1
    shrunk = {p["stage"] for p in model["projections"]["ours, motion at 1/2 size"]["parts"]}
    assert "stage 3 sparse K=5, 1/2 size" in shrunk and "stage 3 sparse K=5" not in shrunk
    # every stage the plan is paired with is one the run measures (its names are real_scale's own); the tiny model
    # has no published configs, so no plan, and the planned columns are empty
    assert set(real_scale.counterparts(data["config"])) <= set(stages)
    assert model["planned"] == {} and "plan" not in data
    assert "| planned GB | measured / planned |" in out.with_suffix(".md").read_text()


def test_real_scale_pairs_each_measured_peak_with_the_plan_of_its_settings():
    from benchmarks import real_scale, real_scale_plan

    run = {"frames": 81, "height": 480, "width": 832, "rank": 128, "queries": 1024, "keep": [5], "downsample": 2,
           "keep_encoders": False}
    parts = real_scale_plan.counterparts(run)
    assert {name: p.stages for name, p in parts.items()} == {
        "encode clip": ("encode",), "stage 1": ("classify",), "stage 2": ("spatial",), "stage 3 dense": ("motion",),
        "stage 3 sparse K=5": ("motion",), "stage 3 sparse K=5, 1/2 size": ("motion",),
        "stage 3 sparse K=5, encoders on the device": ("motion",), "generation step": ("generate", "decode"),
        "vae decode": ("decode",)}
    base = {"frames": 81, "height": 480, "width": 832, "rank": 128, "queries": 1024, "keep_frames": 5,
            "downsample": 1, "keep_encoders": False}
    assert parts["stage 2"].case == parts["generation step"].case == parts["stage 3 sparse K=5"].case == base
    assert parts["stage 3 dense"].case == base | {"keep_frames": None}
    assert parts["stage 3 sparse K=5, 1/2 size"].case == base | {"downsample": 2}
    assert parts["stage 3 sparse K=5, encoders on the device"].case == base | {"keep_encoders": True}

    def plan(motion: float, scale: float = 1.0) -> dict:
        peaks = {"encode": 20e9, "classify": 5e9, "spatial": 4e9, "motion": motion, "generate": 16e9, "decode": 23e9}
        return {"stages": [{"stage": s, "peak_bytes": scale * b, "untraced": None} for s, b in peaks.items()]}

    cases = [{"model": "wan2.1-1.3b", "settings": base, "plan": plan(6e9)},
             {"model": "wan2.1-1.3b", "settings": base | {"keep_frames": None}, "plan": plan(9e9)},
             {"model": "wan2.1-14b", "settings": base, "plan": plan(6e9, scale=2.0)}]
    measured = {name: {"peak_mib": 10000.0} for name in ("build transformer", "encode clip", "stage 2",
                                                         "stage 3 dense", "stage 3 sparse K=5",
                                                         "stage 3 sparse K=5, 1/2 size", "generation step")}
    paired = real_scale_plan.pair(measured, parts, cases, "wan2.1-1.3b")
    # no counterpart (building) or no plan of those settings (the shrunk clip's): left out, not guessed
    assert set(paired) == {"encode clip", "stage 2", "stage 3 dense", "stage 3 sparse K=5", "generation step"}
    assert {name: p["planned_bytes"] for name, p in paired.items()} == {
        "encode clip": 20e9, "stage 2": 4e9, "stage 3 dense": 9e9, "stage 3 sparse K=5": 6e9, "generation step": 23e9}
    assert paired["encode clip"]["measured_over_planned"] == 0.524288  # 10000 MiB = 10,485,760,000 bytes / 20e9
    assert paired["stage 2"]["measured_over_planned"] == 2.62144
    assert real_scale_plan.pair(measured, parts, cases, "wan2.1-14b")["stage 2"]["planned_bytes"] == 8e9
    assert real_scale_plan.missing(run, ["wan2.1-1.3b"], cases) == [
        {"model": "wan2.1-1.3b", "settings": base | {"keep_encoders": True}},
        {"model": "wan2.1-1.3b", "settings": base | {"downsample": 2}}]

    record = {"timed_steps": 1, "seconds_per_step": 1.0, "peak_mib": 10000.0}
    data = {"encoding": {"encode clip": record}, "plan": {"file": "plans.json", "missing": []},
            "models": {"wan2.1-1.3b": {"stages": {"stage 2": record, "park encoders": record}, "planned": paired}}}
    table = real_scale.markdown(data)
    assert "| shared | encode clip | 1 | 1.000 | 10000 | 20.00 | 0.524 |" in table
    assert "| wan2.1-1.3b | stage 2 | 1 | 1.000 | 10000 | 4.00 | 2.621 |" in table
    assert "| wan2.1-1.3b | park encoders | 1 | 1.000 | 10000 | - | - |" in table
    assert f"- encode clip: {real_scale_plan.ENCODE}." in table


def test_real_scale_plan_file_covers_the_default_gpu_run():
    """The committed plans answer every planned stage of the default run (the recipe's rank, queries and K, the
    clip shrunk 2 times, encoders parked), so the GPU session gets its comparison without tracing anything."""
    from benchmarks import real_scale_plan
    from follow_your_motion.recipes import recipe_config

    wan = recipe_config("wan", {})
    run = {"frames": 81, "height": 480, "width": 832, "rank": wan.motion.rank, "queries": wan.heads.num_queries,
           "keep": [wan.motion.keep_frames], "downsample": 2, "keep_encoders": False}
    cases = real_scale_plan.load(real_scale_plan.PLAN_FILE)
    models = list(real_scale_plan.VARIANTS)
    assert real_scale_plan.missing(run, models, cases) == []
    parts = real_scale_plan.counterparts(run)
    measured = {name: {"peak_mib": 1024.0} for name in parts}
    for model in models:
        paired = real_scale_plan.pair(measured, parts, cases, model)
        assert set(paired) == set(parts)
        assert all(p["planned_bytes"] > 2**30 for p in paired.values())


def test_memory_plan_counts_the_published_encoders_and_adds_up():
    from benchmarks import memory_plan

    encoders = memory_plan.encoder_bytes()
    d, ff, layers = 4096, 10240, 24  # UMT5-XXL by hand: embedding, per layer q/k/v/o, gated FFN, 2 norms, bias
    assert encoders["text_encoder"] == 2 * (256384 * d + layers * (4 * d * d + 3 * d * ff + 2 * d + 32 * 64) + d)
    assert encoders["vae"] > 0
    rows = memory_plan.plan("wan2.1-1.3b", encoders)
    for row in rows:
        assert row["total"] == sum(row["parts"].values())
    by_option = {(r["stage"], r["option"]): r["total"] for r in rows}
    kept, parked = (next(v for (s, o), v in by_option.items() if s.startswith("stage 3 sparse") and o.startswith(p))
                    for p in ("bf16 base, checkpointing, encoders kept", "bf16 base, checkpointing, encoders parked"))
    assert kept - parked == sum(encoders.values())


def test_fsdp_plan_shards_through_the_project_code():
    """fsdp_plan cuts Wan2.1-1.3B with `shard_frozen_base` over a fake process group: each of 2 processes holds
    half of every weight's first axis (rounded up), the rest of the plan adds up, and one process holds it all."""
    from benchmarks import cost_model as cm
    from benchmarks import fsdp_plan

    cfg = cm.MODELS["wan2.1-1.3b"]
    model = fsdp_plan.wan_transformer(cfg)
    halves = sum(-(-p.shape[0] // 2) * p[0].numel() * p.element_size() if p.dim() else p.element_size()
                 for p in model.parameters())
    one, two = fsdp_plan.plan("wan2.1-1.3b", [1, 2])
    assert two["held"]["shard"] == halves < one["held"]["shard"] == one["held"]["total"]
    for row in (one, two):
        assert row["total"] == sum(row["parts"].values())
    assert two["parts"]["unsharded blocks"] == 2 * two["held"]["block"] and one["parts"]["unsharded blocks"] == 0


def test_stage_step_runs_tiny_and_its_ratios_are_against_dense(tmp_path):
    """The step-time benchmark at a tiny size (it shares its model and stages with compile_step): every variant
    timed, the dense variant its own reference, the cost model's prediction beside each."""
    from benchmarks import stage_step

    data = stage_step.main(["--layers", "1", "--heads", "2", "--head-dim", "16", "--frames", "4", "--keep", "4,2",
                            "--latent", "4x4", "--text-length", "8", "--steps", "1", "--repeats", "1",
                            "--out", str(tmp_path / "stage_step")])
    by_name = {r["variant"]: r for r in data["results"]}
    assert list(by_name) == ["stage 2", "stage 3, K=4", "stage 3, K=2", "stage 3, K=2, 1/2 size"]
    assert [r["tokens"] for r in by_name.values()] == [4, 16, 8, 2]
    dense = by_name["stage 3, K=4"]
    assert dense["measured_ratio"] == 1.0 and dense["predicted_ratio"] == 1.0
    assert all(r["seconds_per_step"] > 0 for r in by_name.values())
    assert 0 < by_name["stage 3, K=2, 1/2 size"]["predicted_ratio"] < by_name["stage 3, K=2"]["predicted_ratio"] < 1
    assert json.loads((tmp_path / "stage_step.json").read_text())["results"] == json.loads(json.dumps(data["results"]))


def test_the_overhead_fit_has_no_rate_where_time_does_not_grow():
    from benchmarks.stage_step import fit_overhead

    assert fit_overhead([(1e9, 2.0), (3e9, 4.0)]) == pytest.approx((1.0, 1.0), rel=1e-12)  # 1 s + 1 s/GFLOP
    assert fit_overhead([(1e9, 2.0), (3e9, 2.0)]) == (2.0, None)
    assert fit_overhead([(1e9, 2.0), (3e9, 1.0)])[1] is None



def test_leak_sources_reproduces_the_bench_and_scores_every_scale_pair(tmp_path):
    """On a finished (tiny) bench run of a textured leakage case: the (motion 1, spatial 0) sample is the bench's
    own result, so its background_leak is the bench's exactly; every scale pair is scored."""
    import yaml

    from benchmarks import leak_sources
    from follow_your_motion.bench import runner
    from follow_your_motion.bench.manifest import dump_manifest, load_manifest

    suite = load_manifest(leak_sources.SUITE)
    one = suite.model_copy(update={"cases": [c for c in suite.cases if c.id == "textured-0"]})
    path = dump_manifest(one, tmp_path / "suite.yaml")
    tiny = yaml.safe_load("{spatial: {steps: 2}, motion: {steps: 2}, generate: {steps: 2}}")
    results = runner.run_suite(load_manifest(path), ["fym"], tmp_path / "bench", overrides=tiny)
    [record] = [json.loads(line) for line in results.read_text().splitlines()]
    data = leak_sources.main([str(tmp_path / "bench"), "--suite", str(path), "--methods", "fym",
                              "--out", str(tmp_path / "leak_sources")])
    [row] = data["results"]
    assert (row["case"], row["background"], row["method"]) == ("textured-0", "textured", "fym")
    assert row["motion 1, spatial 0"] == record["metrics"]["background_leak"]
    assert all(0 <= row[f"motion {m:g}, spatial {s:g}"] <= 1 for m, s in leak_sources.SCALES)
