"""`fym plan`: every stage of the job traced at real size on fake tensors from the published configs.

Each family's plan is made once per module (tracing the real sizes takes tens of seconds on this CPU) and nothing
is cached on disk; the tests check exact properties of it: the parameters on the device are the published
models', the FLOPs are what the cost model counts by hand, and the peak is where the placement rules put it."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from benchmarks import cost_model as cm
from follow_your_motion.cli import app
from follow_your_motion.config import DiTFlowSettings
from follow_your_motion.plan import CARDS, STAGES, Plan, StagePlan, fits_card, table

WAN_1_3B = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"


def plan_json(*args: str) -> dict:
    result = CliRunner().invoke(app, ["plan", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def bf16_bytes(module: torch.nn.Module) -> int:
    """What `from_pretrained(dtype=bfloat16)` holds: bf16, diffusers' `_keep_in_fp32_modules` in float32."""
    keep = getattr(module, "_keep_in_fp32_modules", None) or []
    return sum(p.numel() * (4 if any(k in name.split(".") for k in keep) else 2)
               for name, p in module.named_parameters())


@pytest.fixture(scope="module")
def wan_plan() -> dict:
    return plan_json("-m", WAN_1_3B)


def test_the_plan_names_the_job_and_every_stage(wan_plan):
    assert (wan_plan["model"], wan_plan["variant"], wan_plan["family"]) == (WAN_1_3B, "wan2.1-t2v-1.3b", "wan")
    assert wan_plan["size"] == [81, 480, 832]
    assert [s["stage"] for s in wan_plan["stages"]] == [s for s in STAGES if s != "guide"]  # no guidance
    assert all(s["expert"] is None for s in wan_plan["stages"])
    assert wan_plan["peak_bytes"] == max(s["peak_bytes"] for s in wan_plan["stages"])
    assert wan_plan["fits"] == {str(gb): wan_plan["peak_bytes"] <= gb * 1e9 for gb in CARDS}


def test_the_tuning_stages_hold_the_published_transformer_and_the_others_everything(wan_plan):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from benchmarks.memory_plan import umt5_xxl

    with torch.device("meta"):
        transformer = WanTransformer3DModel(**cm.MODELS["wan2.1-1.3b"].transformer_kwargs())
        vae = AutoencoderKLWan()
    text = sum(p.numel() * 2 for p in umt5_xxl().parameters())
    everything = bf16_bytes(transformer) + text + sum(p.numel() * 4 for p in vae.parameters())  # the VAE in float32
    stages = {s["stage"]: s for s in wan_plan["stages"]}
    assert stages["classify"]["resident_bytes"] == bf16_bytes(transformer)
    assert stages["encode"]["resident_bytes"] == everything
    lora = {name: stages[name]["resident_bytes"] - bf16_bytes(transformer) for name in ("spatial", "motion")}
    # rank 128 on q, k, v, o of every layer, float32; stage 3 holds the frozen spatial LoRA too
    one_lora = cm.lora_parameter_count(cm.MODELS["wan2.1-1.3b"], 128) * 4
    assert lora == {"spatial": one_lora, "motion": 2 * one_lora}
    assert stages["motion"]["training_state_bytes"] == 3 * one_lora  # its gradient and AdamW's two moments


def test_the_traced_flops_are_what_the_cost_model_counts(wan_plan):
    predicted = {s.name: s.flops.total for s in cm.recipe_stages(cm.MODELS["wan2.1-1.3b"], cm.RECIPES["wan2.1-1.3b"])}
    traced = {s["stage"]: s["flops"] for s in wan_plan["stages"]}
    assert traced["classify"] == predicted["stage 1 (classify)"]
    assert traced["spatial"] == predicted["stage 2 (1 frame)"]
    assert traced["motion"] == predicted["stage 3 sparse (5 of 21)"]


SMALL = ("-m", WAN_1_3B, "--frames", "9", "--size", "256x256")  # seconds to trace


@pytest.fixture(scope="module")
def small_wan_plan() -> dict:
    return plan_json(*SMALL)


@pytest.fixture(scope="module")
def ditflow_plan(tmp_path_factory) -> dict:
    """`fym guide`'s job with DiTFlow (no tuning, no LoRA), at the small size."""
    config = tmp_path_factory.mktemp("plan") / "guide.yaml"
    config.write_text("spatial: {steps: 0}\nmotion: {steps: 0}\ngenerate: {motion_scale: 0, spatial_scale: 0}\n")
    return plan_json(*SMALL, "--config", str(config), "--guide", "ditflow")


def test_ditflow_plans_its_guided_step_through_generate(ditflow_plan, small_wan_plan):
    """Generation runs `Backbone.generate` with the guidance until its first guided step: that step's capture pass
    and backward pass through the transformer, and the AMF's frame-pair scores of a query chunk against every
    frame's tokens, (1, query_chunk, F, rows x cols) in float32 (motion_flow.py), come on top of what plain
    sampling holds, even with the plain job's LoRAs on the device."""
    frames, height, width = ditflow_plan["size"]
    latent_frames, rows, cols = (frames - 1) // 4 + 1, height // 16, width // 16  # Wan: 4x8x8 VAE, 1x2x2 patches
    tokens = latent_frames * rows * cols
    frame_pair_scores = min(DiTFlowSettings().query_chunk, tokens) * tokens * 4
    stages = {s["stage"]: s for s in ditflow_plan["stages"]}
    plain = {s["stage"]: s for s in small_wan_plan["stages"]}
    assert ditflow_plan["complete"] and ditflow_plan["settings"]["guidance"] == "ditflow"
    assert list(stages) == ["encode", "classify", "guide", "generate", "decode"]
    assert stages["generate"]["peak_bytes"] >= plain["generate"]["peak_bytes"] + frame_pair_scores
    assert stages["generate"]["resident_bytes"] < plain["generate"]["resident_bytes"]  # no LoRA
    assert stages["guide"]["flops"] > 0 and stages["generate"]["repeats"] == 50


def test_an_image_to_video_plan_conditions_the_stages_as_transfer_does(tmp_path, monkeypatch):
    """Through `fym transfer`'s own functions: stage 2 conditions each single frame on itself (batch T, one latent
    frame each), and with motion.downsample 2 stage 3 is conditioned on the shrunk clip's first frame."""
    import follow_your_motion.plan as plan_module

    seen = {}

    def encode_only(self):
        self.encode()
        seen.update(full=self.cond, frames=self.frame_conditions, motion=self.motion_cond)
        return self.stages

    monkeypatch.setattr(plan_module.JobTrace, "run", encode_only)
    config = tmp_path / "downsample.yaml"
    config.write_text("motion: {downsample: 2}\n")
    plan_json("-m", "Skywork/SkyReels-V2-I2V-1.3B-540P-Diffusers", "--frames", "9", "--size", "256x256",
              "--config", str(config))
    full, frames, motion = (seen[k].tensors["image_latents"].shape for k in ("full", "frames", "motion"))
    assert full[0] == 1 and full[2:] == (3, 32, 32)  # 9 frames of 256 x 256: 3 latent frames of 32 x 32
    assert frames[0] == 9 and frames[2:] == (1, 32, 32)
    assert motion[0] == 1 and motion[2:] == (3, 16, 16)


def test_without_a_known_model_plan_is_refused_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["plan", "-m", "someone/x", "--family", "wan"])
    assert result.exit_code == 2 and "no published configs ship for it" in result.stderr


@pytest.fixture(scope="module")
def hunyuan_plan() -> dict:
    return plan_json("-m", "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v")


def test_hunyuan_encodes_and_decodes_its_recipe_clip_within_80_gb_by_default(hunyuan_plan):
    """Untiled (before VAE tiling was its default), encoding the 121 x 480 x 848 clip alone held about 140 GiB."""
    assert hunyuan_plan["size"] == [121, 480, 848] and hunyuan_plan["settings"]["vae_tiling"] is True
    stages = {s["stage"]: s for s in hunyuan_plan["stages"]}
    for name in ("encode", "decode"):
        assert stages[name]["untraced"] is None and 0 < stages[name]["peak_bytes"] <= 80e9


def test_hunyuans_transformer_stages_are_traced_through_its_fixed_shape_forward(hunyuan_plan):
    """diffusers' HunyuanVideo 1.5 transformer branches on its image tokens' and masks' values; while the plan traces
    it, its backbone runs a forward with the same values and shapes known beforehand (`on_fake_tensors`;
    test_hunyuan_video15.py checks it bit for bit against diffusers'), so every stage is traced and the plan says
    which cards it fits."""
    from diffusers import HunyuanVideo15Transformer3DModel

    from follow_your_motion.backbones.variants import BY_NAME

    with torch.device("meta"):
        transformer = HunyuanVideo15Transformer3DModel.from_config(HunyuanVideo15Transformer3DModel.load_config(
            BY_NAME["hunyuanvideo1.5-480p-t2v"].configs / "transformer"))
    weights = bf16_bytes(transformer)
    assert round(weights / 1e9, 2) == 16.65
    stages = {s["stage"]: s for s in hunyuan_plan["stages"]}
    assert hunyuan_plan["complete"] and list(stages) == [s for s in STAGES if s != "guide"]
    assert None not in hunyuan_plan["fits"].values()
    assert stages["classify"]["resident_bytes"] == weights
    for name in ("classify", "spatial", "motion", "generate"):
        stage = stages[name]
        assert stage["untraced"] is None and stage["flops"] > 0, name
        assert stage["peak_bytes"] > stage["resident_bytes"] >= weights, name
    assert stages["spatial"]["training_state_bytes"] > 0 and stages["motion"]["training_state_bytes"] > 0


def test_a_stage_that_branches_on_tensor_values_is_named_not_guessed(tmp_path, monkeypatch):
    """Without its backbone's fixed-shape forward, diffusers' HunyuanVideo 1.5 transformer reorders its text tokens
    by their masks' values, which fake tensors do not have: its stages say so (and where), and the plan says it is
    incomplete (a tiny pipeline's own configs, planned at a small size)."""
    from tiny_hunyuan_video15 import build_tiny_hunyuan_video15_pipeline

    from follow_your_motion.backbones.base import Backbone
    from follow_your_motion.backbones.hunyuan_video15 import HunyuanVideo15Backbone

    tiny = str(build_tiny_hunyuan_video15_pipeline(tmp_path / "pipe"))
    small = ("-m", tiny, "--frames", "9", "--size", "32x32")
    assert plan_json(*small)["complete"]
    monkeypatch.setattr(HunyuanVideo15Backbone, "on_fake_tensors", Backbone.on_fake_tensors)
    plan = plan_json(*small)
    stages = {s["stage"]: s for s in plan["stages"]}
    assert not plan["complete"]
    for name in ("classify", "spatial", "motion", "generate"):
        assert "branches on tensor values (transformer_hunyuan_video15.py:" in stages[name]["untraced"]
        assert stages[name]["peak_bytes"] == 0
    assert stages["encode"]["untraced"] is None and stages["decode"]["untraced"] is None


def stage(name: str, resident: float, peak: float, offload_peak: float, untraced: str | None = None) -> StagePlan:
    gb = 10**9
    return StagePlan(name, None, int(resident * gb), 0, int((peak - resident) * gb), 0, int(peak * gb),
                     int(offload_peak * gb), 10**15, 10, untraced=untraced)


def test_the_card_line_names_the_option_that_makes_the_job_fit():
    plan = Plan("m", "v", "wan", ["wan"], (81, 480, 832), {"offload": False},
                [stage("encode", 20, 30, 12), stage("decode", 20, 22, 10)])
    assert fits_card(plan, 80) == "fits 80 GB (peak 30.0 GB)"
    assert fits_card(plan, 24) == "fits 24 GB with model.offload: true (peak 12.0 GB)"
    assert fits_card(plan, 8).startswith("does not fit 8 GB: the encode stage peaks at 30.0 GB (20.0 GB parameters)")
    assert plan.fits() == {"24": False, "32": True, "48": True, "80": True, "141": True}


def test_the_table_shows_each_stage_and_says_which_could_not_be_traced():
    plan = Plan("m", "v", "hunyuan_video15", ["hunyuan_video15"], (121, 480, 848), {"offload": False},
                [stage("encode", 36, 61, 39), stage("classify", 0, 0, 0, untraced="its code branches on tensor "
                                                                                  "values (x.py:1)")])
    text = table(plan)
    assert "classify       -  not traced: its code branches on tensor values (x.py:1)" in text
    assert "peak of the stages traced 61.0 GB" in text and not plan.complete
    assert "with model.offload: true the peak is 39.0 GB: it fits 48 GB too" in text
    # what the untraced stages need is unknown: a card the traced ones fit is not claimed to fit the job
    assert plan.fits() == {"24": False, "32": False, "48": False, "80": None, "141": None}
    assert "fits 24 GB: no, 32 GB: no, 48 GB: no, 80 GB: unknown, 141 GB: unknown" in text
    assert fits_card(plan, 80) == "fits 80 GB in the stages that could be traced (the others: unknown) (peak 61.0 GB)"


@pytest.mark.parametrize("hub_id", ["Lightricks/LTX-Video", "THUDM/CogVideoX-2b"])
def test_ltx_and_cogvideox_plans_tune_their_published_transformers(hub_id):
    """At 9 frames of 256 x 256 (seconds to trace): every stage traced, the tuning stages hold the published
    transformer, and stage 3 holds its LoRA, the frozen spatial one and the trained one's gradient and moments."""
    import diffusers

    from follow_your_motion.backbones.variants import BY_HUB_ID

    plan = plan_json("-m", hub_id, "--frames", "9", "--size", "256x256")
    folder = BY_HUB_ID[hub_id].configs / "transformer"
    cls = getattr(diffusers, json.loads((folder / "config.json").read_text())["_class_name"])
    with torch.device("meta"):
        transformer = cls.from_config(cls.load_config(folder))
    stages = {s["stage"]: s for s in plan["stages"]}
    assert plan["size"] == [9, 256, 256] and plan["complete"] and list(stages) == [s for s in STAGES if s != "guide"]
    assert stages["classify"]["resident_bytes"] == bf16_bytes(transformer)
    lora = stages["spatial"]["resident_bytes"] - bf16_bytes(transformer)
    assert lora > 0 and stages["motion"]["resident_bytes"] - bf16_bytes(transformer) == 2 * lora
    assert stages["motion"]["training_state_bytes"] == 3 * lora
    assert all(s["peak_bytes"] > s["resident_bytes"] for s in plan["stages"])


def test_swapped_blocks_leave_the_device_but_two(tmp_path, small_wan_plan):
    """`model.blocks_to_swap: 20` on Wan2.1-1.3B (30 blocks): every stage holds the transformer less 18 of its blocks'
    weights (20 swapped, 2 of them on the device at a time), counted from the published config."""
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        transformer = WanTransformer3DModel(**cm.MODELS["wan2.1-1.3b"].transformer_kwargs())
    keep = transformer._keep_in_fp32_modules or []
    block = sum(p.numel() * (4 if any(k in name.split(".") for k in keep) else 2)
                for name, p in transformer.named_parameters() if name.startswith("blocks.0."))
    swap = tmp_path / "swap.yaml"
    swap.write_text("model: {blocks_to_swap: 20}\n")
    small = SMALL
    plans = [small_wan_plan, plan_json(*small, "--config", str(swap))]
    assert plans[1]["settings"]["blocks_to_swap"] == 20
    resident = [{s["stage"]: s["resident_bytes"] for s in plan["stages"]} for plan in plans]
    assert list(resident[0]) == list(resident[1]) == [s for s in STAGES if s != "guide"]
    assert {name: resident[0][name] - resident[1][name] for name in resident[0]} == dict.fromkeys(resident[0],
                                                                                                 18 * block)
    # what the unswapped plan prices swapping at, for `--gpu-memory`'s search, is what the swapped one holds less
    assert small_wan_plan["swap_savings"][19] == 18 * block and plans[1]["swap_savings"] == []
    assert [a["peak_bytes"] - b["peak_bytes"] for a, b in zip(*(p["stages"] for p in plans), strict=True)] == [
        18 * block] * len(resident[0])
    assert plans[1]["offload_peak_bytes"] == plans[1]["peak_bytes"]  # model.offload is refused beside it
    swap.write_text("model: {blocks_to_swap: 30}\n")
    result = CliRunner().invoke(app, ["plan", *small, "--config", str(swap)])
    assert result.exit_code == 2 and "this transformer has 30 blocks; swap from 1 to 29" in result.output


def test_ltx2_is_built_from_its_published_configs_as_loading_builds_it():
    """LTX-2's plan builds its pipeline from the published configs with no weights (its stages are traced in
    `benchmarks.plan_tables --only ltx-2`, minutes of CPU): the pipeline-local classes are found, and Gemma 3's
    output embedding is its input embedding, tied as `from_pretrained` ties it (an untied copy would add 2 GB)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from follow_your_motion.backbones import load_backbone
    from follow_your_motion.backbones.from_configs import modules_stay, weightless
    from follow_your_motion.backbones.variants import BY_NAME

    configs = BY_NAME["ltx-2"].configs
    with modules_stay(), weightless(configs, FakeTensorMode(allow_non_fake_inputs=True)):
        backbone = load_backbone(str(configs), "ltx2", "bfloat16", "cpu", offload=False)
    text = backbone.pipe.text_encoder
    assert text.get_output_embeddings().weight is text.get_input_embeddings().weight
    assert len({id(p) for p in text.parameters()}) == len(list(text.parameters()))
    assert type(backbone).__name__ == "LTX2Backbone" and len(backbone.experts[0].sites) == 48

