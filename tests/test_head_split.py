"""benchmarks.head_split's explanation of the toy model's head split: a head that attends uniformly has
Sim_s / Sim_t = sqrt(spatial template size / temporal template size), as stage 1's own scoring computes it."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.head_split import uniform_ratio
from follow_your_motion.config import HeadSettings
from follow_your_motion.method.heads import classify, score_layer


@pytest.mark.parametrize("grid", [(9, 8, 8), (21, 30, 52), (3, 4, 6)])
def test_a_uniform_head_scores_the_template_size_ratio(grid):
    tokens = math.prod(grid)
    q = torch.zeros(1, tokens, 2, 4, dtype=torch.float64)  # zero queries: every softmax row is uniform
    k = torch.randn(1, tokens, 2, 4, dtype=torch.float64)
    queries = torch.arange(0, tokens, max(1, tokens // 50))
    head_map = classify([score_layer(q, k, queries, grid, radius=0)], HeadSettings())
    for s, t in zip(head_map.sim_s[0], head_map.sim_t[0], strict=True):
        assert s / t == pytest.approx(uniform_ratio(grid), rel=1e-12)
    assert uniform_ratio((9, 8, 8)) == math.sqrt(64 / 8) and uniform_ratio((21, 30, 52)) == math.sqrt(1560 / 20)
