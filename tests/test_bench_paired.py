"""Paired differences between methods: values by hand, pairing by (case, prompt, seed), the report's section."""

from __future__ import annotations

import json
import math

import pytest

from follow_your_motion.bench.paired import baseline_of, paired_differences
from follow_your_motion.bench.report import write_report
from follow_your_motion.bench.stats import t_critical


def _result(case: str, method: str, error: float | None, leak: bool, seed: int = 0) -> dict:
    return {"case": case, "category": "single-object", "method": method, "prompt_index": 0, "seed": seed,
            "tuned": method != "base", "metrics": {"centred_error": error, "colour_leak": leak},
            "timings": {"classify": 1.0, "spatial": 2.0, "motion": 3.0 if method == "fym" else 5.0}}


RECORDS = [
    _result("a", "fym", 0.10, False), _result("b", "fym", 0.20, False), _result("c", "fym", 0.30, True),
    _result("a", "plain", 0.15, True), _result("b", "plain", 0.21, True), _result("c", "plain", 0.38, True),
    _result("d", "plain", 0.90, True),  # no fym result for case d: not paired
    _result("a", "fym", 0.50, False, seed=1), _result("a", "plain", None, False, seed=1),  # plain lacks the error
]


def test_differences_are_the_paired_ones_by_hand():
    diff = paired_differences(RECORDS, "fym")["plain"]
    errors = [0.15 - 0.10, 0.21 - 0.20, 0.38 - 0.30]  # cases a, b, c at seed 0; a at seed 1 has no plain error
    mean = math.fsum(errors) / 3
    std = math.sqrt(math.fsum((e - mean) ** 2 for e in errors) / 2)
    stats = diff["centred_error"]
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(mean, abs=1e-15)
    assert stats["ci95_half"] == pytest.approx(t_critical(2) * std / math.sqrt(3), abs=1e-15)
    assert diff["colour_leak"]["n"] == 4 and diff["colour_leak"]["mean"] == pytest.approx(2 / 4)  # 1,1,0,0
    assert diff["tuning_time_s"]["mean"] == pytest.approx(2.0) and diff["tuning_time_s"]["std"] == 0.0
    assert list(paired_differences(RECORDS, "fym")) == ["plain"]
    with pytest.raises(ValueError, match="baseline method 'base' has no results"):
        paired_differences(RECORDS, "base")
    assert baseline_of(["base", "fym"]) == "fym" and baseline_of(["base", "plain"]) == "base"


def test_the_report_carries_them(tmp_path):
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    written = write_report(tmp_path)
    summary = json.loads(written["json"].read_text())
    assert summary["paired"]["baseline"] == "fym"
    assert summary["paired"]["methods"]["plain"]["centred_error"]["n"] == 3
    markdown = written["markdown"].read_text()
    assert "## Paired differences from fym" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| plain | ") and "(n=3)" in line)
    assert f"{math.fsum([0.05, 0.01, 0.08]) / 3:.4f} ± " in row
