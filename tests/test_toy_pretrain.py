"""Toy-model pretraining: the learning-rate schedule, caption dropout, bit-exact resume, loader workers and
model size."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from follow_your_motion.backbones.toy import ToyBackbone
from follow_your_motion.toyworld.pretrain import (
    DEFAULT_META,
    PretrainSettings,
    batch,
    export_model,
    initialise_from,
    learning_rate,
    loader_process_options,
    new_run_meta,
    pretrain,
)

TINY_META = copy.deepcopy(DEFAULT_META)
TINY_META["transformer"] |= {"num_attention_heads": 2, "attention_head_dim": 12, "ffn_dim": 32, "num_layers": 1,
                             "text_dim": 16, "freq_dim": 16, "rope_max_seq_len": 16}
TINY_META["text"] = {"dim": 16, "layers": 1, "max_words": 16}
TINY_META["video"] = {"frames": 5, "height": 16, "width": 16}
TINY_META["time_span"] = 5


def test_learning_rate_warms_up_holds_then_decays_linearly_to_zero() -> None:
    s = PretrainSettings(steps=100, lr=1.0, warmup=10, decay_start=60)
    assert learning_rate(0, s) == pytest.approx(0.1)
    assert learning_rate(9, s) == 1.0
    assert learning_rate(59, s) == 1.0
    assert learning_rate(60, s) == 1.0
    assert learning_rate(80, s) == pytest.approx(0.5)
    assert learning_rate(99, s) == pytest.approx(1 / 40)
    assert learning_rate(100, s) == 0.0
    assert learning_rate(5000, PretrainSettings(steps=100, lr=1.0, warmup=10)) == 1.0  # no decay_start: constant


@pytest.mark.parametrize(("dropout", "empty"), [(0.0, 0), (1.0, 64)])
def test_caption_dropout_empties_exactly_that_share(dropout: float, empty: int) -> None:
    settings = PretrainSettings(caption_dropout=dropout)
    _, captions = batch(3, 64, TINY_META, settings)
    assert sum(c == "" for c in captions) == empty


def test_batches_are_a_pure_function_of_seed_and_step() -> None:
    settings = PretrainSettings()
    clips_a, captions_a = batch(7, 8, TINY_META, settings)
    clips_b, captions_b = batch(7, 8, TINY_META, settings)
    clips_c, _ = batch(8, 8, TINY_META, settings)
    assert torch.equal(clips_a, clips_b) and captions_a == captions_b
    assert not torch.equal(clips_a, clips_c)
    assert clips_a.shape == (8, 3, 5, 16, 16)
    # the default 10% dropout leaves some captions empty over a few batches ...
    captions = [c for step in range(10) for c in batch(step, 16, TINY_META, settings)[1]]
    assert 0 < sum(c == "" for c in captions) < len(captions) / 4
    # ... and the empty caption, the unconditional prompt of guidance, encodes to all zeros (no NaN)
    assert torch.equal(ToyBackbone.build(TINY_META).encode_prompt("").tensors["text"], torch.zeros(1, 16, 16))


def test_resume_across_the_decay_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    settings = PretrainSettings(steps=6, batch_size=2, warmup=2, decay_start=3, checkpoint_every=2)
    straight = pretrain(tmp_path / "straight", settings, TINY_META)
    pretrain(tmp_path / "resumed", settings, TINY_META, stop_after=4)
    resumed = pretrain(tmp_path / "resumed", settings, TINY_META)
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = torch.load(tmp_path / "resumed/checkpoints/pretrain/step-0000006/state.pt", weights_only=True)
    reference = torch.load(tmp_path / "straight/checkpoints/pretrain/step-0000006/state.pt", weights_only=True)
    assert state["step"] == 6
    assert all(torch.equal(state["transformer"][k], reference["transformer"][k]) for k in reference["transformer"])


def test_iid_noise_is_torch_randn_and_correlated_noise_shares_one_draw_across_frames() -> None:
    plain = ToyBackbone.build(TINY_META)
    shape = (2, 3, 5, 16, 16)
    assert torch.equal(plain.draw_noise(shape, torch.Generator().manual_seed(1)),
                       torch.randn(shape, generator=torch.Generator().manual_seed(1)))
    mixed = ToyBackbone.build(TINY_META | {"noise_correlation": 0.75})
    noise = mixed.draw_noise(shape, torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(1)
    shared = torch.randn((2, 3, 1, 16, 16), generator=generator)
    own = torch.randn(shape, generator=generator)
    assert torch.equal(noise, 0.75 ** 0.5 * shared + 0.25 ** 0.5 * own)
    big = mixed.draw_noise((64, 3, 2, 16, 16), torch.Generator().manual_seed(2))
    assert abs(big.var().item() - 1.0) < 0.03  # still unit variance per value
    corr = torch.corrcoef(torch.stack([big[:, :, 0].flatten(), big[:, :, 1].flatten()]))[0, 1].item()
    assert abs(corr - 0.75) < 0.02


def test_noise_correlation_must_lie_in_zero_one() -> None:
    with pytest.raises(ValueError, match="noise_correlation"):
        ToyBackbone.build(TINY_META | {"noise_correlation": 1.0})


def test_a_run_keeps_the_model_config_it_started_with(tmp_path: Path) -> None:
    settings = PretrainSettings(steps=1, batch_size=1)
    pretrain(tmp_path, settings, TINY_META)
    assert json.loads((tmp_path / "meta.json").read_text()) == TINY_META
    pretrain(tmp_path, PretrainSettings(steps=2, batch_size=1))  # resumes with the stored config
    with pytest.raises(ValueError, match="differs in: noise_correlation"):
        pretrain(tmp_path, PretrainSettings(steps=3, batch_size=1), TINY_META | {"noise_correlation": 0.5})


def test_coordinate_channels_hold_each_pixels_column_and_row() -> None:
    latents = torch.zeros(2, 3, 4, 5, 7)
    grid = ToyBackbone.coordinates(latents)
    assert grid.shape == (2, 2, 4, 5, 7)
    assert torch.equal(grid[1, 0, 3, 2], torch.linspace(-1, 1, 7))  # x: the column, whatever the row or frame
    assert torch.equal(grid[0, 1, 0, :, 6], torch.linspace(-1, 1, 5))  # y: the row
    assert torch.equal(grid[:, :, 0], grid[:, :, 3])


def test_the_transformer_sees_rgb_then_time_then_x_and_y() -> None:
    model = ToyBackbone.build(TINY_META)
    assert model.transformer.config.in_channels == 6 and model.coordinate_channels
    seen = []
    model.transformer.patch_embedding.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    x = torch.randn(1, 3, 5, 16, 16)
    with torch.no_grad():
        model.predict(model.experts[0], x, torch.tensor([500.0]), model.encode_prompt("a red circle"))
    (inputs,) = seen
    assert torch.equal(inputs[:, :3], x)
    assert torch.equal(inputs[:, 3:4], model.time_channel(x, None))
    assert torch.equal(inputs[:, 4:], ToyBackbone.coordinates(x))


def _donor(folder: Path) -> Path:
    """A tiny trained-looking toy model without coordinate channels, exported as pretraining would."""
    meta = copy.deepcopy(TINY_META) | {"coordinate_channels": False}
    meta["transformer"]["in_channels"] = 4
    torch.manual_seed(5)
    donor = ToyBackbone.build(meta)
    export_model(donor, meta, folder, {"steps": 7, "seconds": 3})
    return folder


def test_init_copies_a_donor_and_new_input_channels_start_at_zero(tmp_path: Path) -> None:
    donor_dir = _donor(tmp_path / "donor")
    donor = ToyBackbone.load(str(donor_dir))
    torch.manual_seed(0)
    model = ToyBackbone.build(TINY_META)
    assert initialise_from(model, donor_dir) == {"model": str(donor_dir), "steps": 7, "seconds": 3}
    grown = model.transformer.patch_embedding.weight
    assert torch.equal(grown[:, :4], donor.transformer.patch_embedding.weight)
    assert torch.equal(grown[:, 4:], torch.zeros_like(grown[:, 4:]))
    x, t = torch.randn(1, 3, 5, 16, 16), torch.tensor([300.0])
    with torch.no_grad():
        same = model.predict(model.experts[0], x, t, model.encode_prompt("a red circle moves left"))
        reference = donor.predict(donor.experts[0], x, t, donor.encode_prompt("a red circle moves left"))
    assert (same - reference).abs().max() < 1e-5  # zero weights: the coordinates change nothing yet


def test_init_refuses_a_donor_that_does_not_fit(tmp_path: Path) -> None:
    meta = copy.deepcopy(TINY_META)
    meta["transformer"]["ffn_dim"] = 48
    export_model(ToyBackbone.build(meta), meta, tmp_path / "wide", {"steps": 1})
    with pytest.raises(ValueError, match=r"ffn.*does not fit"):
        initialise_from(ToyBackbone.build(TINY_META), tmp_path / "wide")


def test_a_run_started_from_a_donor_records_it_and_resumes_without_it(tmp_path: Path) -> None:
    donor_dir = _donor(tmp_path / "donor")
    out = tmp_path / "run"
    pretrain(out, PretrainSettings(steps=1, batch_size=1), TINY_META, init=donor_dir)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["init"] == {"model": str(donor_dir), "steps": 7, "seconds": 3}
    assert json.loads((out / "model/config.json").read_text())["init"]["steps"] == 7
    pretrain(out, PretrainSettings(steps=2, batch_size=1))  # resumes: the donor is not read again
    assert [json.loads(line)["event"] for line in (out / "log.jsonl").read_text().splitlines()].count("init") == 1


def test_cli_init_from_a_missing_model_fails_clearly_and_writes_nothing(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from follow_your_motion.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["toyworld", "pretrain", "--out", str(out), "--steps", "1",
                                      "--init", str(tmp_path / "missing")])
    assert result.exit_code != 0
    assert "missing" in result.output and "cannot be loaded" in result.output
    assert not (out / "meta.json").exists() and not (out / "checkpoints").exists()


def test_loader_workers_render_the_same_batches_so_the_run_is_bit_identical(tmp_path: Path) -> None:
    base = dict(steps=4, batch_size=2, warmup=2, checkpoint_every=4)
    inline = pretrain(tmp_path / "inline", PretrainSettings(**base), TINY_META)
    ahead = pretrain(tmp_path / "ahead", PretrainSettings(**base, workers=2), TINY_META)
    a, b = load_file(str(inline / "model.safetensors")), load_file(str(ahead / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    losses = [[json.loads(line).get("loss") for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
              for run in ("inline", "ahead")]
    assert losses[0] == losses[1] and None not in losses[0]


def test_loader_workers_are_spawned_not_forked_and_time_out() -> None:
    """A forked worker inherits the locks the parent's other threads hold (the CI run that hung here); a spawned one
    does not."""
    assert loader_process_options(0) == {}
    options = loader_process_options(2)
    assert options["multiprocessing_context"] == "spawn" and options["timeout"] > 0


def test_new_run_meta_sets_depth_and_width_and_leaves_the_default_alone() -> None:
    assert new_run_meta() is None  # nothing chosen: a resume keeps the stored config
    before = copy.deepcopy(DEFAULT_META)
    assert (before["transformer"]["num_layers"], before["transformer"]["num_attention_heads"]) != (3, 5)
    meta = new_run_meta(layers=3, heads=5)  # not the default size, so ignoring either choice fails below
    assert meta["transformer"]["num_layers"] == 3
    assert meta["transformer"]["num_attention_heads"] == 5 and meta["transformer"]["attention_head_dim"] == 32
    assert meta["transformer"]["ffn_dim"] == 4 * 5 * 32
    unchanged = [k for k in before if k != "transformer"]
    assert {k: meta[k] for k in unchanged} == {k: before[k] for k in unchanged} and meta.keys() == before.keys()
    assert new_run_meta(noise_correlation=0.5) == before | {"noise_correlation": 0.5}
    assert before == DEFAULT_META  # not mutated


def test_cli_builds_the_chosen_size_and_refuses_zero_layers(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from follow_your_motion.cli import app

    runner = CliRunner()
    refused = runner.invoke(app, ["toyworld", "pretrain", "--out", str(tmp_path / "zero"), "--layers", "0"])
    assert refused.exit_code != 0 and not (tmp_path / "zero").exists()
    out = tmp_path / "run"
    result = runner.invoke(app, ["toyworld", "pretrain", "--out", str(out), "--steps", "1", "--batch-size", "1",
                                 "--layers", "2", "--heads", "2"])
    assert result.exit_code == 0, result.output
    model = ToyBackbone.load(str(out / "model"))
    assert len(model.transformer.blocks) == 2
    assert model.transformer.config.num_attention_heads * model.transformer.config.attention_head_dim == 64
    training = json.loads((out / "model/config.json").read_text())["training"]
    assert training["settings"]["device"] == "cpu" and training["hardware"].startswith("CPU")


def test_a_run_from_a_donor_with_free_paths_resumes_bit_for_bit(tmp_path: Path) -> None:
    """As toyworld-pretrain/cpu-prior-run.sh runs it: --init and --free-paths, stopped, then the same command."""
    donor_dir = _donor(tmp_path / "donor")
    settings = PretrainSettings(steps=4, batch_size=2, warmup=2, decay_start=2, checkpoint_every=1, free_paths=0.5)
    assert any(not torch.equal(batch(s, 2, TINY_META, settings)[0],
                               batch(s, 2, TINY_META, PretrainSettings(batch_size=2))[0]) for s in range(4))
    straight = pretrain(tmp_path / "straight", settings, TINY_META, init=donor_dir)
    pretrain(tmp_path / "resumed", settings, TINY_META, init=donor_dir, stop_after=2)
    resumed = pretrain(tmp_path / "resumed", settings, init=donor_dir)  # the CLI passes no config on a resume
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
