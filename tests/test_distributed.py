"""Two-process (torchrun, CPU/gloo) LoRA training keeps every rank's parameters in sync, through the API and
through `fym` itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_script
from safetensors.torch import load_file
from test_cli import moving_square
from tiny_wan import build_tiny_wan_pipeline
from typer.testing import CliRunner

from follow_your_motion.cli import app
from follow_your_motion.config import TransferConfig
from follow_your_motion.video import read_video, write_video

SCRIPT = Path(__file__).with_name("ddp_step.py")
FYM = Path(__file__).with_name("fym_audited.py")  # `fym`, recording which process writes into the run
SELECTION = {0: [0, 1], 1: [2]}  # ddp_step.SELECTION
HEAD_DIM = 12  # tiny_wan
TIMEOUT_S = 180


def _steps(run: Path) -> list[int]:
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [e["step"] for e in events if e["event"] == "step"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    assert set(a) == set(b)
    return all(torch.equal(a[key], b[key]) for key in a)


def test_two_process_training_keeps_ranks_in_sync(tiny_wan_dir, tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()
    run_script(SCRIPT, tiny_wan_dir, two, nproc=2, cwd=tmp_path, timeout=TIMEOUT_S)
    run_script(SCRIPT, tiny_wan_dir, one, cwd=tmp_path, timeout=TIMEOUT_S)

    rank0, rank1 = load_file(two / "final-w2-r0.safetensors"), load_file(two / "final-w2-r1.safetensors")
    initial = load_file(two / "initial-w2-r0.safetensors")
    single = load_file(one / "final-w1-r0.safetensors")
    assert len(rank0) == 2 * 4 * 2  # 2 layers x (q, k, v, out) x (A, B)
    assert {t.dtype for t in rank0.values()} == {torch.float32}  # float32 LoRA over the bf16 base
    assert _same(initial, load_file(two / "initial-w2-r1.safetensors"))
    assert _same(initial, load_file(one / "initial-w1-r0.safetensors"))

    # DDP averaged the gradients, so both ranks took exactly the same optimizer steps ...
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # ... which moved the weights ...
    assert not _same(rank0, initial)
    # ... and differ from one process's steps: each rank drew its own noise, so the mean gradient is new.
    assert not _same(rank0, single)

    # DDP reduced the masked gradients: channels of unselected heads are still exactly zero
    for key, tensor in rank0.items():
        layer = int(key.split(".")[1])
        keep = torch.zeros(4 * HEAD_DIM, dtype=torch.bool)
        for head in SELECTION[layer]:
            keep[head * HEAD_DIM : (head + 1) * HEAD_DIM] = True
        if "to_out" in key and "lora_A" in key:
            assert not tensor[:, ~keep].any() and tensor[:, keep].any(), key
        elif "lora_B" in key and "to_out" not in key:
            assert not tensor[~keep].any() and tensor[keep].any(), key

    # only the main process logs and checkpoints: every step once
    assert _steps(two / "run") == [1, 2, 3]
    assert _steps(one / "run") == [1, 2, 3]
    assert sorted(p.name for p in (two / "run" / "checkpoints" / "motion").iterdir()) == ["step-0000003"]


def test_fsdp_shards_the_base_and_matches_ddp(tiny_wan_dir, tmp_path):
    """distributed: fsdp shards the frozen base (FSDP2) and averages the replicated LoRA's gradients by hand:
    the ranks agree and take exactly DDP's steps."""
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    ddp.mkdir()
    fsdp.mkdir()
    run_script(SCRIPT, tiny_wan_dir, ddp, "ddp", nproc=2, cwd=tmp_path, timeout=TIMEOUT_S)
    run_script(SCRIPT, tiny_wan_dir, fsdp, "fsdp", nproc=2, cwd=tmp_path, timeout=TIMEOUT_S)
    rank0, rank1 = load_file(fsdp / "final-w2-r0.safetensors"), load_file(fsdp / "final-w2-r1.safetensors")
    assert _same(rank0, rank1)
    assert _same(rank0, load_file(ddp / "final-w2-r0.safetensors"))
    assert not _same(rank0, load_file(fsdp / "initial-w2-r0.safetensors"))
    assert _steps(fsdp / "run") == [1, 2, 3]
    # each process holds about half of the base weights (FSDP splits each tensor's first axis), DDP all of them
    held = [json.loads((fsdp / f"base-w2-r{rank}.json").read_text()) for rank in (0, 1)]
    total = held[0]["total"]
    assert held[0]["held"] + held[1]["held"] == total and all(0.4 * total < h["held"] < 0.6 * total for h in held)
    assert json.loads((ddp / "base-w2-r1.json").read_text()) == {"total": total, "held": total}


def test_early_stop_stops_every_rank_at_the_same_step(tiny_wan_dir, tmp_path):
    """The plateau rule decides on the mean over the processes (one all-reduce per window): both ranks stop
    after step 2 together, with the same LoRA, and the main process logs the stop once."""
    run_script(SCRIPT, tiny_wan_dir, tmp_path, "ddp", "early-stop", nproc=2, cwd=tmp_path, timeout=TIMEOUT_S)
    assert _same(load_file(tmp_path / "final-w2-r0.safetensors"), load_file(tmp_path / "final-w2-r1.safetensors"))
    assert _steps(tmp_path / "run") == [1, 2]
    events = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "early_stop"] == [2]


def cli_config(grad_accum: int = 1, distributed: str = "ddp") -> str:
    """Both tuning stages for 2 steps on the tiny Wan, with the Wan recipe's bf16 base, autocast and checkpointing."""
    stage = (f"steps: 2, rank: 4, lr: 0.01, checkpoint_every: 2, grad_accum: {grad_accum}, "
             f"distributed: {distributed}")
    return f"""\
video: {{frames: 9, height: 32, width: 32}}
heads: {{num_queries: 32}}
spatial: {{{stage}}}
motion: {{{stage}, keep_frames: 2}}
generate: {{steps: 2}}
"""


def fym_args(root: Path, pipe: Path, name: str, config: str) -> list[object]:
    (root / f"{name}.yaml").write_text(config)
    return ["transfer", root / "ref.mp4", "-p", "a robot walks", "--out", root / name, "--model", pipe,
            "--config", root / f"{name}.yaml"]


def fym_one_process(root: Path, pipe: Path, name: str, config: str) -> None:
    result = CliRunner().invoke(app, [str(a) for a in fym_args(root, pipe, name, config)])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"


def fym_two_processes(root: Path, pipe: Path, name: str, config: str) -> Path:
    """`fym transfer` under torchrun with two processes; the folder of each rank's writes into the run."""
    record = root / f"{name}-writes"
    record.mkdir()
    run_script(FYM, root / name, record, *fym_args(root, pipe, name, config), nproc=2, cwd=root, timeout=TIMEOUT_S)
    return record


def loras(run: Path) -> dict[str, torch.Tensor]:
    """Every LoRA file of a run (each adapter of each expert), keyed by file and tensor."""
    return {f"{path.name}/{key}": value for path in sorted(run.glob("*_lora*.safetensors"))
            for key, value in load_file(path).items()}


def one_job(run: Path, record: Path, experts: tuple[str, ...] = ("",)) -> None:
    """One job's run directory: every event logged once, every file written by rank 0 alone."""
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    stages = [f"{adapter}{'_' + e if e else ''}" for adapter in ("spatial", "motion") for e in experts]
    assert [e["expert"] for e in events if e["event"] == "heads"] == list(experts)
    assert [(e["stage"], e["step"]) for e in events if e["event"] == "step"] == [(s, n) for s in stages for n in (1, 2)]
    assert [(e["adapter"], e["expert"]) for e in events if e["event"] == "saved"] == [
        (adapter, e) for adapter in ("spatial", "motion") for e in experts]
    assert [e["event"] for e in events].count("generated") == 1
    written = json.loads((record / "writes-rank0.json").read_text())
    assert any(w.startswith("os.rename") and "/motion_lora" in w for w in written)
    assert json.loads((record / "writes-rank1.json").read_text()) == []


def test_torchrun_cli_is_one_data_parallel_job(tiny_wan_dir, tmp_path):
    """`torchrun --nproc_per_node 2 -m follow_your_motion.cli transfer` on the CPU is one job of two processes:
    its LoRAs are those of one process that accumulates the same two micro-batches per step (the streams of
    ranks 0 and 1 are the micro-batches 0 and 1 of one process, and halving a gradient is exact, so they agree
    bit for bit), not one process's own; each event is logged once and rank 1 writes nothing."""
    write_video(tmp_path / "ref.mp4", moving_square(9), 8)
    record = fym_two_processes(tmp_path, tiny_wan_dir, "two", cli_config())
    fym_one_process(tmp_path, tiny_wan_dir, "one", cli_config())
    fym_one_process(tmp_path, tiny_wan_dir, "accumulated", cli_config(grad_accum=2))

    two = loras(tmp_path / "two")
    assert {key.split("/")[0] for key in two} == {"spatial_lora.safetensors", "motion_lora.safetensors"}
    assert _same(two, loras(tmp_path / "accumulated"))
    assert not _same(two, loras(tmp_path / "one"))
    one_job(tmp_path / "two", record)


def test_fsdp_through_the_cli_shards_once_and_tunes_as_ddp(tmp_path):
    """`distributed: fsdp` under torchrun, on a Wan2.2-A14B layout (two experts): both transformers are sharded
    once, at load, for stage 1, both tuning stages of both experts and generation (stage 3 used to shard again
    and crash), and every LoRA equals the data-parallel one bit for bit (tolerance 0: the LoRA is replicated and
    its gradients averaged as DDP does; the all-gathered base weights are the same numbers), as does the video."""
    pipe = build_tiny_wan_pipeline(tmp_path / "a14b", boundary_ratio=0.875)
    write_video(tmp_path / "ref.mp4", moving_square(9), 8)
    record = fym_two_processes(tmp_path, pipe, "fsdp", cli_config(distributed="fsdp"))
    fym_one_process(tmp_path, pipe, "accumulated", cli_config(grad_accum=2))

    fsdp = loras(tmp_path / "fsdp")
    assert {key.split("/")[0] for key in fsdp} == {f"{adapter}_lora_{expert}.safetensors" for adapter in
                                                  ("spatial", "motion") for expert in ("high_noise", "low_noise")}
    assert _same(fsdp, loras(tmp_path / "accumulated"))
    one_job(tmp_path / "fsdp", record, ("high_noise", "low_noise"))
    for rank in (0, 1):  # sharded once, at load: each process holds about half of both transformers' weights
        ((held, whole),) = json.loads((record / f"shards-rank{rank}.json").read_text())
        assert 0.4 * whole < held < 0.6 * whole, (rank, held, whole)
    video = [read_video(tmp_path / name / "samples" / "result.mp4").frames for name in ("fsdp", "accumulated")]
    assert np.array_equal(*video)

    # the finished run again, as `fym generate` (`-r`: torchrun itself would take `--run` for its `--run-path`):
    # the LoRA files loaded into the freshly sharded transformers give the same video
    (tmp_path / "again-writes").mkdir()
    run = tmp_path / "fsdp"
    run_script(FYM, run, tmp_path / "again-writes", "generate", "-r", run, "--name", "again", nproc=2, cwd=tmp_path,
               timeout=TIMEOUT_S)
    assert np.array_equal(read_video(tmp_path / "fsdp" / "samples" / "again.mp4").frames, video[0])
    assert json.loads((tmp_path / "again-writes" / "writes-rank1.json").read_text()) == []


def test_sharding_is_decided_once_for_both_stages():
    """FSDP shards the model once for both tuning stages: one process never shards, stages asking for different
    ways are refused, and so is fsdp with offload (which moves whole components); a stage with no steps has no say."""
    from follow_your_motion.errors import InputError
    from follow_your_motion.run_settings import shards_the_model

    def cfg(spatial: str, motion: str, offload: bool = False, spatial_steps: int = 10) -> TransferConfig:
        return TransferConfig.model_validate({
            "reference": "r.mp4", "prompt": "p", "model": {"offload": offload},
            "spatial": {"distributed": spatial, "steps": spatial_steps}, "motion": {"distributed": motion}})

    assert shards_the_model(cfg("fsdp", "fsdp"), 2) and not shards_the_model(cfg("fsdp", "fsdp"), 1)
    assert not shards_the_model(cfg("ddp", "ddp"), 2)
    assert shards_the_model(cfg("ddp", "fsdp", spatial_steps=0), 2)
    with pytest.raises(InputError, match="spatial.distributed and motion.distributed differ"):
        shards_the_model(cfg("ddp", "fsdp"), 2)
    with pytest.raises(InputError, match="model.offload"):
        shards_the_model(cfg("fsdp", "fsdp", offload=True), 2)
