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
from follow_your_motion.plan import CARDS, STAGES

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
    assert [s["stage"] for s in wan_plan["stages"]] == list(STAGES)
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


def test_without_a_known_model_plan_is_refused_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["plan", "-m", "someone/x", "--family", "wan"])
    assert result.exit_code == 2 and "no published configs ship for it" in result.stderr
