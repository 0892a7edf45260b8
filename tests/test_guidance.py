"""The training-free guidances: the attention motion flow, DiTFlow's and flow guidance's latent steps on the toy
model, the sampler hook on every family's pipeline, and their settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from follow_your_motion.backbones.toy import ToyBackbone
from follow_your_motion.config import DiTFlowSettings, FlowGuidanceSettings, GuidanceSettings
from follow_your_motion.errors import InputError
from follow_your_motion.method.guidance import DiTFlowGuide, FlowGuide, guided_steps, make_guide
from follow_your_motion.method.motion_flow import amf_distance, attention_motion_flow
from follow_your_motion.method.objective import predicted_x0
from follow_your_motion.precedence import resolve_config
from follow_your_motion.toyworld.render import ObjectSpec, SceneSpec, render
from follow_your_motion.video import to_tensor

GRID = (3, 6, 7)


def _features(rows: int, cols: int, heads: int = 2, dim: int = 32, seed: int = 0) -> torch.Tensor:
    """One distinct, strongly self-similar feature per grid cell: (rows, cols, heads, dim)."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(rows, cols, heads, dim, generator=g)
    return 6 * f / f.norm(dim=-1, keepdim=True) * dim**0.25


def _clip(shifts: list[tuple[int, int]]) -> torch.Tensor:
    """q = k (1, S, H, D) of a clip whose frame i is frame 0's content moved by shifts[i] (rows, cols)."""
    base = _features(*GRID[1:])
    frames = [torch.roll(base, shifts=s, dims=(0, 1)) for s in shifts]
    return torch.stack(frames).flatten(0, 2)[None]


def _interior(shift: tuple[int, int]) -> torch.Tensor:
    """Frame-0 tokens whose shifted position does not wrap around the grid."""
    _, rows, cols = GRID
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    ok = (r + shift[0] >= 0) & (r + shift[0] < rows) & (c + shift[1] >= 0) & (c + shift[1] < cols)
    return ok.flatten()


@pytest.mark.parametrize("hard", [False, True])
def test_amf_of_a_clip_against_itself_is_no_displacement(hard):
    qk = _clip([(0, 0)] * 3)
    flow = attention_motion_flow(qk, qk, GRID, hard=hard)
    assert flow.shape == (1, 3, 3, 42, 2)
    assert flow.abs().max() < 1e-3


@pytest.mark.parametrize("hard", [False, True])
def test_amf_of_a_shifted_copy_recovers_the_shift(hard):
    qk = _clip([(0, 0), (1, 2), (-2, 1)])
    flow = attention_motion_flow(qk, qk, GRID, hard=hard, chunk=5)  # chunks cut across frames
    for j, shift in ((1, (1, 2)), (2, (-2, 1))):
        inside = _interior(shift)
        expected = torch.tensor(shift, dtype=torch.float32)
        assert torch.allclose(flow[0, 0, j][inside], expected.expand(int(inside.sum()), 2), atol=1e-3)
    assert flow[0, 0, 0].abs().max() < 1e-3  # each frame against itself
    back = _interior((-1, -2))  # frame 1 -> frame 0 is the opposite move, for tokens of frame 1 that came along
    assert torch.allclose(flow[0, 1, 0][back], torch.tensor([-1.0, -2.0]).expand(int(back.sum()), 2), atol=1e-3)


def test_soft_amf_is_the_expected_position_under_head_averaged_scores_per_frame():
    g = torch.Generator().manual_seed(2)
    grid, heads, dim, temperature = (2, 2, 3), 3, 4, 2.0
    q, k = (torch.randn(1, 12, heads, dim, generator=g) for _ in range(2))
    flow = attention_motion_flow(q, k, grid, temperature=temperature, chunk=5)
    cells = [(r, c) for r in range(2) for c in range(3)]
    for i in range(2):
        for j in range(2):
            for p, (r, c) in enumerate(cells):
                scores = torch.stack([sum(q[0, 6 * i + p, h] @ k[0, 6 * j + n, h] for h in range(heads)) / heads
                                      for n in range(6)]) / dim**0.5
                weights = torch.softmax(temperature * scores, dim=0)
                expected = weights @ torch.tensor(cells, dtype=torch.float32)
                assert torch.allclose(flow[0, i, j, p], expected - torch.tensor([r, c], dtype=torch.float32),
                                      atol=1e-5)


def test_chunked_amf_and_its_gradient_equal_the_unchunked_ones():
    g = torch.Generator().manual_seed(1)
    q = torch.randn(1, 126, 2, 8, generator=g, requires_grad=True)
    k = torch.randn(1, 126, 2, 8, generator=g)
    whole = attention_motion_flow(q, k, GRID, chunk=126)
    (grad_whole,) = torch.autograd.grad(whole.square().sum(), q)
    parts = attention_motion_flow(q, k, GRID, chunk=10)
    (grad_parts,) = torch.autograd.grad(parts.square().sum(), q)
    assert torch.allclose(whole, parts, atol=1e-5)
    assert torch.allclose(grad_whole, grad_parts, atol=1e-5)


def test_amf_distance_counts_only_what_moves_in_the_reference():
    reference = torch.zeros(1, 2, 2, 4, 2)
    reference[0, 0, 1, 0] = torch.tensor([1.0, 0.0])
    flow = torch.zeros_like(reference)
    flow[0, 0, 0, 3] = 5.0  # off the reference's moving token: not counted
    assert amf_distance(flow, reference) == pytest.approx(0.5)  # (1^2 + 0^2) / 2 components
    assert amf_distance(flow, reference, moving_only=False) == pytest.approx((1 + 50) / 32)


# -- the guidances on the toy model ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy() -> ToyBackbone:
    return ToyBackbone.load()


@pytest.fixture(scope="module")
def reference(toy) -> torch.Tensor:
    clip = render(SceneSpec((ObjectSpec("circle", "red", "right", size=0.3),)))
    return toy.encode_video(to_tensor(clip.frames))


def _noisy(toy: ToyBackbone, reference: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    noise = toy.draw_noise(tuple(reference.shape), torch.Generator().manual_seed(3))
    return (1 - sigma) * torch.zeros_like(reference) + sigma * noise, torch.tensor(sigma * 1000)


def test_ditflow_moves_the_latent_toward_the_references_flow(toy, reference):
    settings = GuidanceSettings(method="ditflow", ditflow={"inner_steps": 4, "lr": (0.05, 0.05), "query_chunk": 100})
    guide = make_guide(toy, settings, reference, "a blue square", steps=10, seed=0)
    assert isinstance(guide, DiTFlowGuide) and guide.guided == 2
    latents, t = _noisy(toy, reference, 0.8)
    expert = toy.experts[0]
    target = guide.reference_flow(expert)
    with torch.no_grad():
        before = amf_distance(guide.flow(expert, latents, t, guide.target_cond), target)
        moved = guide.latents(1, t, latents)
        after = amf_distance(guide.flow(expert, moved, t, guide.target_cond), target)
    assert not torch.equal(moved, latents)
    assert after < before
    assert guide.history[0]["losses"][-1] < guide.history[0]["losses"][0]
    assert torch.equal(guide.latents(3, t, latents), latents)  # past the guided steps 1..2: untouched
    assert torch.equal(guide.latents(0, t, latents), latents)  # the drawn noise: never reached


def test_exactly_the_guided_fraction_of_steps_is_guided_and_the_rate_runs_first_to_last(toy, reference):
    settings = GuidanceSettings(method="ditflow", ditflow={"inner_steps": 1, "lr": (0.04, 0.01), "query_chunk": 100})
    guide = make_guide(toy, settings, reference, "a blue square", steps=10, seed=0)
    latents, t = _noisy(toy, reference, 0.8)
    for step in range(10):
        guide.latents(step, t, latents)
    assert [record["step"] for record in guide.history] == [1, 2]  # round(0.2 * 10) steps, after the first
    assert [record["lr"] for record in guide.history] == pytest.approx([0.04, 0.01])


@pytest.mark.parametrize(("fraction", "steps", "guided"), [(0.2, 2, 0), (0.2, 50, 10), (1.0, 10, 10)])
def test_a_guidance_guiding_no_step_or_more_than_there_are_is_refused(fraction, steps, guided):
    settings = GuidanceSettings(method="flow", flow={"guided_fraction": fraction})
    if 1 <= guided < steps:
        assert guided_steps(settings, steps) == guided
    else:
        with pytest.raises(InputError, match=f"guides {guided} steps; it must guide 1 to {steps - 1}"):
            guided_steps(settings, steps)


def test_flow_guidance_moves_the_predicted_frame_differences_toward_the_references(toy, reference):
    settings = GuidanceSettings(method="flow", flow={"inner_steps": 3, "lr": 0.05})
    guide = make_guide(toy, settings, reference, "a blue square", steps=10, seed=0)
    assert isinstance(guide, FlowGuide)
    latents, t = _noisy(toy, reference, 0.8)
    expert = toy.experts[0]
    target = guide.reference_x0(expert, t)

    def distance(z: torch.Tensor) -> float:
        with torch.no_grad():
            x0 = predicted_x0(toy, z, t, toy.predict(expert, z, t.reshape(1), guide.target_cond))
        return float((x0.diff(dim=2) - target.diff(dim=2)).square().mean())

    moved = guide.latents(1, t, latents)
    assert distance(moved) < distance(latents)


def test_velocity_shrinks_only_the_part_orthogonal_to_its_running_average(toy, reference):
    guide = make_guide(toy, GuidanceSettings(method="flow", flow={"momentum": 0.5, "orthogonal_scale": 0.25}),
                       reference, "a blue square", steps=10, seed=0)
    a = torch.zeros(1, 3, 2, 1, 1)
    a[0, 0] = 1.0
    b = torch.zeros_like(a)
    b[0, 1] = 1.0
    assert torch.equal(guide.velocity(0, torch.tensor(1000.0), b), b)  # step 0 is not guided
    assert torch.equal(guide.velocity(1, torch.tensor(1000.0), a), a)  # the first one is its own average
    out = guide.velocity(2, torch.tensor(900.0), b)  # average (a + b) / 2: b = its projection + an orthogonal part
    parallel = (a + b) / 2  # the projection of b on the average (a + b) / 2
    assert torch.allclose(out, parallel + 0.25 * (b - parallel))


def test_generation_calls_the_hook_between_the_toys_steps_and_uses_what_it_returns(toy):
    class Recorder:
        def __init__(self, replace: bool) -> None:
            self.calls, self.replace = [], replace

        def velocity(self, step, timestep, output):
            self.calls.append(("v", step, tuple(output.shape)))
            return output

        def latents(self, step, timestep, latents):
            self.calls.append(("z", step, tuple(latents.shape)))
            return torch.zeros_like(latents) if self.replace else latents

        def end(self):
            self.calls.append(("end",))

    call = {"negative_prompt": "", "num_frames": 9, "height": 32, "width": 32, "steps": 3, "guidance": 1.0,
            "seed": 0, "adapter_scales": {}}
    plain = toy.generate("a red circle", **call)
    recorder = Recorder(replace=False)
    same = toy.generate("a red circle", **call, step_hook=recorder)
    assert (same == plain).all()
    shape = (1, 3, 9, 32, 32)
    assert recorder.calls == [("v", 0, shape), ("z", 1, shape), ("v", 1, shape), ("z", 2, shape), ("v", 2, shape),
                              ("end",)]
    assert not (toy.generate("a red circle", **call, step_hook=Recorder(replace=True)) == plain).all()
    assert "step" not in vars(toy.pipe.scheduler)  # the sampler's own step is back


# -- settings -------------------------------------------------------------------------------------------------------
def test_settings_are_validated():
    assert GuidanceSettings().method == "none"
    with pytest.raises(ValidationError, match="positive rates"):
        DiTFlowSettings(lr=(0.002, 0.0))
    with pytest.raises(ValidationError, match="nothing to align"):
        FlowGuidanceSettings(difference_weight=0.0)
    with pytest.raises(ValidationError):
        DiTFlowSettings(guided_fraction=1.5)
    with pytest.raises(InputError, match="guidance.method"):
        resolve_config({"guidance": {"method": "motionclone"}})


def test_a_block_past_the_models_layers_and_an_image_are_refused(toy, reference):
    guide = make_guide(toy, GuidanceSettings(method="ditflow", ditflow={"block": 99}), reference, "a blue square",
                       steps=10, seed=0)
    with pytest.raises(InputError, match="block is 99"):
        guide.block(toy.experts[0])
    with pytest.raises(InputError, match="text-to-video only"):
        make_guide(toy, GuidanceSettings(method="flow"), reference, "a blue square", steps=10, seed=0,
                   image_given=True)
    assert make_guide(toy, GuidanceSettings(), reference, "a blue square", steps=10, seed=0) is None


@pytest.mark.parametrize("objective", ["flow", "v_prediction"])
def test_the_predicted_x0_of_the_true_velocity_is_the_clean_latent(objective):
    from types import SimpleNamespace

    from follow_your_motion.method.objective import noised_at, timestep_sigma

    alphas = torch.linspace(0.9999, 0.01, 1000)
    backbone = SimpleNamespace(objective=objective, alphas_cumprod=alphas, num_train_timesteps=1000)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 2, 3, 4, 4, generator=g), torch.randn(1, 2, 3, 4, 4, generator=g)
    t = torch.tensor(700.0)
    noisy = noised_at(backbone, x0, noise, t)
    if objective == "flow":
        velocity, sigma = noise - x0, 0.7
    else:
        a = float(alphas[700])
        velocity, sigma = a**0.5 * noise - (1 - a) ** 0.5 * x0, (1 - a) ** 0.5
    assert timestep_sigma(backbone, t) == pytest.approx(sigma)
    assert torch.allclose(predicted_x0(backbone, noisy, t, velocity), x0, atol=1e-5)


def test_the_guidance_benchmark_commands_name_committed_settings():
    """docs/benchmark.md's guidance results: every `--config` file of their commands is in the repository and
    gives DiTFlow the release's rates the text says."""
    root = Path(__file__).parents[1]
    section = (root / "docs" / "benchmark.md").read_text().split("## Results: training-free guidance")[1]
    configs = re.findall(r"--config (\S+)", section.split("\n## ")[0])
    assert configs == ["benchmarks/suites/ditflow_release_rates.yaml"]
    ditflow = resolve_config(None, root / configs[0]).guidance.ditflow
    assert (ditflow.lr, ditflow.guided_fraction) == ((0.002, 0.001), 0.2)
