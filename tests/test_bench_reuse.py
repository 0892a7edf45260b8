"""One tuning per case for bench methods that differ only in sampling settings (bench/reuse.py), on the toy model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bench_shard import shapes_case

import follow_your_motion.transfer as transfer
from follow_your_motion.bench import runner
from follow_your_motion.bench.manifest import validate_manifest
from follow_your_motion.bench.methods import Method, get_methods
from follow_your_motion.bench.reuse import REUSED, reuse_tuning, tuning_sources
from follow_your_motion.bench.runner import base_settings
from follow_your_motion.bench.sharding import shard, work_items
from follow_your_motion.bench.transfer_call import STAGE_STATS
from follow_your_motion.config import TransferConfig

# seconds per stage on the toy; 4 sampling steps so the flow guidance guides 2 of them
TINY = {"spatial": {"steps": 2}, "motion": {"steps": 2}, "generate": {"steps": 4},
        "guidance": {"flow": {"guided_fraction": 0.5}}}


def one_case():
    return validate_manifest({"cases": [shapes_case("orbit", "red", "circle", "orbit-cw", ["a blue square"])]},
                             "one_case()")


@pytest.fixture
def traced(monkeypatch):
    """(trainings: [(run directory name, stage)], samples: {run directory: frames}) of the runs that follow."""
    trainings: list[tuple[str, str]] = []
    samples: dict[str, np.ndarray] = {}
    train, sample = transfer.train_adapter, runner.run_transfer

    def counted(backbone, expert, run, stage, *args, **kwargs):
        trainings.append((run.root.name, stage))
        return train(backbone, expert, run, stage, *args, **kwargs)

    def kept(cfg, run_dir, *args):
        generated = sample(cfg, run_dir, *args)
        samples[Path(run_dir)] = generated.frames.copy()
        return generated

    monkeypatch.setattr(transfer, "train_adapter", counted)
    monkeypatch.setattr(runner, "run_transfer", kept)
    return trainings, samples


def records(out: Path) -> dict[str, dict]:
    return {r["method"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def test_sampling_only_methods_reuse_the_first_tuning_and_sample_what_their_own_would(tmp_path, traced):
    trainings, samples = traced
    out = tmp_path / "bench"
    runner.run_suite(one_case(), ["fym"], out, overrides=TINY)
    assert trainings == [("fym", "spatial"), ("fym", "motion")]
    # resumed with more methods: fym's results count as done; fym+flow-guidance samples from fym's tuning,
    # fym-no-heads (LoRAs on every head: another tuning) trains its own
    runner.run_suite(one_case(), ["fym", "fym+flow-guidance", "fym-no-heads"], out, overrides=TINY)
    assert trainings[2:] == [("fym-no-heads", "spatial"), ("fym-no-heads", "motion")]
    got = records(out)
    assert [got[m]["tuning_from"] for m in ("fym", "fym+flow-guidance", "fym-no-heads")] == [None, "fym", None]
    tuning = ("classify", "spatial", "motion")
    assert [got["fym+flow-guidance"]["timings"][s] for s in tuning] == [got["fym"]["timings"][s] for s in tuning]
    assert got["fym+flow-guidance"]["timings"]["generate"] > 0
    assert got["fym+flow-guidance"]["config"]["guidance"]["method"] == "flow"
    reusing = out / "cases" / "orbit" / "fym+flow-guidance"
    assert json.loads((reusing / REUSED).read_text())["method"] == "fym"
    assert not (reusing / "checkpoints").exists()  # nothing trained there
    assert not (out / "cases" / "orbit" / "fym-no-heads" / REUSED).exists()

    # the same method tuning its own LoRAs samples the same video, bit for bit (toy tuning is deterministic on CPU)
    alone = tmp_path / "alone"
    runner.run_suite(one_case(), ["fym+flow-guidance"], alone, overrides=TINY)
    assert trainings[4:] == [("fym+flow-guidance", "spatial"), ("fym+flow-guidance", "motion")]
    assert records(alone)["fym+flow-guidance"]["tuning_from"] is None
    reused, own = (samples[d / "cases" / "orbit" / "fym+flow-guidance"] for d in (out, alone))
    assert reused.dtype == np.uint8 and reused.std() > 0
    assert np.array_equal(reused, own)
    assert not np.array_equal(reused, samples[out / "cases" / "orbit" / "fym"])  # the guidance did act


def test_only_sampling_settings_share_a_tuning():
    settings, _ = base_settings(None, "cpu", None)
    methods = get_methods("fym,base,fym+ditflow,fym-no-heads,fym-spatial-on,fym+flow-guidance,two-stage-lora,"
                          "flow-guidance")
    assert tuning_sources(methods, settings) == {"fym+ditflow": "fym", "fym-spatial-on": "fym",
                                                 "fym+flow-guidance": "fym"}
    # generate.image decides whether a text-and-image model tunes on the reference's first frame
    with_image = Method("fym-image", {"generate": {"image": "a.png"}})
    assert tuning_sources([methods[0], with_image], settings) == {}


def test_shards_keep_a_reused_tuning_with_its_source():
    manifest = validate_manifest({"cases": [
        shapes_case(f"c{n}", "red", "circle", "orbit-cw", ["a blue square"]) for n in range(3)]}, "three cases")
    methods = get_methods("fym,base,fym+flow-guidance,fym+ditflow")
    items = work_items(manifest, methods, (0,))
    sources = {"fym+flow-guidance": "fym", "fym+ditflow": "fym"}
    parts = [shard(items, rank, 2, sources) for rank in range(2)]
    assert sorted(i.key for part in parts for i in part) == sorted(i.key for i in items)
    for part in parts:
        for item in part:
            if item.method in sources:  # its source's item of the case is on this process, before it
                source = next(i for i in part if (i.case, i.method) == (item.case, "fym"))
                assert part.index(source) < part.index(item)


def finished_tuning(run: Path, stages=("classify", "spatial", "motion")) -> None:
    """The files the bench leaves in a run directory once `stages` are tuned (bench/transfer_call.py)."""
    run.mkdir(parents=True)
    for name in ("heads.json", "spatial_lora.safetensors", "motion_lora.safetensors"):
        (run / name).write_text(name)
    (run / STAGE_STATS).write_text(json.dumps({s: {"seconds": 1.0} for s in stages}))


def test_reuse_needs_a_finished_tuning_and_a_killed_link_resumes(tmp_path):
    cfg = TransferConfig()  # classified heads, spatial and motion stages
    finished_tuning(tmp_path / "half", stages=("classify", "spatial"))  # killed while tuning its motion LoRA
    assert not reuse_tuning(tmp_path / "half", tmp_path / "a", "fym", cfg) and not (tmp_path / "a").exists()
    finished_tuning(tmp_path / "own")  # a run that tuned itself (before reuse): resumed as it was
    finished_tuning(tmp_path / "fym")
    assert not reuse_tuning(tmp_path / "fym", tmp_path / "own", "fym", cfg)
    assert not (tmp_path / "own" / REUSED).exists()

    assert reuse_tuning(tmp_path / "fym", tmp_path / "b", "fym", cfg)
    linked = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert linked == sorted([REUSED, STAGE_STATS, "heads.json", "motion_lora.safetensors", "spatial_lora.safetensors"])
    (tmp_path / "b" / "motion_lora.safetensors").unlink()  # as if killed before linking it
    assert reuse_tuning(tmp_path / "fym", tmp_path / "b", "fym", cfg)  # its marker: still the reuse, completed
    assert (tmp_path / "b" / "motion_lora.safetensors").read_text() == "motion_lora.safetensors"
