"""The benchmark runner: each work item once, resumable, sharded over processes, scored and recorded."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from bench_shard import SHARD_METHODS, FakeTransfer, shapes_case, shard_manifest
from conftest import run_script, tiny_config
from typer.testing import CliRunner

from follow_your_motion.bench import runner
from follow_your_motion.bench.manifest import validate_manifest
from follow_your_motion.bench.methods import get_methods
from follow_your_motion.bench.results import SCHEMA, result_path
from follow_your_motion.bench.sharding import WorkItem, shard, work_items
from follow_your_motion.cli import app
from follow_your_motion.video import write_video

SHARD_SCRIPT = Path(__file__).with_name("bench_shard.py")
TIMEOUT_S = 120
RECORD_KEYS = {
    "schema", "case", "category", "tags", "method", "tuned", "tuning_from", "prompt_index", "prompt", "source_prompt",
    "seed", "metrics", "ground_truth", "metric_errors", "timings", "memory", "paths", "video", "constants", "config",
    "device", "process", "created",
}
METRIC_KEYS = {
    "motion_fidelity_det", "motion_fidelity_dmt", "result_tracks_complete", "centred_error", "static_baseline_error",
    "displacement_cosine", "colour_leak", "target_found_frames", "target_shape_ok", "background_leak",
    "object_colour_leak", "frames",
}


def three_items():
    """Two cases, one method: 3 work items in 2 (case, method) units."""
    cases = [
        shapes_case("orbit", "red", "circle", "orbit-cw", ["a blue square", "a cyan triangle"]),
        shapes_case("zigzag", "green", "square", "zigzag", ["a yellow circle"]),
    ]
    return validate_manifest({"cases": cases}, "three_items()")


def keys(out: Path) -> list[str]:
    return sorted(p.stem for p in (out / "results").glob("*.json"))


def test_each_item_once_and_a_killed_run_recomputes_nothing_finished(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    expected = ["orbit__fym__p0__s0", "orbit__fym__p1__s0", "zigzag__fym__p0__s0"]

    killed = FakeTransfer(interrupt_at=2)
    monkeypatch.setattr(runner, "run_transfer", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.run_suite(three_items(), ["fym"], out)
    assert killed.calls == ["orbit__fym__p0_s0", "orbit__fym__p1_s0"]
    assert keys(out) == expected[:1]  # the interrupted item left no result
    first = result_path(out, WorkItem("orbit", "fym", 0, "a blue square", 0))
    before = (first.read_bytes(), first.stat().st_mtime_ns)
    assert not (out / "results.jsonl").exists()

    resumed = FakeTransfer()
    monkeypatch.setattr(runner, "run_transfer", resumed)
    results = runner.run_suite(three_items(), ["fym"], out)
    assert resumed.calls == ["orbit__fym__p1_s0", "zigzag__fym__p0_s0"]  # nothing finished is run again
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before
    assert keys(out) == expected
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [f"{r['case']}__{r['method']}__p{r['prompt_index']}__s{r['seed']}" for r in lines] == expected

    again = FakeTransfer()
    monkeypatch.setattr(runner, "run_transfer", again)
    runner.run_suite(three_items(), ["fym"], out)
    with pytest.raises(ValueError, match=r"made with other settings \(generate.steps: 20 -> 3\)"):
        runner.run_suite(three_items(), ["fym"], out, overrides={"generate": {"steps": 3}})
    assert again.calls == []


def test_results_made_before_a_setting_existed_count_at_its_default(tmp_path, monkeypatch):
    """A result whose config lacks a setting added since (an older version wrote it) was made at that setting's
    default: it counts for a run at the default, and a run that sets another value is refused."""
    out = tmp_path / "bench"
    monkeypatch.setattr(runner, "run_transfer", FakeTransfer())
    runner.run_suite(three_items(), ["fym"], out)
    for path in (out / "results").glob("*.json"):
        record = json.loads(path.read_text())
        del record["config"]["motion"]["lr_schedule"], record["config"]["motion"]["downsample"]
        path.write_text(json.dumps(record))
    again = FakeTransfer()
    monkeypatch.setattr(runner, "run_transfer", again)
    runner.run_suite(three_items(), ["fym"], out)
    assert again.calls == []
    with pytest.raises(ValueError, match=r"made with other settings \(motion.downsample: None -> 2\)"):
        runner.run_suite(three_items(), ["fym"], out, overrides={"motion": {"downsample": 2}})


def test_result_schema_and_ground_truth_metrics(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    monkeypatch.setattr(runner, "run_transfer", FakeTransfer())
    results = runner.run_suite(shard_manifest(), ["fym", "base"], out, seeds=(3,))
    records = {(r["case"], r["method"]): r for r in map(json.loads, results.read_text().splitlines())}
    assert len(records) == 4

    for (case, method), record in records.items():
        assert set(record) == RECORD_KEYS
        assert record["schema"] == SCHEMA
        assert (record["seed"], record["category"], record["tuned"]) == (3, "single-object", method == "fym")
        assert set(record["metrics"]) == METRIC_KEYS
        assert set(record["timings"]) == {"classify", "spatial", "motion", "generate", "metrics"}
        assert set(record["memory"]) == {"ru_maxrss_kib", "cuda_max_allocated_bytes"}
        assert record["memory"]["ru_maxrss_kib"] > 0
        assert set(record["paths"]) == {"reference", "reference_source", "result", "side_by_side", "run"}
        for key in ("reference", "result", "run"):
            assert not Path(record["paths"][key]).is_absolute()
            assert (out / record["paths"][key]).exists(), key
        assert record["paths"]["result"] == f"cases/{case}/{method}/samples/p0_s3.mp4"
        assert record["config"]["generate"]["seed"] == 3
        assert set(record["constants"]) >= {"motion_fidelity_det", "motion_fidelity_dmt", "tracker", "ground_truth"}
        for key in ("motion_fidelity_det", "motion_fidelity_dmt"):
            assert -1.0 <= record["metrics"][key] <= 1.0, (case, method, key)
        assert record["metric_errors"] == {}
        (obj,) = record["ground_truth"]["objects"]
        assert obj["target_colour"] in record["prompt"] and obj["reference_colour"] in record["source_prompt"]
        assert record["metrics"]["colour_leak"] is False
        assert record["metrics"]["target_found_frames"] == 9
        assert record["video"]["result"] == record["video"]["reference"] == [9, 32, 32]

    for case in ("orbit", "zigzag"):
        tuned, base = records[(case, "fym")]["metrics"], records[(case, "base")]["metrics"]
        # the fake "fym" result moves exactly like the reference (recoloured); the fake "base" stands still
        assert tuned["displacement_cosine"] > 0.95 and tuned["centred_error"] < 0.05
        assert base["centred_error"] == pytest.approx(base["static_baseline_error"], abs=0.02)
        assert tuned["motion_fidelity_det"] > base["motion_fidelity_det"]
        assert records[(case, "fym")]["timings"]["motion"] == 3.0
        assert records[(case, "base")]["timings"]["motion"] is None

    suite = json.loads((out / "suite.json").read_text())
    assert [m["name"] for m in suite["methods"]] == ["fym", "base"]
    assert suite["methods"][1]["tune"] is False
    assert [c["id"] for c in suite["manifest"]["cases"]] == ["orbit", "zigzag"]
    assert suite["configs"]["base"]["generate"]["motion_scale"] == 0.0
    assert len(suite["items"]) == 4


def test_shards_partition_the_run_directories():
    items = work_items(three_items(), get_methods("fym,base"), (0, 1))
    assert len(items) == 12
    parts = [shard(items, rank, 3) for rank in range(3)]
    assert sorted(i.key for part in parts for i in part) == sorted(i.key for i in items)
    units = [{(i.case, i.method) for i in part} for part in parts]
    assert all(not (a & b) for n, a in enumerate(units) for b in units[n + 1:])  # no run directory shared
    assert all(parts)
    # balanced per method: with 2 processes each gets one of the two cases' costly fym units
    two = [{(i.case, i.method) for i in shard(items, rank, 2)} for rank in range(2)]
    assert [sorted(m for _, m in unit) for unit in two] == [["base", "fym"], ["base", "fym"]]


def test_bad_settings_fail_before_any_work(tmp_path, monkeypatch):
    fake = FakeTransfer()
    monkeypatch.setattr(runner, "run_transfer", fake)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        runner.run_suite(three_items(), ["fym", "nope"], tmp_path)
    with pytest.raises(ValueError):
        runner.run_suite(three_items(), ["fym"], tmp_path, overrides={"motion": {"rope": "sideways"}})
    assert fake.calls == []


def test_two_processes_run_each_item_exactly_once(tmp_path):
    out = tmp_path / "bench"
    run_script(SHARD_SCRIPT, out, nproc=2, cwd=tmp_path, timeout=TIMEOUT_S)

    calls = [line.split() for f in sorted((out / "calls").glob("*.txt")) for line in f.read_text().splitlines()]
    expected = {f"{case}__{method}__p0_s0" for case in ("orbit", "zigzag") for method in SHARD_METHODS}
    assert Counter(item for _, _, item in calls) == Counter(expected)  # each exactly once, across processes
    assert {rank for _, rank, _ in calls} == {"0", "1"} and len({pid for pid, _, _ in calls}) == 2
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {f"{r['case']}__{r['method']}__p0_s0" for r in records} == expected and len(records) == 6
    assert {r["process"]["world"] for r in records} == {2}
    assert {r["process"]["rank"] for r in records} == {0, 1}
    assert len(list((out / "results").glob("*.json"))) == 6
    # fym+flow-guidance samples from fym's tuning of its case, on the process that tuned it: one tuning per case
    trained = [line.split() for f in (out / "trained").glob("*.txt") for line in f.read_text().splitlines()]
    assert sorted(run for _, _, run in trained) == ["orbit__fym", "zigzag__fym"]
    by_key = {(r["case"], r["method"]): r for r in records}
    for case in ("orbit", "zigzag"):
        reused, source = by_key[case, "fym+flow-guidance"], by_key[case, "fym"]
        assert (reused["tuning_from"], source["tuning_from"]) == ("fym", None)
        assert reused["process"]["pid"] == source["process"]["pid"]


TINY_CONFIG = tiny_config(2)


def moving_square(frames: int = 9, size: int = 32) -> np.ndarray:
    video = np.zeros((frames, size, size, 3), np.uint8)
    video[:, :, :] = (np.arange(size)[None, :, None] * 4).astype(np.uint8)  # a ramp: texture for the tracker
    for t in range(frames):
        x = 2 + (size - 12) * t // (frames - 1)
        video[t, 12:20, x : x + 8] = (255, 40, 40)
    return video


def test_fym_bench_run_end_to_end_on_tiny_wan(tiny_wan_dir, tmp_path):
    write_video(tmp_path / "videos" / "square.mp4", moving_square(), 8.0)
    (tmp_path / "suite.yaml").write_text(
        "cases:\n"
        "  - {id: square, category: single-object, reference: videos/square.mp4, caption: a robot walks,\n"
        "     targets: [a cat jumps]}\n"
    )
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG)
    out = tmp_path / "bench"
    args = ["bench", "run", str(tmp_path / "suite.yaml"), "--methods", "fym,base", "--out", str(out),
            "--model", str(tiny_wan_dir), "--config", str(tmp_path / "tiny.yaml"), "--seeds", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    assert result.output.strip().endswith("results.jsonl")

    records = {r["method"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert set(records) == {"fym", "base"}
    for record in records.values():
        metrics = record["metrics"]
        assert isinstance(metrics["motion_fidelity_det"], float) and math.isfinite(metrics["motion_fidelity_det"])
        # A random-weight model generates noise: KLT loses every point after frame 0, and DMT (displacements
        # only) is then undefined; it must come back as a number or as null with the reason recorded.
        dmt = metrics["motion_fidelity_dmt"]
        if dmt is None:
            assert "valid step" in record["metric_errors"]["motion_fidelity_dmt"], record["metric_errors"]
            assert metrics["result_tracks_complete"] == 0.0
        else:
            assert math.isfinite(dmt)
        assert record["metrics"]["centred_error"] is None  # no ground truth for a video case
        assert record["paths"]["reference_source"] == str((tmp_path / "videos" / "square.mp4").resolve())
        assert (out / record["paths"]["reference"]).is_file() and (out / record["paths"]["result"]).is_file()
        assert record["config"]["model"]["source"] == str(tiny_wan_dir)
        assert record["config"]["generate"]["steps"] == 2
    fym, base = records["fym"], records["base"]
    assert all(fym["timings"][s] > 0 for s in ("classify", "spatial", "motion", "generate"))
    assert [base["timings"][s] for s in ("classify", "spatial", "motion")] == [None, None, None]
    assert base["config"]["generate"]["motion_scale"] == 0.0
    run = out / "cases" / "square"
    assert (run / "fym" / "motion_lora.safetensors").is_file() and (run / "fym" / "heads.json").is_file()
    assert not (run / "base" / "motion_lora.safetensors").exists()

    # a second run finds everything done and loads no model
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads((out / "results" / "square__fym__p0__s0.json").read_text())["created"] == fym["created"]
