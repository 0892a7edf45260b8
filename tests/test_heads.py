"""Stage 1 head classification: templates, per-layer scores against a dense reference, rules, HeadMap I/O."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from follow_your_motion.config import HeadSettings
from follow_your_motion.method.heads import HeadMap, classify, classify_heads, score_layer, template_masks


def _coords(index: int, grid: tuple[int, int, int]) -> tuple[int, int, int]:
    _, rows, cols = grid
    return index // (rows * cols), (index // cols) % rows, index % cols


def _flat(f: int, r: int, c: int, grid: tuple[int, int, int]) -> int:
    _, rows, cols = grid
    return (f * rows + r) * cols + c


def _as_set(row: torch.Tensor) -> set[int]:
    return set(torch.nonzero(row).flatten().tolist())


# -- template_masks --------------------------------------------------------------------------------------


def test_template_masks_radius0_hand_enumerated():
    grid = (3, 3, 3)  # 27 tokens, index = f*9 + r*3 + c
    queries = torch.tensor([9, 4, 26])  # (1,0,0), (0,1,1), (2,2,2)
    spatial, temporal = template_masks(queries, grid, radius=0)
    assert spatial.shape == temporal.shape == (3, 27)
    assert spatial.dtype == temporal.dtype == torch.bool
    assert _as_set(spatial[0]) == set(range(9, 18))
    assert _as_set(spatial[1]) == set(range(0, 9))
    assert _as_set(spatial[2]) == set(range(18, 27))
    assert _as_set(temporal[0]) == {0, 18}
    assert _as_set(temporal[1]) == {13, 22}
    assert _as_set(temporal[2]) == {8, 17}


def test_template_masks_radius1_hand_enumerated():
    grid = (3, 3, 3)
    queries = torch.tensor([9, 4, 26])
    spatial, temporal = template_masks(queries, grid, radius=1)
    # the spatial template does not depend on the radius
    assert _as_set(spatial[0]) == set(range(9, 18))
    assert _as_set(spatial[1]) == set(range(0, 9))
    assert _as_set(spatial[2]) == set(range(18, 27))
    # (1,0,0): rows 0-1, cols 0-1 of frames 0 and 2
    assert _as_set(temporal[0]) == {0, 1, 3, 4, 18, 19, 21, 22}
    # (0,1,1): the centre reaches every cell of frames 1 and 2
    assert _as_set(temporal[1]) == set(range(9, 27))
    # (2,2,2): rows 1-2, cols 1-2 of frames 0 and 1
    assert _as_set(temporal[2]) == {4, 5, 7, 8, 13, 14, 16, 17}


def test_template_masks_rectangular_grid_matches_brute_force():
    grid = (4, 2, 5)
    total = math.prod(grid)
    queries = torch.arange(total)
    for radius in (0, 1, 2):
        spatial, temporal = template_masks(queries, grid, radius)
        for q in range(total):
            qf, qr, qc = _coords(q, grid)
            want_s, want_t = set(), set()
            for key in range(total):
                kf, kr, kc = _coords(key, grid)
                if kf == qf:
                    want_s.add(key)
                elif abs(kr - qr) <= radius and abs(kc - qc) <= radius:
                    want_t.add(key)
            assert _as_set(spatial[q]) == want_s, (radius, q)
            assert _as_set(temporal[q]) == want_t, (radius, q)


# -- score_layer + classify on synthetic heads -------------------------------------------------------------


def _synthetic_qk(grid: tuple[int, int, int], huge: float = 1000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k (1, S, 2, D): head 0 attends uniformly within its own frame; head 1 attends uniformly to the
    tokens at its own (row, col) in the OTHER frames (itself and the rest of its frame are suppressed)."""
    frames, rows, cols = grid
    cells = rows * cols
    total = frames * cells
    dim = cells + frames
    q = torch.zeros(1, total, 2, dim)
    k = torch.zeros(1, total, 2, dim)
    for s in range(total):
        f, r, c = _coords(s, grid)
        pos = r * cols + c
        # head 0: logit = huge * [same frame]
        q[0, s, 0, f] = huge
        k[0, s, 0, f] = 1.0
        # head 1: logit = huge * ([same position] - [same frame])
        q[0, s, 1, pos] = huge
        q[0, s, 1, cells + f] = -huge
        k[0, s, 1, pos] = 1.0
        k[0, s, 1, cells + f] = 1.0
    return q, k


def _dense_reference(q, k, queries, grid, radius):
    """Full S x S softmax maps in float64; sims = cosine of the sampled rows with the templates."""
    spatial, temporal = template_masks(queries, grid, radius)
    batch, heads, dim = q.shape[0], q.shape[2], q.shape[3]
    out = {"sim_s": [], "sim_t": [], "mass_s": [], "mass_t": []}
    for h in range(heads):
        logits = q[:, :, h].double() @ k[:, :, h].double().transpose(1, 2) / math.sqrt(dim)  # (B, S, S)
        rows = torch.softmax(logits, dim=-1)[:, queries]  # (B, n, S)
        for name, template in (("s", spatial), ("t", temporal)):
            tmpl = template.double().expand(batch, -1, -1)
            out[f"mass_{name}"].append(float((rows * tmpl).sum()))
            out[f"sim_{name}"].append(float(F.cosine_similarity(rows.flatten(), tmpl.flatten(), dim=0)))
    return out


@pytest.mark.parametrize("rule", ["paper", "release"])
def test_synthetic_spatial_and_temporal_heads(rule):
    grid = (3, 2, 2)
    q, k = _synthetic_qk(grid)
    queries = torch.tensor([0, 3, 5, 6, 10, 11])
    scores = score_layer(q, k, queries, grid, radius=0)
    settings = HeadSettings(rule=rule)
    head_map = classify([scores], settings)

    assert head_map.temporal == [[False, True]]
    assert head_map.heads("spatial") == {0: [0]}
    assert head_map.heads("temporal") == {0: [1]}

    # head 0 is exactly the spatial template, head 1 exactly the temporal one
    assert head_map.sim_s[0] == pytest.approx([1.0, 0.0], abs=1e-6)
    assert head_map.sim_t[0] == pytest.approx([0.0, 1.0], abs=1e-6)
    n = len(queries)
    assert head_map.mass_s[0] == pytest.approx([n, 0.0], abs=1e-5)
    assert head_map.mass_t[0] == pytest.approx([0.0, n], abs=1e-5)

    ref = _dense_reference(q, k, queries, grid, radius=0)
    for key in ("sim_s", "sim_t", "mass_s", "mass_t"):
        assert getattr(head_map, key)[0] == pytest.approx(ref[key], abs=1e-6), key


def test_synthetic_heads_radius1_against_dense_reference():
    grid = (3, 3, 3)
    q, k = _synthetic_qk(grid)
    queries = torch.tensor([0, 4, 9, 13, 20, 26])
    scores = score_layer(q, k, queries, grid, radius=1)
    head_map = classify([scores], HeadSettings(radius=1))
    ref = _dense_reference(q, k, queries, grid, radius=1)
    for key in ("sim_s", "sim_t", "mass_s", "mass_t"):
        assert getattr(head_map, key)[0] == pytest.approx(ref[key], abs=1e-6), key
    assert head_map.temporal == [[False, True]]
    # head 1 puts all its mass inside the radius-1 temporal template, which is larger than its 2 keys
    assert head_map.sim_t[0][1] < 1.0 - 1e-3
    assert head_map.mass_t[0][1] == pytest.approx(len(queries), abs=1e-5)


@pytest.mark.parametrize("radius", [0, 1])
def test_score_layer_random_qk_matches_dense_reference(radius):
    grid = (3, 3, 4)
    total = math.prod(grid)
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, total, 3, 8, generator=gen) * 2
    k = torch.randn(2, total, 3, 8, generator=gen) * 2
    queries = torch.randperm(total, generator=gen)[:10].sort().values
    scores = score_layer(q, k, queries, grid, radius)
    spatial, temporal = template_masks(queries, grid, radius)
    assert scores.count_s == 2 * int(spatial.sum())
    assert scores.count_t == 2 * int(temporal.sum())
    head_map = classify([scores], HeadSettings(radius=radius))
    ref = _dense_reference(q, k, queries, grid, radius)
    for key in ("sim_s", "sim_t", "mass_s", "mass_t"):
        assert getattr(head_map, key)[0] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), key


def test_rules_apply_their_thresholds():
    """Paper: temporal iff sim_s < alpha * sim_t; release: temporal iff mass_t >= ratio * mass_s."""
    grid = (3, 3, 4)
    total = math.prod(grid)
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(1, total, 6, 8, generator=gen) * 3
    k = torch.randn(1, total, 6, 8, generator=gen) * 3
    scores = score_layer(q, k, torch.arange(total), grid, 0)
    paper = classify([scores], HeadSettings(rule="paper", alpha=1.7, min_heads=0))
    want = [s < 1.7 * t for s, t in zip(paper.sim_s[0], paper.sim_t[0], strict=True)]
    assert paper.temporal[0] == want
    release = classify([scores], HeadSettings(rule="release", release_ratio=0.4, min_heads=0))
    want = [t >= 0.4 * s for s, t in zip(release.mass_s[0], release.mass_t[0], strict=True)]
    assert release.temporal[0] == want
    assert paper.forced == release.forced == []


@pytest.mark.parametrize("rule", ["paper", "release"])
@pytest.mark.parametrize("minimum", [1, 2, 3])
def test_min_heads_flips_the_closest_heads(rule, minimum):
    """A rule that leaves no head of one type is corrected by flipping the `minimum` heads closest to it."""
    grid = (3, 3, 4)
    total = math.prod(grid)
    gen = torch.Generator().manual_seed(5)
    layers = [
        score_layer(
            torch.randn(1, total, 4, 8, generator=gen) * 3,
            torch.randn(1, total, 4, 8, generator=gen) * 3,
            torch.arange(total),
            grid,
            0,
        )
        for _ in range(2)
    ]
    key = "alpha" if rule == "paper" else "release_ratio"
    # all spatial under the rule (alpha ~ 0 / ratio huge): the most temporal heads are flipped
    low, high = (1e-9, 1e9) if rule == "paper" else (1e9, 1e-9)
    all_spatial = classify(layers, HeadSettings(rule=rule, min_heads=minimum, **{key: low}))
    all_temporal = classify(layers, HeadSettings(rule=rule, min_heads=minimum, **{key: high}))
    num, den = ("sim_t", "sim_s") if rule == "paper" else ("mass_t", "mass_s")
    numerator, denominator = getattr(all_spatial, num), getattr(all_spatial, den)
    ratio = {(i, h): numerator[i][h] / denominator[i][h] for i in range(2) for h in range(4)}
    ranked = sorted(ratio, key=ratio.get)  # most spatial first
    chosen_t = {(i, h) for i, heads in all_spatial.heads("temporal").items() for h in heads}
    assert chosen_t == set(ranked[-minimum:])
    assert sorted(map(tuple, all_spatial.forced)) == sorted(ranked[-minimum:])
    chosen_s = {(i, h) for i, heads in all_temporal.heads("spatial").items() for h in heads}
    assert chosen_s == set(ranked[:minimum])
    assert sorted(map(tuple, all_temporal.forced)) == sorted(ranked[:minimum])
    # forced flips survive the JSON round trip
    assert HeadMap.from_json(json.loads(json.dumps(all_spatial.to_json()))) == all_spatial


# -- memory: never an S x S tensor ------------------------------------------------------------------------


def test_score_layer_softmax_is_n_query_by_s(monkeypatch):
    grid = (4, 6, 6)
    total = math.prod(grid)
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, total, 3, 8, generator=gen)
    k = torch.randn(1, total, 3, 8, generator=gen)
    queries = torch.tensor([1, 7, 50, 99, 140])
    shapes = []
    real_softmax = torch.softmax

    def recording_softmax(x, *args, **kwargs):
        shapes.append(tuple(x.shape))
        return real_softmax(x, *args, **kwargs)

    monkeypatch.setattr(torch, "softmax", recording_softmax)
    score_layer(q, k, queries, grid, 0)
    assert shapes, "score_layer did not call torch.softmax"
    for shape in shapes:
        assert shape[-1] == total
        assert shape[-2] == len(queries)


class _ShapeRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_score_layer_never_materialises_s_by_s():
    grid = (6, 10, 10)
    total = math.prod(grid)
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(1, total, 2, 8, generator=gen)
    k = torch.randn(1, total, 2, 8, generator=gen)
    queries = torch.tensor([3, 100, 250, 400, 599])
    recorder = _ShapeRecorder()
    with recorder:
        score_layer(q, k, queries, grid, 1)
    assert recorder.largest > 0
    assert recorder.largest < total * total // 10, recorder.largest


# -- on the tiny Wan ------------------------------------------------------------------------------------


@pytest.fixture
def reference(wan):
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(3, 17, 32, 32, generator=gen) * 2 - 1
    return wan.encode_video(video), wan.encode_prompt("a tiger walks through snow")


def test_classify_heads_on_tiny_wan(wan, reference, tmp_path):
    lat, text = reference
    settings = HeadSettings(num_queries=64)
    head_map = classify_heads(wan, wan.experts[0], lat, text, settings)
    assert len(wan.experts[0].sites) == 2 and wan.experts[0].sites[0].heads == 4
    for table in (head_map.sim_s, head_map.sim_t, head_map.mass_s, head_map.mass_t, head_map.temporal):
        assert len(table) == len(wan.experts[0].sites)
        assert all(len(row) == wan.experts[0].sites[0].heads for row in table)
    for table in (head_map.sim_s, head_map.sim_t):
        assert all(0.0 <= v <= 1.0 + 1e-6 for row in table for v in row)
    tokens = math.prod(wan.token_grid(lat))  # 20 < 64: every token is a query
    for ms, mt in zip(head_map.mass_s, head_map.mass_t, strict=True):
        for s, t in zip(ms, mt, strict=True):
            assert s > 0 and t > 0
            assert s + t <= tokens + 1e-3  # each row's mass is at most 1
    assert head_map.settings == settings.model_dump()
    spatial, temporal = head_map.heads("spatial"), head_map.heads("temporal")
    for layer in range(len(wan.experts[0].sites)):
        assert sorted(spatial[layer] + temporal[layer]) == list(range(wan.experts[0].sites[0].heads))
    assert [c["spatial"] + c["temporal"] for c in head_map.counts()] == [4, 4]

    # the same inputs give the same map
    assert classify_heads(wan, wan.experts[0], lat, text, settings) == head_map

    # JSON round trip is exact, through text and through a file
    data = head_map.to_json()
    assert data["total"]["spatial"] + data["total"]["temporal"] == 8
    again = HeadMap.from_json(json.loads(json.dumps(data)))
    assert again == head_map
    assert again.to_json() == data
    path = tmp_path / "heads.json"
    path.write_text(json.dumps(data))
    assert HeadMap.load(path) == head_map


@pytest.mark.parametrize("minimum", [0, 1])
def test_alpha_moves_split_monotonically(wan, reference, minimum):
    lat, text = reference
    previous: set | None = None
    counts = []
    for alpha in (1e-6, 0.25, 0.5, 1.0, 1.25, 2.0, 4.0, 1e6):
        settings = HeadSettings(num_queries=64, alpha=alpha, min_heads=minimum)
        head_map = classify_heads(wan, wan.experts[0], lat, text, settings)
        chosen = {(layer, h) for layer, heads in head_map.heads("temporal").items() for h in heads}
        if previous is not None:
            assert previous <= chosen, alpha
        previous = chosen
        counts.append(len(chosen))
    assert counts[0] == minimum  # sim_s > 0 for every head, so the rule alone picks none
    assert counts[-1] == 8 - minimum  # sim_t > 0 for every head, so the rule alone picks all
    assert counts == sorted(counts)


@pytest.mark.parametrize("minimum", [0, 1])
def test_release_ratio_moves_split_monotonically(wan, reference, minimum):
    lat, text = reference
    previous: set | None = None
    for ratio in (1e-6, 0.1, 0.5, 1.0, 1.3, 3.0, 1e6):
        settings = HeadSettings(num_queries=64, rule="release", release_ratio=ratio, min_heads=minimum)
        head_map = classify_heads(wan, wan.experts[0], lat, text, settings)
        chosen = {(layer, h) for layer, heads in head_map.heads("temporal").items() for h in heads}
        if previous is not None:
            assert chosen <= previous, ratio  # a higher ratio asks more of a temporal head
        else:
            assert len(chosen) == 8 - minimum
        previous = chosen
    assert len(previous) == minimum


def test_heads_kind_validation():
    head_map = HeadMap([[0.1]], [[0.2]], [[1.0]], [[2.0]], [[True]])
    with pytest.raises(ValueError, match="head kind"):
        head_map.heads("diagonal")


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"layers": [{"heads": [{"head": 0}]}], "settings": {}}',
        '{"layers": 5, "settings": {}}',
        '{"layers": [{"heads": ["x"]}], "settings": {}}',
        '{"layers": []}',
        "[1, 2, 3]",
        "null",
        "",
        b"\xff\xfe\x00garbage",
    ],
)
def test_headmap_load_corrupt_file_names_it(tmp_path, content):
    path = tmp_path / "heads.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        HeadMap.load(path)


def test_headmap_load_missing_file_names_it(tmp_path):
    path = tmp_path / "nowhere" / "heads.json"
    with pytest.raises(ValueError, match=re.escape(str(path))):
        HeadMap.load(path)
