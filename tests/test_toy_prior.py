"""The motion-prior measure (toyworld.prior): path kinds, amplitudes, and the summary of a model's samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from follow_your_motion.toyworld import prior
from follow_your_motion.toyworld.render import LINE_PROGRAMS, ObjectSpec, SceneSpec, render


def _track(program: str, phase: float = 0.0, colour: str = "red") -> np.ndarray:
    return render(SceneSpec((ObjectSpec("circle", colour, program, 0.25, phase=phase),))).tracks[
        f"{colour} circle"].centroid


def _polyline(vertices: list[tuple[float, float]], frames: int = 9) -> np.ndarray:
    v = np.asarray(vertices, float)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(v, axis=0), axis=1))])
    s = np.linspace(0, arc[-1], frames)
    return np.stack([np.interp(s, arc, v[:, 0]), np.interp(s, arc, v[:, 1])], 1)


@pytest.mark.parametrize("program", LINE_PROGRAMS)
def test_rendered_straight_lines_are_straight(program: str) -> None:
    assert prior.classify_path(_track(program), 32) == "straight"


@pytest.mark.parametrize(("program", "kind"), [("static", "still"), ("orbit-cw", "curved"), ("orbit-ccw", "curved"),
                                               ("spiral", "curved"), ("figure-eight", "cornered")])
def test_rendered_programs_get_their_kind_at_every_phase(program: str, kind: str) -> None:
    for phase in np.linspace(0, 1, 8, endpoint=False):
        assert prior.classify_path(_track(program, phase), 32) == kind


def test_the_kinds_follow_their_thresholds() -> None:
    size = 32.0
    still = np.array([[10.0, 10.0], [11.2, 10.0]] * 4 + [[10.0, 10.0]])  # 1.2 px of range: amplitude 0.019
    assert prior.amplitude(still, size) == pytest.approx(0.6 / 32)
    assert prior.classify_path(still, size) == "still"
    right_angle = _polyline([(0, 0), (16, 0), (16, 16)]) + 5  # a 90-degree corner between two steps
    assert prior.classify_path(right_angle, size) == "cornered"
    softened = _polyline([(0, 0), (16, 0), (17, 1), (17, 17)]) + 5  # the same turn in two steps of 45
    assert prior.classify_path(softened, size) == "curved"
    bent = _polyline([(0, 0), (16, 0), (32, 2.5)], frames=17)  # turns 9 degrees once: 1.2 px off a 32 px line
    assert prior.classify_path(bent, size) == "straight"
    lost = _track("left")
    lost[3] = np.nan
    assert prior.classify_path(lost, size) == "lost"
    line = _polyline([(4, 16), (28, 16)])  # 3 px a step
    assert prior.classify_path(line, size) == "straight"
    teleport = line.copy()
    teleport[5:] += [0, 8.2]  # one step of 3 px across and 8.2 down: 0.273 of the frame, past JUMP (0.25)
    assert prior.classify_path(teleport, size) == "jumped"
    teleport[5:] -= [0, 0.8]  # 3 across, 7.4 down: 0.2496 of the frame, a step the data takes (with tracking noise)
    assert prior.classify_path(teleport, size) == "curved"


def test_summary_counts_every_kind_and_amplitudes_of_found_paths() -> None:
    rows = [{"kind": "curved", "amplitude": 0.2}, {"kind": "still", "amplitude": 0.01},
            {"kind": "lost", "amplitude": None}, {"kind": "curved", "amplitude": 0.3},
            {"kind": "jumped", "amplitude": 0.4}]
    summary = prior.summarise(rows)
    assert summary["shares"] == {"lost": 0.2, "still": 0.2, "jumped": 0.2, "straight": 0.0, "curved": 0.4,
                                 "cornered": 0.0}
    assert summary["amplitude_quantiles"]["0.5"] == pytest.approx(0.2)
    assert summary["amplitude_quantiles"]["0.1"] == pytest.approx(0.01 + 0.2 * 0.19)


class _FakeModel:
    """Draws, for seed i, the prompt's colour on an orbit (even i) or standing still (odd i): a known prior."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def generate(self, prompt: str, *, seed: int, **_: object) -> np.ndarray:
        self.prompts.append(prompt)
        colour = prompt.split()[1]
        program = "orbit-cw" if seed % 2 == 0 else "static"
        return render(SceneSpec((ObjectSpec("square", colour, program, 0.25),))).frames


def test_measure_prior_sorts_a_models_samples(tmp_path) -> None:
    model = _FakeModel()
    summary = prior.measure_prior(model, count=6, seed=10, out=tmp_path)
    assert model.prompts == ["a red circle", "a green circle", "a blue circle", "a yellow circle",
                             "a white circle", "a purple circle"]
    assert all(len(p.split()) == 3 for p in model.prompts)  # appearance only: no motion words
    assert summary["shares"]["curved"] == 0.5 and summary["shares"]["still"] == 0.5
    orbit = render(SceneSpec((ObjectSpec("square", "red", "orbit-cw", 0.25),))).tracks["red square"].centroid
    assert summary["amplitude_quantiles"]["0.9"] == pytest.approx(prior.amplitude(orbit, 32))
    row = json.loads((tmp_path / "prior.json").read_text())["rows"][0]
    assert row["seed"] == 10
    assert np.allclose(row["track"], orbit, atol=0.005)  # the track, kept to classify it again
    assert prior.classify_path(np.array(row["track"]), 32) == row["kind"]


def test_the_data_with_free_paths_holds_every_kind_and_without_them_only_lines() -> None:
    lines = prior.measure_data(count=60, free_paths=0.0)
    assert lines["shares"]["curved"] == lines["shares"]["cornered"] == 0.0
    assert lines["shares"]["still"] + lines["shares"]["straight"] == 1.0
    rich = prior.measure_data(count=60, free_paths=1.0)
    assert rich["shares"]["curved"] > 0.2 and rich["shares"]["cornered"] > 0.2
    assert rich["shares"]["lost"] == 0.0
    assert rich["shares"]["jumped"] == lines["shares"]["jumped"] == 0.0  # no pretraining path jumps


def test_prior_command_measures_the_shipped_model_and_the_data(tmp_path) -> None:
    from typer.testing import CliRunner

    from follow_your_motion.cli import app

    done = CliRunner().invoke(app, ["toyworld", "prior", "--out", str(tmp_path), "--clips", "2", "--steps", "1"])
    assert done.exit_code == 0, done.output
    summary = json.loads((tmp_path / "prior.json").read_text())
    assert summary["clips"] == 2 and sum(summary["shares"].values()) == pytest.approx(1.0)
    assert [r["prompt"] for r in summary["rows"]] == ["a red circle", "a green circle"]
    data = CliRunner().invoke(app, ["toyworld", "prior", "--out", str(tmp_path), "--clips", "5", "--data", "1"])
    assert data.exit_code == 0, data.output
    assert json.loads((tmp_path / "prior-data.json").read_text())["free_paths"] == 1.0
    bad = CliRunner().invoke(app, ["toyworld", "prior", "--out", str(tmp_path), "--data", "1.5"])
    assert bad.exit_code == 2
