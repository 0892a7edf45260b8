"""What a run prints: tqdm's bar on a terminal, a few plain lines in a log (nohup, a scheduler, CI), and a line or
bar for every long step (encoding, stage 1, tuning, generation)."""

from __future__ import annotations

import io
import sys

from test_cli import fym, moving_square, ok

from follow_your_motion.progress import LOG_EVERY_S, announced, bar_options, progress
from follow_your_motion.video import write_video


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_tqdm_and_a_log_gets_a_line_per_interval(monkeypatch):
    assert bar_options(Terminal()) == {}
    assert bar_options(io.StringIO())["mininterval"] == LOG_EVERY_S == 30.0
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress(range(1000), desc="motion LoRA")
    for step in bar:
        bar.set_postfix(loss=f"{step:.4f}", refresh=False)
    with announced("encode the reference (VAE)"):
        pass
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and log.getvalue().endswith("\n")
    assert len(lines) == 4  # each: its first line and its last (the loop takes far less than 30 s)
    assert lines[0].startswith("motion LoRA:   0%") and "1000/1000" in lines[1] and "loss=999.0000" in lines[1]
    assert lines[2].startswith("encode the reference (VAE):   0%") and "1/1" in lines[3]


def test_a_toy_transfer_logs_a_few_lines_for_every_step(tmp_path):
    """`fym transfer` with stderr not a terminal (CliRunner's): no carriage return, a bounded number of lines
    whatever the step counts, and every long step named."""
    ref = write_video(tmp_path / "ref.mp4", moving_square(9), 8)
    (tmp_path / "c.yaml").write_text("heads: {num_queries: 32}\ngenerate: {steps: 3}\n")
    result = ok("transfer", ref, "-p", "a red circle", "-o", tmp_path / "run", "-c", tmp_path / "c.yaml",
                "--spatial-steps", 5, "--motion-steps", 20)
    log = result.stderr
    assert "\r" not in log
    lines = log.splitlines()
    assert len(lines) <= 20 and len(log) < 3000, log
    for step in ("encode the reference (VAE)", "encode the caption (text encoder)", "encode single frames (VAE)",
                 "stage 1: classify heads", "spatial LoRA", "motion LoRA", "generate"):
        assert sum(line.startswith(step) for line in lines) == 2, (step, log)
    assert "20/20" in log and "loss=" in log


def test_spatial_and_motion_steps_have_their_own_help():
    text = fym("transfer", "--help").stdout
    assert "steps of stage 2, the" in text and "steps of stage 3, the" in text

