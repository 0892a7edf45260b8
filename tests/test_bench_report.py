"""Benchmark report (tables, CI, plots, HTML rendered in headless Chromium) and `fym metrics` on real videos."""

from __future__ import annotations

import csv
import html
import json
import math
import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from follow_your_motion.bench.aggregates import load_results, tuning_time
from follow_your_motion.bench.report import write_report
from follow_your_motion.bench.stats import summarize, t_critical
from follow_your_motion.cli import app
from follow_your_motion.video import read_video, write_video

CHROMIUM = Path("/usr/bin/chromium")
METHODS = ("fym", "base")
# (case, category) x method -> motion_fidelity_det; fym's single-object pair is the hand-computed one
CASES = (("sw-single-0", "single-object"), ("sw-single-1", "single-object"), ("cam-0", "camera"), ("cam-1", "camera"))
DET = {
    ("sw-single-0", "fym"): 0.9, ("sw-single-1", "fym"): 0.7, ("cam-0", "fym"): 0.6, ("cam-1", "fym"): 0.8,
    ("sw-single-0", "base"): 0.5, ("sw-single-1", "base"): 0.4, ("cam-0", "base"): 0.3, ("cam-1", "base"): 0.2,
}
MISSING_RESULT = ("cam-1", "base")  # its result video is never written: the page must say "missing"
GIF_RESULT = ("cam-0", "base")  # written as .gif: shown with <img>


def fym(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def square_video(frames: int = 4, size: int = 32, step: int = 3, colour=(255, 255, 255)) -> np.ndarray:
    video = np.zeros((frames, size, size, 3), np.uint8)
    for t in range(frames):
        video[t, 10:18, 2 + step * t : 10 + step * t] = colour
    return video


def record(case: str, category: str, method: str) -> dict:
    ext = ".gif" if (case, method) == GIF_RESULT else ".mp4"
    """A result as bench/results.py writes it (schema fym-bench-result/1), trimmed to what the report reads."""
    null_dmt = (case, method) == ("cam-1", "base")  # one null: dmt has n=3 for base overall
    metrics = {
        "motion_fidelity_det": DET[case, method],
        "motion_fidelity_dmt": None if null_dmt else DET[case, method] - 0.1,
        "centred_error": 0.05,
        "colour_leak": method == "base" and category == "camera",
        "frames": 4,
    }
    if (case, method) == ("sw-single-0", "fym"):
        metrics["displacement_cosine"] = 0.8  # present once: its CI is "n/a"
    tuned = method == "fym"
    stages = {"classify": 1.0, "spatial": 10.0, "motion": 20.0} if tuned else dict.fromkeys(("classify", "spatial",
                                                                                              "motion"))
    return {
        "schema": "fym-bench-result/1", "case": case, "category": category, "tags": ["toy", "synthetic"],
        "method": method, "tuned": tuned, "prompt_index": 0, "prompt": "a blue square",
        "source_prompt": "a white square", "seed": 0, "metrics": metrics, "ground_truth": None,
        "metric_errors": {"motion_fidelity_dmt": "no pair of tracks shares a valid step"} if null_dmt else {},
        "timings": stages | {"generate": 3.0, "metrics": 0.5},
        "memory": {"ru_maxrss_kib": 900000, "cuda_max_allocated_bytes": None},
        "paths": {"reference": f"cases/{case}/reference.mp4", "reference_source": None,
                  "result": f"cases/{case}/{method}/samples/p0_s0{ext}", "side_by_side": None,
                  "run": f"cases/{case}/{method}"},
        "constants": {"tracker": "klt"},
    }


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """A bench directory as the runner leaves it (results/*.json only), and the report written from it."""
    root = tmp_path_factory.mktemp("bench")
    for i, (case, category) in enumerate(CASES):
        write_video(root / "cases" / case / "reference.mp4", square_video(step=2 + i), fps=8)
        for method in METHODS:
            rec = record(case, category, method)
            if (case, method) != MISSING_RESULT:
                write_video(root / rec["paths"]["result"], square_video(step=2 + i, colour=(0, 0, 255)), fps=8)
            out = root / "results" / f"{case}__{method}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(rec))
    return root, write_report(root)


# ------------------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(
    ("df", "expected"), [(1, 12.706), (2, 4.303), (3, 3.182), (5, 2.571), (10, 2.228), (30, 2.042), (120, 1.980)]
)
def test_t_critical_matches_table(df, expected):
    assert t_critical(df) == pytest.approx(expected, abs=6e-4)


def test_summarize_hand_computed():
    stats = summarize([0.9, 0.7])
    assert stats["mean"] == pytest.approx(0.8)
    # s = sqrt(0.02) = 0.141421; half = 12.7062 * s / sqrt(2) = 12.7062 * 0.1
    assert stats["ci95_half"] == pytest.approx(1.27062, abs=1e-5)
    assert summarize([0.3])["ci95_half"] is None
    assert summarize([])["n"] == 0


# ----------------------------------------------------------------------------------------------- report


def test_report_files_and_csv(bench):
    root, written = bench
    assert set(written) == {"csv", "json", "markdown", "html", "plot_fidelity_vs_time", "plot_per_category"}
    for path in written.values():
        assert path.is_file() and path.parent == root or path.parent == root / "plots"
    with written["csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    for column in ("case", "category", "method", "prompt", "seed", "tuned", "tags", "metrics.motion_fidelity_det",
                   "metrics.motion_fidelity_dmt", "metrics.frames", "timings.generate", "tuning_time_s",
                   "memory.ru_maxrss_kib", "paths.result"):
        assert column in rows[0], column
    assert "ground_truth" not in rows[0] and "constants" not in rows[0]  # nested records stay in the JSON
    by_key = {(r["case"], r["method"]): r for r in rows}
    assert float(by_key["cam-0", "fym"]["metrics.motion_fidelity_det"]) == 0.6
    assert float(by_key["cam-0", "fym"]["tuning_time_s"]) == 31.0  # classify + spatial + motion
    assert float(by_key["cam-0", "base"]["tuning_time_s"]) == 0.0  # "tuned": false
    assert by_key["cam-1", "base"]["metrics.motion_fidelity_dmt"] == ""  # null stays empty
    assert by_key["cam-1", "base"]["tags"] == "toy;synthetic"


def test_tuning_time_rules():
    assert tuning_time({"tuned": True, "timings": {"classify": None, "spatial": 2.0, "motion": 3.5}}) == 5.5
    assert tuning_time({"tuned": False, "timings": {"spatial": 2.0}}) == 0.0
    assert tuning_time({"timings": {"generate": 3.0, "total": 10.0}}) == 7.0
    assert tuning_time({"timings": {"classify": None, "generate": 3.0}}) is None
    assert tuning_time({}) is None


def test_report_markdown_hand_computed(bench):
    _, written = bench
    md = written["markdown"].read_text()
    # fym, single-object: 0.9 and 0.7 -> mean 0.8, half = 12.706 * std / sqrt(2) = 12.706 * 0.1
    assert re.search(r"\| single-object \| 2 \| 0\.8000 ± 1\.2706 \(n=2\) \|", md), md
    # fym overall: 0.9 0.7 0.6 0.8 -> mean 0.75, s = sqrt(0.05 / 3), t(3) = 3.182446
    half = 3.182446 * math.sqrt(0.05 / 3) / 2
    assert f"| fym | 4 | 0.7500 ± {half:.4f} (n=4) |" in md
    # base dmt: one null -> n=3; displacement_cosine once -> "n/a"
    base_dmt = summarize([0.4, 0.3, 0.2])
    assert f"{base_dmt['mean']:.4f} ± {base_dmt['ci95_half']:.4f} (n=3)" in md
    assert "0.8000 ± n/a (n=1)" in md
    assert "colour_leak (rate)" in md
    assert "frames" not in md  # a description of the result, not a score
    assert "31.00 ± 0.00 (n=4)" in md  # fym tuning time


def test_report_json_aggregates(bench):
    _, written = bench
    data = json.loads(written["json"].read_text())
    assert data["n_results"] == 8 and data["methods"] == ["fym", "base"]
    assert data["categories"] == ["camera", "single-object"]
    single = data["aggregates"]["fym"]["single-object"]["motion_fidelity_det"]
    assert single["n"] == 2 and single["mean"] == pytest.approx(0.8)
    assert single["ci95_low"] == pytest.approx(0.8 - 1.27062, abs=1e-4)
    leak = data["aggregates"]["base"]["camera"]["colour_leak"]
    assert leak["mean"] == 1.0


def test_report_html_references_exist(bench):
    root, written = bench
    page = written["html"].read_text()
    refs = [html.unescape(unquote(s)) for s in re.findall(r'(?:src|href)="([^"]+)"', page)]
    assert refs
    for ref in refs:
        assert not ref.startswith(("http:", "https:", "//", "/")), ref
        assert (root / ref).is_file(), f"broken reference {ref}"
    srcs = re.findall(r'src="([^"]+)"', page)
    assert len([s for s in srcs if s.endswith(".mp4")]) == 4 + 6  # 4 references, 6 mp4 results
    assert sum(s.endswith(".gif") for s in srcs) == 1
    assert "plots/fidelity_vs_time.png" in srcs and "plots/per_category.png" in srcs
    assert page.count("<video ") == 10 and "autoplay loop muted playsinline" in page
    assert 'class="missing">missing: cases/cam-1/base/samples/p0_s0.mp4' in page
    assert "<script" not in page
    assert "motion_fidelity_dmt: no pair of tracks shares a valid step" in page  # metric_errors shown
    assert page.count("<tr class='case'>") == 4


def test_report_plots_are_pngs(bench):
    _, written = bench
    for key in ("plot_fidelity_vs_time", "plot_per_category"):
        path = written[key]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = np.asarray(Image.open(path).convert("RGB"))
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 10, f"{path} looks blank"


def test_report_prefers_jsonl(tmp_path):
    (tmp_path / "results").mkdir()
    for case, category in CASES:
        (tmp_path / "results" / f"{case}.json").write_text(json.dumps(record(case, category, "fym")))
    assert len(load_results(tmp_path)[0]) == 4
    lines = [json.dumps(record(case, category, "base")) for case, category in CASES[:3]]
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    records, source = load_results(tmp_path)
    assert source == "results.jsonl" and {r["method"] for r in records} == {"base"} and len(records) == 3
    written = write_report(tmp_path)
    assert "missing: cases/sw-single-0/reference.mp4" in written["html"].read_text()


def test_report_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="no results found"):
        write_report(tmp_path)
    with pytest.raises(ValueError, match="not a benchmark directory"):
        write_report(tmp_path / "nope")
    (tmp_path / "results.jsonl").write_text('{"case": "a", "method": "m"}\n{broken\n')
    with pytest.raises(ValueError, match=r"results.jsonl:2: not valid JSON"):
        write_report(tmp_path)


def test_cli_bench_report(bench, tmp_path):
    root, _ = bench
    result = fym("bench", "report", root)
    assert result.exit_code == 0, result.output
    assert f"html: {root / 'index.html'}" in result.output
    empty = fym("bench", "report", tmp_path)
    assert empty.exit_code == 2
    assert "no results found" in empty.stderr and "Traceback" not in empty.output
    missing = fym("bench", "report", tmp_path / "nope")
    assert missing.exit_code == 2 and "not a benchmark directory" in missing.stderr


# ---------------------------------------------------------------------------------------------- browser


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
        "--disable-dev-shm-usage", "--mute-audio", f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


@pytest.mark.skipif(not CHROMIUM.is_file(), reason="chromium not installed (CI installs it: .ci/run)")
def test_report_renders_in_headless_chromium(bench, tmp_path):
    _, written = bench
    url = written["html"].resolve().as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<table id="summary">' in dom.stdout and '<table id="cases">' in dom.stdout
    summary = dom.stdout.split('<table id="summary">')[1].split("</table>")[0]
    assert summary.count("<tr>") == 1 + len(METHODS)  # header + one row per method
    assert dom.stdout.count('<tr class="case">') == len(CASES)
    assert dom.stdout.count("<video ") == 10

    shot = tmp_path / "page.png"
    result = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars", url)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.is_file() and shot.stat().st_size > 0
    image = np.asarray(Image.open(shot).convert("RGB")).astype(np.float64)
    assert image.shape[:2] == (2000, 1280)
    assert image.std() > 20, "screenshot looks blank"
    assert (image < 250).any(axis=2).mean() > 0.01, "screenshot is (almost) all white"


# -------------------------------------------------------------------------------------------- fym metrics


def textured_pan(frames: int = 8, size: int = 48, step: int = 2) -> np.ndarray:
    """A smooth random texture panning right (every point moves), (T, H, W, 3) uint8."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (size + 8, size + step * frames + 8)), (0, 0), 2.0)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    video = np.stack([texture[4 : 4 + size, 4 + step * t : 4 + step * t + size] for t in range(frames)])
    return np.repeat(video[..., None], 3, axis=3)


@pytest.fixture(scope="module")
def pan_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pan")
    video = textured_pan()
    ref = write_video(root / "ref.mp4", video, fps=8)
    reverse = write_video(root / "reverse.mp4", read_video(ref).frames[::-1].copy(), fps=8)
    big = write_video(root / "big.mp4", np.stack([cv2.resize(f, (96, 96)) for f in video]), fps=8)
    return {"ref": ref, "reverse": reverse, "big": big}


def test_cli_metrics_identical_and_reversed(pan_videos, tmp_path):
    ref = pan_videos["ref"]
    out_json = tmp_path / "scores.json"
    same = fym("metrics", ref, ref, "--prompt", "a texture pans right", "--json", out_json)
    assert same.exit_code == 0, same.output
    scores = json.loads(same.stdout)
    assert scores == json.loads(out_json.read_text())
    det = scores["motion_fidelity_det"]
    assert det["definition"] == "det" and det["score"] >= 0.99
    assert det["constants"]["grid_used"] == 50 and det["constants"]["tracker_used"] == "klt"
    assert scores["motion_fidelity_dmt"]["definition"] == "dmt"
    assert scores["text_similarity"] is None and "not computed" in scores["text_similarity_note"]
    assert scores["prompt"] == "a texture pans right" and scores["output_resized"] is False

    reverse = fym("metrics", ref, pan_videos["reverse"], "--prompt", "x")
    assert reverse.exit_code == 0, reverse.output
    reversed_scores = json.loads(reverse.stdout)
    assert reversed_scores["motion_fidelity_det"]["score"] < 0.5
    assert reversed_scores["motion_fidelity_dmt"]["score"] < scores["motion_fidelity_dmt"]["score"] - 0.5


def test_cli_metrics_resizes_output(pan_videos):
    result = fym("metrics", pan_videos["ref"], pan_videos["big"], "--prompt", "x")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["output_resized"] is True and scores["output_size_hw"] == [96, 96]
    assert scores["size_hw"] == [48, 48]
    assert scores["motion_fidelity_det"]["score"] > 0.9


def test_cli_metrics_errors(pan_videos, tmp_path):
    missing = fym("metrics", pan_videos["ref"], tmp_path / "nope.mp4", "--prompt", "x")
    assert missing.exit_code == 2
    assert "nope.mp4: file not found" in missing.stderr and "Traceback" not in missing.output
    tracker = fym("metrics", pan_videos["ref"], pan_videos["ref"], "--prompt", "x", "--tracker", "magic")
    assert tracker.exit_code == 2 and "unknown tracker 'magic'" in tracker.stderr
    # motion fidelity needs no prompt; text similarity (--clip) does, and says so before loading anything
    no_prompt = fym("metrics", pan_videos["ref"], pan_videos["ref"])
    assert no_prompt.exit_code == 0, no_prompt.output
    result = json.loads(no_prompt.stdout)
    assert result["prompt"] is None and result["motion_fidelity_det"]["score"] is not None
    assert result["text_similarity"] is None
    clip_without_prompt = fym("metrics", pan_videos["ref"], pan_videos["ref"], "--clip", tmp_path / "no-clip")
    assert clip_without_prompt.exit_code == 2
    assert "--clip scores text similarity, which needs the output's --prompt" in clip_without_prompt.stderr



def test_a_reused_tuning_counts_in_full_and_sampling_time_is_shown_alone(tmp_path):
    """A result that sampled from fym's tuning (``tuning_from``) carries fym's stage times: its tuning + sampling
    is a video's cost from scratch, its sampling time alone what one more video costs with that tuning at hand."""
    reused = record("cam-0", "camera", "fym") | {"method": "fym+flow-guidance", "tuning_from": "fym"}
    reused["timings"] = reused["timings"] | {"generate": 5.0}
    lines = [json.dumps(r) for r in (record("cam-0", "camera", "fym"), reused)]
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    written = write_report(tmp_path)
    md = written["markdown"].read_text()
    assert "| method | results | motion_fidelity_det |" in md and "| tuning time (s) | sampling time (s) |" in md
    assert "| fym+flow-guidance | 1 | 0.6000 ± n/a (n=1) |" in md
    assert "| 31.00 ± n/a (n=1) | 5.00 ± n/a (n=1) |" in md and "| 31.00 ± n/a (n=1) | 3.00 ± n/a (n=1) |" in md
    paired = json.loads(written["json"].read_text())["paired"]["methods"]["fym+flow-guidance"]
    assert (paired["tuning_time_s"]["mean"], paired["sampling_time_s"]["mean"]) == (0.0, 2.0)
    page = written["html"].read_text()
    assert "<dt>tuning time</dt><dd>31.0 s (reused fym's)</dd><dt>sampling time</dt><dd>5.0 s</dd>" in page
