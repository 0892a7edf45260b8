"""Sparse frame sampling, RoPE positions, and adaptive RoPE on the tiny Wan."""

from __future__ import annotations

import math

import pytest
import torch

from follow_your_motion.method.sparse import STRATEGIES, rope_positions, sample_frames

COMBOS = [(21, 5), (5, 3), (5, 5), (5, 7), (1, 1), (2, 1), (7, 4), (16, 5), (20, 5), (9, 2), (13, 12)]
COMBOS += [(81, 5)]
COMBOS += [(total, keep) for total in range(1, 12) for keep in range(1, total + 2)]



# -- sample_frames ----------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sample_frames_valid_indices(strategy):
    for total, keep in COMBOS:
        for seed in (0, 7):
            for step in range(0, 25):
                idx = sample_frames(total, keep, strategy, seed, step)
                assert idx.dtype == torch.int64
                assert idx.ndim == 1
                assert len(idx) == min(keep, total), (total, keep, step)
                values = idx.tolist()
                assert values == sorted(set(values)), (total, keep, step, values)
                assert values[0] >= 0 and values[-1] < total, (total, keep, step, values)


def test_keep_at_least_total_returns_all_frames():
    for strategy in STRATEGIES:
        for total, keep in ((5, 5), (5, 9), (1, 3)):
            assert sample_frames(total, keep, strategy, 0, 3).tolist() == list(range(total))


def test_uniform_random_phase_covers_every_frame_each_epoch():
    for total, keep in COMBOS:
        if keep >= total:
            continue
        period = math.ceil(total / keep)
        for seed in (0, 1, 5):
            for epoch in range(4):
                steps = range(epoch * period, (epoch + 1) * period)
                picks = [sample_frames(total, keep, "uniform-random-phase", seed, s) for s in steps]
                seen = set().union(*(p.tolist() for p in picks))
                assert seen == set(range(total)), (total, keep, seed, epoch)
                # each phase (offset of the first frame) is used exactly once per epoch
                assert sorted(int(p[0]) for p in picks) == list(range(period)), (total, keep, seed, epoch)


def test_uniform_random_phase_hand_example():
    # total 21, keep 5: stride 4.2 -> base frames 0, 4, 8, 12, 16; period 5 offsets 0..4
    for step in range(10):
        idx = sample_frames(21, 5, "uniform-random-phase", 3, step)
        offset = int(idx[0])
        assert 0 <= offset < 5
        assert idx.tolist() == [offset + b for b in (0, 4, 8, 12, 16)]


def test_uniform_is_identical_every_step():
    for total, keep in COMBOS:
        first = sample_frames(total, keep, "uniform", 0, 0)
        if keep < total:
            stride = total / keep
            assert first.tolist() == [math.floor(i * stride) for i in range(keep)]
        for seed in (0, 3):
            for step in range(12):
                assert torch.equal(sample_frames(total, keep, "uniform", seed, step), first)
    assert sample_frames(21, 5, "uniform", 0, 0).tolist() == [0, 4, 8, 12, 16]
    assert sample_frames(5, 3, "uniform", 0, 0).tolist() == [0, 1, 3]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_and_step_same_frames(strategy):
    for total, keep in ((21, 5), (5, 3), (16, 5), (81, 5)):
        for seed in (0, 1, 42):
            for step in range(20):
                a = sample_frames(total, keep, strategy, seed, step)
                b = sample_frames(total, keep, strategy, seed, step)
                assert torch.equal(a, b)


@pytest.mark.parametrize("strategy", ["uniform-random-phase", "random"])
def test_random_strategies_vary(strategy):
    draws = {tuple(sample_frames(21, 5, strategy, 0, s).tolist()) for s in range(20)}
    assert len(draws) > 1
    by_seed = {
        tuple(tuple(sample_frames(21, 5, strategy, seed, s).tolist()) for s in range(10)) for seed in range(5)
    }
    assert len(by_seed) > 1


def test_sample_frames_rejects_bad_arguments():
    with pytest.raises(ValueError, match="frame sampling"):
        sample_frames(21, 5, "every-other", 0, 0)
    with pytest.raises(ValueError, match="keep_frames"):
        sample_frames(21, 0, "uniform", 0, 0)


# -- rope_positions ---------------------------------------------------------------------------------


def test_rope_positions_modes():
    idx = torch.tensor([1, 5, 9, 13, 17])
    index = rope_positions(idx, 21, "index")
    assert index.dtype == torch.float64
    assert index.tolist() == [1.0, 5.0, 9.0, 13.0, 17.0]
    scaled = rope_positions(idx, 21, "scaled")
    assert scaled.dtype == torch.float64
    assert scaled.tolist() == pytest.approx([i * 21 / 5 for i in range(5)], abs=1e-12)
    # the paper's formula F/2 + (F/K)(i - K/2)
    assert scaled.tolist() == pytest.approx([21 / 2 + 21 / 5 * (i - 5 / 2) for i in range(5)], abs=1e-12)
    assert rope_positions(idx, 21, "none") is None
    assert rope_positions(torch.tensor([0, 2, 4]), 5, "scaled").tolist() == pytest.approx([0, 5 / 3, 10 / 3])
    with pytest.raises(ValueError, match="rope mode"):
        rope_positions(idx, 21, "linear")


# -- adaptive RoPE on the tiny Wan ------------------------------------------------------------------


def _tables(rope, frames: int, positions=None) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = torch.zeros(1, 16, frames, 4, 4)  # token grid (frames, 2, 2)
    rope.frame_positions = positions
    try:
        cos, sin = rope(hidden)
    finally:
        rope.frame_positions = None
    return cos.view(frames, 2, 2, -1), sin.view(frames, 2, 2, -1)


@pytest.mark.parametrize("positions", [[0, 2, 4], [3, 7, 20], [1, 5, 9, 13, 17], [20], [4, 2, 0]])
def test_adaptive_rope_rows_equal_full_table_rows(wan, positions):
    rope = wan.experts[0].module.rope
    t_dim = rope.inner.t_dim
    assert t_dim == 4
    full_cos, full_sin = _tables(rope, 21)  # the stock table of a 21-frame video
    pos = torch.tensor(positions, dtype=torch.float64)
    kept = len(positions)
    cos, sin = _tables(rope, kept, pos)
    stock_cos, stock_sin = _tables(rope, kept)
    assert cos.shape == stock_cos.shape == (kept, 2, 2, wan.experts[0].sites[0].head_dim)
    rows = torch.tensor(positions)
    for table, full, stock in ((cos, full_cos, stock_cos), (sin, full_sin, stock_sin)):
        assert table.dtype == full.dtype
        assert torch.equal(table[..., :t_dim], full[rows][..., :t_dim])
        assert torch.equal(table[..., t_dim:], stock[..., t_dim:])
        assert torch.equal(table[..., t_dim:], full[rows][..., t_dim:])
    if positions != list(range(kept)):
        assert not torch.equal(cos[..., :t_dim], stock_cos[..., :t_dim])


def test_adaptive_rope_identity_positions_and_wrong_length(wan):
    rope = wan.experts[0].module.rope
    stock = _tables(rope, 5)
    same = _tables(rope, 5, torch.arange(5, dtype=torch.float64))
    assert torch.equal(stock[0], same[0]) and torch.equal(stock[1], same[1])
    with pytest.raises(ValueError, match="frame positions"):
        _tables(rope, 3, torch.arange(4, dtype=torch.float64))


def test_adaptive_rope_fractional_positions_interpolate_phase(wan):
    rope = wan.experts[0].module.rope
    t_dim = rope.inner.t_dim
    cos, sin = _tables(rope, 2, torch.tensor([0.0, 2.5], dtype=torch.float64))
    freqs = 1.0 / (10000.0 ** (torch.arange(0, t_dim, 2, dtype=torch.float64) / t_dim))
    want = (2.5 * freqs).repeat_interleave(2)
    assert torch.allclose(cos[1, 0, 0, :t_dim].double(), want.cos(), atol=1e-7)
    assert torch.allclose(sin[1, 0, 0, :t_dim].double(), want.sin(), atol=1e-7)


@pytest.fixture
def latents_and_text(wan):
    gen = torch.Generator().manual_seed(0)
    video = torch.rand(3, 17, 32, 32, generator=gen) * 2 - 1
    lat = wan.encode_video(video)
    noisy = 0.3 * lat + 0.7 * torch.randn(lat.shape, generator=gen)
    return noisy, wan.encode_prompt("a tiger walks through snow")


def test_predict_with_identity_positions_is_bit_identical(wan, latents_and_text):
    lat, text = latents_and_text
    frames = lat.shape[2]
    t = torch.tensor([700.0])
    stock = wan.predict(wan.experts[0], lat, t, text)
    positioned = wan.predict(wan.experts[0], lat, t, text, frame_positions=torch.arange(frames, dtype=torch.float64))
    assert torch.equal(stock, positioned)
    assert wan.experts[0].module.rope.frame_positions is None


def test_identity_positions_bit_identical_in_bfloat16(tiny_wan_dir):
    from follow_your_motion.backbones.wan import WanBackbone

    wan = WanBackbone.load(str(tiny_wan_dir), dtype=torch.bfloat16)
    gen = torch.Generator().manual_seed(1)
    lat = torch.randn(1, 16, 5, 4, 4, generator=gen)
    text = wan.encode_prompt("a robot dog runs on the beach")
    t = torch.tensor([300.0])
    stock = wan.predict(wan.experts[0], lat, t, text)
    identity = torch.arange(5, dtype=torch.float64)
    assert torch.equal(stock, wan.predict(wan.experts[0], lat, t, text, frame_positions=identity))
    full_cos, full_sin = _tables(wan.experts[0].module.rope, 21)
    cos, sin = _tables(wan.experts[0].module.rope, 3, torch.tensor([2.0, 9.0, 17.0], dtype=torch.float64))
    t_dim = wan.experts[0].module.rope.inner.t_dim
    assert torch.equal(cos[..., :t_dim], full_cos[[2, 9, 17]][..., :t_dim])
    assert torch.equal(sin[..., :t_dim], full_sin[[2, 9, 17]][..., :t_dim])


def test_predict_uses_positions_on_kept_frames(wan, latents_and_text):
    lat, text = latents_and_text
    t = torch.tensor([700.0])
    kept = torch.tensor([0, 2, 4])
    sub = lat[:, :, kept]
    plain = wan.predict(wan.experts[0], sub, t, text)
    indexed = wan.predict(wan.experts[0], sub, t, text, frame_positions=rope_positions(kept, 5, "index"))
    scaled = wan.predict(wan.experts[0], sub, t, text, frame_positions=rope_positions(kept, 5, "scaled"))
    assert plain.shape == indexed.shape == sub.shape
    assert (plain - indexed).abs().max() > 1e-4
    assert (scaled - indexed).abs().max() > 1e-4
    # explicitly passing the stock positions 0..K-1 is the same as passing none
    stock_positions = torch.arange(3, dtype=torch.float64)
    assert torch.equal(plain, wan.predict(wan.experts[0], sub, t, text, frame_positions=stock_positions))
    # a failed call still restores the stock positions
    with pytest.raises(ValueError):
        wan.predict(wan.experts[0], sub, t, text, frame_positions=torch.arange(4, dtype=torch.float64))
    assert wan.experts[0].module.rope.frame_positions is None
    assert torch.equal(plain, wan.predict(wan.experts[0], sub, t, text))
