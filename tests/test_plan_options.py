"""`fym plan --gpu-memory`'s search for the options that make a job fit (`plan.options_to_fit`), on a planner
replaced by one whose peaks follow the options by rule, so every branch of the search is seen in milliseconds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import follow_your_motion.plan as plan_module
from follow_your_motion.backbones.block_swap import offloaded_bytes
from follow_your_motion.errors import InputError
from follow_your_motion.plan import Plan, StagePlan
from follow_your_motion.precedence import resolve_config
from follow_your_motion.run_settings import check_guided_sampling

GB = 10**9
WAN_1_3B = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"


def stage(name: str, resident: float, peak: float, offload_peak: float) -> StagePlan:
    return StagePlan(name, None, int(resident * GB), 0, int((peak - resident) * GB), 0, int(peak * GB),
                     int(offload_peak * GB), 10**15, 10)


@pytest.fixture
def recipe():
    return resolve_config({"model": {"source": WAN_1_3B}}, settings={"prompt": "a tiger"})


def test_the_options_that_make_a_job_fit_are_named_each_on_top_of_the_last(monkeypatch, recipe):
    """`options_to_fit` plans the job again with gradient checkpointing, then also with motion.downsample 2, prices
    model.offload on top of each, and names the first set that fits (offload, which changes no result, before the
    next option); an option the job already has is not named."""
    peaks = {(False, 1): 90, (True, 1): 50, (True, 2): 30}  # GB by (grad checkpointing, motion.downsample)

    def planned(cfg, tflops):
        peak = peaks[(cfg.motion.grad_checkpointing, cfg.motion.downsample)]
        return Plan("m", "v", "wan", ["wan"], (81, 480, 832), {"offload": False, "vae_tiling": False},
                    [stage("motion", 20, peak, peak - 15)])  # no blocks to swap

    monkeypatch.setattr(plan_module, "plan_transfer", planned)
    off = plan_module.with_settings(recipe, {"spatial": {"grad_checkpointing": False},
                                             "motion": {"grad_checkpointing": False}})
    checkpointing, downsample = (name for name, _ in plan_module.MEMORY_OPTIONS)
    assert plan_module.options_to_fit(off, 60) == ([checkpointing], 50 * GB)
    assert plan_module.options_to_fit(off, 40) == ([checkpointing, "model.offload: true"], 35 * GB)
    assert plan_module.options_to_fit(off, 32) == ([checkpointing, downsample], 30 * GB)
    assert plan_module.options_to_fit(off, 20) == ([checkpointing, downsample, "model.offload: true"], 15 * GB)
    assert plan_module.options_to_fit(off, 10) is None
    assert plan_module.options_to_fit(recipe, 32) == ([downsample], 30 * GB)  # the recipe checkpoints already
    line = plan_module.options_line(([downsample], 30 * GB), 32)
    assert line == "fits 32 GB with motion.downsample: 2 (peak 30.0 GB)"
    assert plan_module.options_line(None, 10).startswith("no option here makes it fit 10 GB (tried: ")


def rule_planner(traced: list, worse: float = 0, untraced: str | None = None):
    """A planner for a model of 20 swappable 1 GB blocks: tuning peaks at 50 GB (30 with motion.downsample 2),
    decoding at 55 GB (30 tiled); swapping N blocks takes N GB off every stage, as `fym plan` counts it, and `worse`
    GB more than priced comes back from a swapped trace. Each call appends (downsample, tiling, swapped) to
    `traced`."""
    def planned(cfg, tflops):
        m = cfg.model
        traced.append((cfg.motion.downsample, bool(m.vae_tiling), m.blocks_to_swap))
        tuning, decode = (30 if cfg.motion.downsample == 2 else 50), (30 if m.vae_tiling else 55)
        n = m.blocks_to_swap - (worse if m.blocks_to_swap else 0)
        savings = [] if m.blocks_to_swap or m.offload else [k * GB for k in range(1, 20)]
        stages = [stage("motion", 21 - n, tuning - n, tuning), stage("decode", 21 - n, decode - n, decode)]
        stages[0].untraced = untraced
        return Plan("m", "v", "wan", ["wan"], (81, 480, 832), {"offload": m.offload, "vae_tiling": bool(m.vae_tiling)},
                    stages, swap_savings=savings)
    return planned


def test_block_swapping_comes_last_with_the_fewest_blocks_and_vae_tiling_only_where_decoding_needs_it(
        monkeypatch, recipe):
    """The search swaps the fewest blocks that fit before it gives up an option that changes results (downsample),
    adds VAE tiling only where swapping alone cannot bring the decode under the card and the other stages would fit,
    confirms the count with a trace of it, and prices swapping from the unswapped plan (`Plan.swap_to_fit`,
    arithmetic: no trace per count)."""
    traced = []
    monkeypatch.setattr(plan_module, "plan_transfer", rule_planner(traced))
    downsample = plan_module.MEMORY_OPTIONS[1][0]
    assert plan_module.options_to_fit(recipe, 40) == (["model.blocks_to_swap: 15"], 40 * GB)
    assert traced == [(1, False, 0), (1, False, 15)]  # the plan, then the chosen count's confirmation
    assert plan_module.options_to_fit(recipe, 35) == (["model.vae_tiling: true", "model.blocks_to_swap: 15"], 35 * GB)
    traced.clear()
    assert plan_module.options_to_fit(recipe, 28) == (
        [downsample, "model.vae_tiling: true", "model.blocks_to_swap: 2"], 28 * GB)
    # no tiled trace of the full-size job: its tuning (50 GB, 31 with every block swapped) cannot fit 28 GB
    assert traced == [(1, False, 0), (2, False, 0), (2, True, 0), (2, True, 2)]
    assert plan_module.options_to_fit(recipe, 10) is None  # 19 blocks at most: one stays on the device
    on_offload = plan_module.with_settings(recipe, {"model": {"offload": True}})
    assert plan_module.options_to_fit(on_offload, 40) == (["model.offload: false", "model.blocks_to_swap: 15"],
                                                          40 * GB)  # swapping refuses offload: said, not implied


def test_a_job_that_refuses_swapping_costs_no_swapped_trace(monkeypatch, recipe):
    """Tuning without gradient checkpointing and DiTFlow's guided step refuse `model.blocks_to_swap`, as `fym
    transfer` would: the search traces no swapped or tiled job for them (checkpointing first, then swapping)."""
    traced = []
    monkeypatch.setattr(plan_module, "plan_transfer", rule_planner(traced))
    checkpointing = plan_module.MEMORY_OPTIONS[0][0]
    off = plan_module.with_settings(recipe, {"spatial": {"grad_checkpointing": False},
                                             "motion": {"grad_checkpointing": False}})
    assert plan_module.options_to_fit(off, 40) == ([checkpointing, "model.blocks_to_swap: 15"], 40 * GB)
    assert traced == [(1, False, 0), (1, False, 0), (1, False, 15)]
    ditflow = resolve_config({"model": {"source": WAN_1_3B}, "guidance": {"method": "ditflow"}},
                             settings={"prompt": "a tiger"})
    traced.clear()
    assert plan_module.options_to_fit(ditflow, 40) is None
    assert all(swapped == 0 and not tiled for _, tiled, swapped in traced)
    swapped = plan_module.with_settings(ditflow, {"model": {"blocks_to_swap": 2}})
    with pytest.raises(InputError, match="model.blocks_to_swap: 0 for the guided sampling"):
        check_guided_sampling(swapped, swapped.generate)


def test_a_count_is_named_only_if_its_own_trace_fits_and_an_incomplete_plan_never_fits(monkeypatch, recipe):
    traced = []
    monkeypatch.setattr(plan_module, "plan_transfer", rule_planner(traced, worse=5))
    downsample = plan_module.MEMORY_OPTIONS[1][0]
    # every swapped trace comes back 5 GB over its price: no count is named; the shrunk, tiled job fits unswapped
    assert plan_module.options_to_fit(recipe, 40) == ([downsample, "model.vae_tiling: true"], 30 * GB)
    monkeypatch.setattr(plan_module, "plan_transfer", rule_planner(traced, untraced="branches on tensor values"))
    assert plan_module.options_to_fit(recipe, 200) is None


def test_swap_savings_stop_at_the_shorter_experts_last_block():
    """An expert of 3 blocks and one of 5 (Wan2.2-A14B's experts are equal, but nothing makes them so): swapping
    can take at most 2 blocks of each, as `block_swap.check_count` refuses more for the shorter one."""
    experts = [SimpleNamespace(blocks=torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(n))) for n in (3, 5)]
    backbone = SimpleNamespace(experts=experts, expert_blocks=lambda e: e.blocks)
    savings = plan_module.swap_savings(backbone)
    assert savings == [offloaded_bytes([e.blocks for e in experts], n) for n in (1, 2)]
    assert plan_module.swap_savings(SimpleNamespace(experts=experts, expert_blocks=refuse)) == []


def refuse(expert):
    raise InputError("no blocks")


def test_a_plan_prices_swapping_from_its_savings_and_says_so_in_json():
    plan = Plan("m", "v", "wan", ["wan"], (81, 480, 832), {"offload": False, "vae_tiling": False},
                [stage("motion", 20, 50, 45)], swap_savings=[k * GB for k in (3, 6, 9)])
    assert [plan.swap_to_fit(gb) for gb in (60, 50, 47, 44, 41, 40)] == [0, 0, 1, 2, 3, None]
    assert plan.to_json()["blocks_to_swap_to_fit"] == {"24": None, "32": None, "48": 1, "80": 0, "141": 0}
    plan.stages[0].untraced = "branches on tensor values"
    assert plan.swap_to_fit(60) is None and plan.swap_to_fit(44) is None  # what untraced stages need is unknown



def test_the_docs_table_names_swapping_where_offload_does_not_fit():
    from benchmarks.plan_tables import what_fits

    plan = {"peak_bytes": 50 * GB, "offload_peak_bytes": 49 * GB,
            "blocks_to_swap_to_fit": {"24": None, "48": 3, "80": 0}}
    assert what_fits(plan) == {"24": "no option here", "48": "model.blocks_to_swap: 3", "80": "default"}
    del plan["blocks_to_swap_to_fit"]  # a row traced before swapping was priced
    assert what_fits(plan)["48"] == "no option here"
