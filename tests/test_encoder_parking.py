"""The encoders leave the accelerator while tuning (`model.keep_encoders: false`, the default), and that changes
nothing that tuning or generation computes."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file
from test_cli import moving_square
from typer.testing import CliRunner

from follow_your_motion.backbones.toy import ToyBackbone
from follow_your_motion.errors import InputError
from follow_your_motion.precedence import resolve_config
from follow_your_motion.transfer import Transfer
from follow_your_motion.video import write_video


@pytest.fixture(scope="module")
def setup(tiny_wan_dir, tmp_path_factory):
    """The reference, the settings file, and a whole transfer with the encoders kept on the device."""
    tmp = tmp_path_factory.mktemp("parking")
    ref = write_video(tmp / "ref.mp4", moving_square(9), 8)
    (tmp / "settings.yaml").write_text(tiny_config(2))
    kept = Transfer(_cfg(tiny_wan_dir, tmp, keep_encoders=True), tmp / "kept")
    assert kept.backbone.park_device is None
    return ref, tmp, kept.all().frames


def _cfg(tiny_wan_dir, tmp, **model):
    return resolve_config({"reference": str(tmp / "ref.mp4"), "prompt": "a robot walks",
                           "model": {"source": str(tiny_wan_dir), **model}}, tmp / "settings.yaml")


def _loras(run) -> dict[str, torch.Tensor]:
    return {f"{adapter}.{key}": value for adapter in ("spatial", "motion")
            for key, value in load_file(str(run / f"{adapter}_lora.safetensors")).items()}


def test_tuning_never_touches_the_parked_encoders(setup, tiny_wan_dir, tmp_path):
    """Parked on the meta device (no data: any use of them fails), the encoders are not needed by stages 1-3
    once the encodings are cached: every encoder parameter ends there, every transformer parameter stays on the
    compute device, and the LoRAs are the kept run's bit for bit."""
    _, tmp, _ = setup
    job = Transfer(_cfg(tiny_wan_dir, tmp), tmp_path / "run")
    assert job.backbone.park_device == torch.device("cpu")  # the default
    job.backbone.park_device = torch.device("meta")
    assert job.tune_motion() is not None  # stage 1 (for the heads), 2 and 3
    encoders = job.backbone.encoders()
    assert set(encoders) == {"text_encoder", "vae"}
    assert all(p.is_meta for m in encoders.values() for p in m.parameters())
    assert all(p.device == job.backbone.device for p in job.backbone.experts[0].module.parameters())
    ours, kept = _loras(tmp_path / "run"), _loras(tmp / "kept")
    assert ours.keys() == kept.keys() and all(torch.equal(ours[k], kept[k]) for k in ours)


def test_parking_changes_no_bit_of_the_loras_or_the_video(setup, tiny_wan_dir, tmp_path):
    """The default (parked on the CPU, back on the device to generate) against `keep_encoders`."""
    _, tmp, kept_frames = setup
    job = Transfer(_cfg(tiny_wan_dir, tmp), tmp_path / "run")
    frames = job.all().frames
    assert torch.equal(torch.from_numpy(frames), torch.from_numpy(kept_frames))
    ours, kept = _loras(tmp_path / "run"), _loras(tmp / "kept")
    assert ours.keys() == kept.keys() and all(torch.equal(ours[k], kept[k]) for k in ours)
    assert all(p.device == torch.device("cpu") for m in job.backbone.encoders().values() for p in m.parameters())


def test_encoders_ready_brings_them_back_and_parks_them_again(wan):
    """What generation and a new encoding go through: on the compute device inside, on the park device after."""
    moved = []
    for name, module in wan.encoders().items():
        module.to = lambda device, name=name: moved.append((name, str(device)))  # records, moves nothing
    wan.device, wan.park_device = torch.device("meta"), torch.device("cpu")  # the encoders sit parked on the CPU
    with wan.encoders_ready():
        assert sorted(moved) == [("text_encoder", "meta"), ("vae", "meta")]
    assert sorted(moved[2:]) == [("text_encoder", "cpu"), ("vae", "cpu")]
    moved.clear()
    wan.park_device = None  # keep_encoders, or offload: never moved
    wan.park_encoders()
    with wan.encoders_ready():
        pass
    assert moved == []


def test_every_encoder_is_named():
    toy = ToyBackbone.load()
    assert set(toy.encoders()) == {"text_encoder"} and toy.encoders()["text_encoder"] is toy.text_encoder


def test_keep_encoders_and_offload(tiny_wan_dir, setup):
    _, tmp, _ = setup
    assert _cfg(tiny_wan_dir, tmp, keep_encoders=True).model.keep_encoders
    with pytest.raises(InputError, match="keep_encoders keeps the encoders on the device, offload moves"):
        _cfg(tiny_wan_dir, tmp, keep_encoders=True, offload=True)


def test_flags_reach_the_settings(monkeypatch, tiny_wan_dir, setup):
    from follow_your_motion import transfer
    from follow_your_motion.cli import app

    ref, tmp, _ = setup
    seen = []

    class Recorder:
        def __init__(self, cfg, out):
            seen.append(cfg.model)

        def tune_motion(self):
            return []

    monkeypatch.setattr(transfer, "Transfer", Recorder)
    base = ["tune-motion", str(ref), "-p", "a robot walks", "-o", str(tmp / "flags"), "-m", str(tiny_wan_dir)]
    for extra in ([], ["--keep-encoders", "--compile"]):
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == 0, result.output
    assert [(m.keep_encoders, m.compile) for m in seen] == [(False, False), (True, True)]


def test_a_finished_run_opens_with_settings_that_tuning_ignores(setup):
    """`fym generate --compile`: `Transfer.open` takes model settings that do not change what was tuned."""
    _, tmp, _ = setup
    job = Transfer.open(tmp / "kept", model={"compile": True, "keep_encoders": False})
    assert job.cfg.model.compile and job.backbone.compiled
    assert job.backbone.park_device == torch.device("cpu")


def test_encoders_ready_is_reentrant_and_knows_a_device_by_any_name(wan, monkeypatch):
    """Generation encodes the reference inside its own `encoders_ready` block: the inner block must not park the
    encoders the outer one still uses; and `cuda` vs the parameters' `cuda:0` (here `cpu:0` vs `cpu`) is one
    device, not a reason to think the encoders parked."""
    parks = []
    monkeypatch.setattr(wan, "park_encoders", lambda: parks.append("park"))
    wan.park_device = torch.device("cpu")
    wan.device = torch.device("cpu", 0)
    with wan.encoders_ready():
        pass
    assert parks == []  # on the device already, by another name: nothing was parked, nothing to park again
    wan.device = torch.device("meta")  # the encoders (on the CPU) count as parked; moving them there is free
    with wan.encoders_ready():
        with wan.encoders_ready():
            pass
        assert parks == []  # the inner block left them for the outer one
        assert all(p.device.type == "meta" for m in wan.encoders().values() for p in m.parameters())
    assert parks == ["park"]  # the outer one parked them once
