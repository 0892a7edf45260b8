"""Stage 1's grid-independent head rule (`heads.rule: relative`): (Sim_s / Sim_t) relative to a structureless
head's, which is exactly 1 for even attention on any token grid, where the paper's ratio is sqrt(H W / (F - 1))."""

from __future__ import annotations

import json
import math

import pytest
import torch
from pydantic import ValidationError

from follow_your_motion.config import HeadSettings
from follow_your_motion.method.heads import HeadMap, classify, score_layer, structureless_ratio


@pytest.mark.parametrize("grid", [(9, 8, 8), (21, 30, 52), (3, 4, 6), (5, 3, 7)])
@pytest.mark.parametrize("radius", [0, 1])
def test_a_structureless_head_scores_exactly_one_on_any_grid(grid, radius):
    tokens = math.prod(grid)
    q = torch.zeros(1, tokens, 2, 4, dtype=torch.float64)  # zero queries: every softmax row is uniform
    k = torch.randn(1, tokens, 2, 4, dtype=torch.float64)
    queries = torch.arange(0, tokens, max(1, tokens // 60))
    scores = score_layer(q, k, queries, grid, radius=radius)
    head_map = classify([scores], HeadSettings(rule="relative"))
    assert head_map.relative[0] == pytest.approx([1.0, 1.0], rel=1e-12)
    paper = [s / t for s, t in zip(head_map.sim_s[0], head_map.sim_t[0], strict=True)]
    assert paper == pytest.approx([structureless_ratio(scores)] * 2, rel=1e-12)  # the grid's own number
    if radius == 0:
        assert structureless_ratio(scores) == pytest.approx(math.sqrt(grid[1] * grid[2] / (grid[0] - 1)), rel=1e-12)


def test_the_relative_rule_applies_its_threshold_and_is_the_paper_rule_rescaled():
    grid = (4, 3, 5)
    total = math.prod(grid)
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, total, 8, 8, generator=gen, dtype=torch.float64) * 3
    k = torch.randn(1, total, 8, 8, generator=gen, dtype=torch.float64) * 3
    scores = score_layer(q, k, torch.arange(total), grid, 0)
    for threshold in (0.5, 0.9, 1.0, 1.3):
        relative = classify([scores], HeadSettings(rule="relative", relative_alpha=threshold, min_heads=0))
        assert relative.temporal[0] == [r < threshold for r in relative.relative[0]]
        rescaled = HeadSettings(rule="paper", alpha=threshold * structureless_ratio(scores), min_heads=0)
        assert classify([scores], rescaled).temporal[0] == relative.temporal[0]
    spread = classify([scores], HeadSettings(rule="relative", relative_alpha=1.0, min_heads=0))
    assert any(spread.temporal[0]) and not all(spread.temporal[0])  # the thresholds above split these heads


def test_the_relative_score_is_recorded_in_heads_json_and_old_files_still_load():
    grid = (3, 2, 2)
    total = math.prod(grid)
    gen = torch.Generator().manual_seed(4)
    scores = score_layer(torch.randn(1, total, 2, 4, generator=gen), torch.randn(1, total, 2, 4, generator=gen),
                         torch.arange(total), grid, 0)
    head_map = classify([scores], HeadSettings())
    data = json.loads(json.dumps(head_map.to_json()))
    assert [h["relative"] for h in data["layers"][0]["heads"]] == head_map.relative[0]
    assert HeadMap.from_json(data) == head_map
    for head in data["layers"][0]["heads"]:
        del head["relative"]
    assert HeadMap.from_json(data).relative == []


def test_a_single_frame_has_no_relative_score():
    """One frame: no temporal template, Sim_t = 0; the relative score is undefined (None), every head spatial
    before min_heads."""
    grid = (1, 3, 3)
    scores = score_layer(torch.randn(1, 9, 2, 4), torch.randn(1, 9, 2, 4), torch.arange(9), grid, 0)
    head_map = classify([scores], HeadSettings(rule="relative", min_heads=0))
    assert head_map.relative == [[None, None]] and head_map.temporal == [[False, False]]


def test_relative_alpha_must_be_positive():
    with pytest.raises(ValidationError):
        HeadSettings(rule="relative", relative_alpha=0)
    assert HeadSettings(rule="relative").relative_alpha == 1.0 and HeadSettings().rule == "paper"
