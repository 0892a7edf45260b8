"""`fym bench compare`: runs of one suite reported together, a shared method renamed per run, paired on the
same cases against the chosen baseline; every refusal before anything is written."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from follow_your_motion.bench.compare import compare_runs, parse_run
from follow_your_motion.bench.report import write_report
from follow_your_motion.bench.stats import t_critical
from follow_your_motion.cli import app
from follow_your_motion.errors import InputError


def _result(case: str, method: str, error: float, seed: int = 0) -> dict:
    return {"case": case, "category": "single-object", "method": method, "prompt_index": 0, "seed": seed,
            "tuned": method != "base", "metrics": {"centred_error": error},
            "timings": {"motion": 3.0}, "paths": {"result": f"cases/{case}/{method}/p0_s0.mp4",
                                                  "reference_source": "/clips/a.mp4"}}


def _run(folder: Path, records: list[dict], suite: str = "toy-ablation12", overrides: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "suite.json").write_text(json.dumps({"manifest": {"name": suite}, "model": None,
                                                   "overrides": overrides or {}}))
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


PAPER = [_result("a", "fym", 0.10), _result("b", "fym", 0.20), _result("c", "fym", 0.30),
         _result("a", "base", 0.40), _result("b", "base", 0.41), _result("c", "base", 0.42)]
RELATIVE = [_result("a", "fym", 0.08), _result("b", "fym", 0.17), _result("c", "fym", 0.31),
            _result("d", "fym", 0.90)]  # case d only here: not paired


@pytest.fixture
def runs(tmp_path) -> list[tuple[Path, str]]:
    return [(_run(tmp_path / "paper", PAPER), "paper"),
            (_run(tmp_path / "rel", RELATIVE, overrides={"heads": {"rule": "relative"}}), "relative")]


def test_a_shared_method_is_named_per_run_and_paired_with_the_first_runs(runs, tmp_path):
    out = tmp_path / "cmp"
    compare_runs(runs, out)
    summary = json.loads((out / "results.json").read_text())
    assert summary["methods"] == ["fym@paper", "fym@relative", "base"]  # base ran once: its own name
    assert summary["paired"]["baseline"] == "fym@paper"
    differences = [0.08 - 0.10, 0.17 - 0.20, 0.31 - 0.30]
    mean = math.fsum(differences) / 3
    std = math.sqrt(math.fsum((d - mean) ** 2 for d in differences) / 2)
    stats = summary["paired"]["methods"]["fym@relative"]["centred_error"]
    assert stats["n"] == 3 and stats["mean"] == pytest.approx(mean, abs=1e-15)
    assert stats["ci95_half"] == pytest.approx(t_critical(2) * std / math.sqrt(3), abs=1e-15)
    assert summary["aggregates"]["fym@relative"]["overall"]["centred_error"]["n"] == 4  # unpaired d still counts
    record = json.loads((out / "compare.json").read_text())
    assert record["baseline"] == "fym@paper"
    assert record["runs"]["relative"]["overrides"] == {"heads": {"rule": "relative"}}
    assert record["runs"]["paper"]["methods"] == ["base", "fym"]
    markdown = (out / "results.md").read_text()
    assert "## Paired differences from fym@paper" in markdown
    assert f'| relative | {runs[1][0].resolve()} | default | {{"heads": {{"rule": "relative"}}}} |' in markdown


def test_the_merged_folder_reports_again_with_its_baseline_and_finds_the_runs_files(runs, tmp_path):
    out = tmp_path / "cmp"
    compare_runs(runs, out, baseline="fym@relative")
    write_report(out)  # what `fym bench report OUT` does: the recorded baseline, not fym's default rule
    summary = json.loads((out / "results.json").read_text())
    assert summary["paired"]["baseline"] == "fym@relative"
    assert summary["paired"]["methods"]["fym@paper"]["centred_error"]["mean"] == pytest.approx(
        math.fsum([0.10 - 0.08, 0.20 - 0.17, 0.30 - 0.31]) / 3, abs=1e-15)
    merged = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["run"] for r in merged] == ["paper"] * 6 + ["relative"] * 4
    first = merged[0]["paths"]
    assert os.path.normpath(out / first["result"]) == os.path.normpath(runs[0][0] / "cases/a/fym/p0_s0.mp4")
    assert first["reference_source"] == "/clips/a.mp4"  # absolute paths stay


def test_labels_default_to_folder_names(tmp_path):
    assert parse_run(str(tmp_path / "runs" / "robust")) == (tmp_path / "runs" / "robust", "robust")
    assert parse_run("runs/robust=paper") == (Path("runs/robust"), "paper")
    sweep = tmp_path / "lr=1e-4"
    sweep.mkdir()
    assert parse_run(str(sweep)) == (sweep, "lr=1e-4")  # an existing folder's '=' is part of its name
    assert parse_run(f"{sweep}=fast") == (sweep, "fast")


def test_an_earlier_compare_in_out_is_replaced_and_reused_tunings_keep_their_run(runs, tmp_path):
    out = tmp_path / "cmp"
    compare_runs(runs, out)
    records = [{**r, "method": "fym-dense", "tuning_from": "fym"} for r in PAPER if r["method"] == "fym"]
    with (runs[0][0] / "results.jsonl").open("a") as jsonl:
        jsonl.write("".join(json.dumps(r) + "\n" for r in records))
    compare_runs(runs, out, baseline="fym@relative")
    assert json.loads((out / "compare.json").read_text())["baseline"] == "fym@relative"
    merged = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["tuning_from"] for r in merged if r["method"] == "fym-dense"} == {"fym@paper"}
    assert all("tuning_from" not in r for r in merged if r["method"] != "fym-dense")


@pytest.mark.parametrize("case, message", [
    ("one run", "at least two"),
    ("same label", "same label"),
    ("other suite", "different suites"),
    ("out is a run", "is a benchmark run"),
    ("unknown baseline", "baseline 'fym@nowhere' is not among"),
    ("no suite.json", "no suite.json"),
    ("no folder", "not a benchmark directory"),
    ("run twice", "given twice"),
    ("label with |", "without '@', '|'"),
    ("out holds results", "not made by `fym bench compare`"),
])
def test_refusals_name_the_problem_and_write_nothing(runs, tmp_path, case, message):
    out = tmp_path / "cmp"
    baseline = None
    if case == "one run":
        runs = runs[:1]
    elif case == "same label":
        runs = [(runs[0][0], "x"), (runs[1][0], "x")]
    elif case == "other suite":
        runs = [runs[0], (_run(tmp_path / "leak", RELATIVE, suite="toy-leakage"), "leak")]
    elif case == "out is a run":
        out = runs[1][0]
    elif case == "unknown baseline":
        baseline = "fym@nowhere"
    elif case == "no folder":
        runs = [runs[0], (tmp_path / "nowhere", "nowhere")]
    elif case == "run twice":
        runs = [runs[0], (runs[0][0] / ".." / "paper", "again")]
    elif case == "label with |":
        runs = [runs[0], (runs[1][0], "a|b")]
    elif case == "out holds results":
        out.mkdir()
        (out / "results.jsonl").write_text(json.dumps(PAPER[0]) + "\n")
    else:
        (runs[1][0] / "suite.json").unlink()
    before = sorted(p.name for p in out.iterdir()) if out.exists() else None
    with pytest.raises(InputError, match=message):
        compare_runs(runs, out, baseline)
    assert (sorted(p.name for p in out.iterdir()) if out.exists() else None) == before


def test_the_command(runs, tmp_path):
    out = tmp_path / "cmp"
    args = ["bench", "compare", f"{runs[0][0]}=paper", f"{runs[1][0]}=relative", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "results.json").read_text())["paired"]["baseline"] == "fym@paper"
    refused = CliRunner().invoke(app, ["bench", "compare", str(runs[0][0]), "--out", str(tmp_path / "x")])
    assert refused.exit_code == 2 and "at least two" in refused.stderr and not (tmp_path / "x").exists()
    again = CliRunner().invoke(app, ["bench", "report", str(out), "--baseline", "base"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "results.json").read_text())["paired"]["baseline"] == "base"
    (out / "compare.json").write_text(json.dumps({"baseline": "fym@gone", "runs": {}}))
    gone = CliRunner().invoke(app, ["bench", "report", str(out)])
    assert gone.exit_code == 2 and "baseline method 'fym@gone' has no results" in gone.stderr
