"""DiTFlow's positions mode (`guidance.ditflow.optimise: positions`): the backbone contract's rotary transform on
every family, the guided step moving the rotary tables instead of the latent, the file of optimised positions and
its injection into a sampling with another prompt, and the refusals."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from tiny_cogvideox import build_tiny_cogvideox_pipeline
from tiny_hunyuan_video15 import build_tiny_hunyuan_video15_pipeline
from tiny_kandinsky5 import build_tiny_kandinsky5_pipeline
from tiny_ltx import build_tiny_ltx_pipeline
from tiny_ltx2 import build_tiny_ltx2_pipeline
from tiny_skyreels_v2 import build_tiny_skyreels_v2_pipeline
from tiny_wan import build_tiny_wan_pipeline
from typer.testing import CliRunner

from follow_your_motion.backbones import load_backbone
from follow_your_motion.backbones.rotary import through_transform
from follow_your_motion.backbones.toy import ToyBackbone
from follow_your_motion.cli import app
from follow_your_motion.config import GuidanceSettings
from follow_your_motion.errors import InputError
from follow_your_motion.method.guidance import DiTFlowGuide, adding, make_guide
from follow_your_motion.method.motion_flow import amf_distance
from follow_your_motion.method.positions import Positions, save_positions
from follow_your_motion.precedence import resolve_config
from follow_your_motion.run_settings import check_guided_sampling
from follow_your_motion.toyworld.render import ObjectSpec, SceneSpec, render
from follow_your_motion.video import read_video, to_tensor, write_video

BUILDERS = {
    "wan": build_tiny_wan_pipeline,
    "wan2.2-a14b": lambda path: build_tiny_wan_pipeline(path, boundary_ratio=0.875),
    "cogvideox": build_tiny_cogvideox_pipeline,  # the 5B layout: 3D RoPE
    "cogvideox1.5": lambda path: build_tiny_cogvideox_pipeline(path, layout="1.5"),
    "ltx": build_tiny_ltx_pipeline,
    "hunyuan_video15": build_tiny_hunyuan_video15_pipeline,
    "kandinsky5": build_tiny_kandinsky5_pipeline,
    "ltx2": build_tiny_ltx2_pipeline,
    "ltx2-interleaved": lambda path: build_tiny_ltx2_pipeline(path, rope_type="interleaved"),
    "skyreels_v2": build_tiny_skyreels_v2_pipeline,
}
FRAMES, STEPS = 9, 3
PROMPT = "a blue square"  # words the toy model knows; the tiny tokenizers take any
POSITIONS = {"optimise": "positions", "guided_fraction": (STEPS - 1) / STEPS, "inner_steps": 2}


# -- the contract on every family ---------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["toy", *BUILDERS])
def backbone(request, tmp_path_factory):
    if request.param == "toy":
        return ToyBackbone.load()
    return load_backbone(str(BUILDERS[request.param](tmp_path_factory.mktemp(request.param) / "pipe")))


def _size(backbone) -> int:
    return 2 * backbone.geometry.size_multiple


def _reference(backbone) -> torch.Tensor:
    size = _size(backbone)
    video = torch.rand(3, FRAMES, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return backbone.encode_video(video)


def _generate(backbone, prompt: str = PROMPT, **extra) -> np.ndarray:
    size = _size(backbone)
    return backbone.generate(prompt, negative_prompt="", num_frames=FRAMES, height=size, width=size, steps=STEPS,
                             guidance=2.0, seed=0, adapter_scales={}, **extra)


def _guide(backbone, prompt: str = PROMPT, **ditflow) -> DiTFlowGuide:
    settings = GuidanceSettings(method="ditflow", ditflow=POSITIONS | {"query_chunk": 64} | ditflow)
    return make_guide(backbone, settings, _reference(backbone), prompt, steps=STEPS, seed=0)


def test_zero_deltas_leave_every_familys_prediction_bit_identical_and_others_change_it(backbone):
    guide = _guide(backbone)
    latents = _reference(backbone) + 0.5
    timestep = torch.tensor(700.0)
    expert = backbone.experts[-1]

    def predict() -> torch.Tensor:
        with torch.no_grad():
            return backbone.predict(expert, latents, timestep.reshape(1), guide.target_cond)

    stock = predict()
    with backbone.rotary_transform(expert, adding([torch.zeros(shape) for shape in guide.shapes])):
        assert torch.equal(predict(), stock)
    with backbone.rotary_transform(expert, adding([torch.full(shape, 0.3) for shape in guide.shapes])):
        assert not torch.allclose(predict(), stock)
    assert torch.equal(predict(), stock)  # the hook is gone with the block


def test_zero_positions_injected_through_the_familys_own_sampler_change_nothing(backbone):
    """Through the family's pipeline (classifier-free guidance batches the prompts on some: the deltas of a batch
    of one are broadcast), zero deltas in every guided step give the unguided sample bit for bit."""
    plain = _generate(backbone)
    guide = _guide(backbone)
    guide.injected = Positions([[torch.zeros(s) for s in guide.shapes]] * guide.guided, backbone.name, "", "", (),
                               STEPS)
    assert np.array_equal(_generate(backbone, step_hook=guide), plain)
    guide.injected.deltas = [[torch.full(s, 0.3) for s in guide.shapes]] * guide.guided
    assert not np.array_equal(_generate(backbone, step_hook=guide), plain)
    assert guide._installed is None  # taken off after the last step's denoising passes


def test_positions_are_optimised_through_every_familys_sampler(backbone):
    guide = _guide(backbone)
    guided = _generate(backbone, step_hook=guide)
    assert [record["step"] for record in guide.history] == list(range(1, STEPS))
    assert all(np.isfinite(record["losses"]).all() for record in guide.history)
    assert len(guide.positions) == STEPS - 1 and guide._installed is None
    assert not np.array_equal(guided, _generate(backbone))


def test_the_latent_size_checked_before_loading_is_every_familys_encoders(backbone):
    """`VideoGeometry.latent_grid`, which refuses a positions file for another size before the model loads, gives
    the latents the family's VAE makes (CogVideoX 1.5: a padded latent frame, two per method frame)."""
    size = _size(backbone)
    assert backbone.geometry.latent_grid(FRAMES, size, size) == tuple(_reference(backbone).shape[2:])


def test_complex_tables_go_through_as_their_real_view():
    table = torch.polar(torch.ones(4, 3), torch.rand(4, 3))
    seen = []

    def shift(tables):
        seen.extend(tables)
        return tuple(t + 1 for t in tables)

    out = through_transform(table, shift)
    assert seen[0].dtype == torch.float32 and seen[0].shape == (4, 3, 2)
    assert out.is_complex() and torch.allclose(out, table + (1 + 1j))
    with pytest.raises(InputError, match="optimise: latent"):
        through_transform((torch.arange(3),), shift)


# -- the deltas on every expert, and off again however the sampling ends (Wan2.2-A14B: two experts) ---------------
@pytest.fixture(scope="module")
def two_experts(tmp_path_factory):
    return load_backbone(str(BUILDERS["wan2.2-a14b"](tmp_path_factory.mktemp("a14b") / "pipe")))


def _injecting(backbone, value: float) -> DiTFlowGuide:
    guide = _guide(backbone)
    guide.injected = Positions([[torch.full(s, value) for s in guide.shapes]] * guide.guided, backbone.name, "", "",
                               (), STEPS)
    return guide


def _rope_tables(backbone, expert, latents: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """What `expert`'s rotary embedding gives (through whatever hooks are on it) for latents of this size."""
    with torch.no_grad():
        out = getattr(expert.module, backbone.rope_attribute)(latents)
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def test_the_deltas_are_on_every_expert_while_a_guided_step_denoises(two_experts):
    backbone = two_experts
    guide = _injecting(backbone, 0.25)
    probe = torch.zeros_like(guide.reference)
    stock = {e.name: _rope_tables(backbone, e, probe) for e in backbone.experts}
    seen: list[dict[str, tuple[torch.Tensor, ...]]] = []

    class Watching:  # the guide, with each expert's tables read as a guided step's denoising ends
        def latents(self, step, timestep, latents):
            return guide.latents(step, timestep, latents)

        def velocity(self, step, timestep, output):
            if guide.guides(step):
                seen.append({e.name: _rope_tables(backbone, e, probe) for e in backbone.experts})
            return guide.velocity(step, timestep, output)

        def end(self):
            guide.end()

    assert len(backbone.experts) == 2
    _generate(backbone, step_hook=Watching())
    assert len(seen) == guide.guided
    for tables in seen:
        for name, moved in tables.items():
            assert all(torch.allclose(m - s, torch.full_like(s, 0.25)) for m, s in zip(moved, stock[name],
                                                                                         strict=True)), name
    assert all(torch.equal(a, b) for e in backbone.experts
               for a, b in zip(_rope_tables(backbone, e, probe), stock[e.name], strict=True))


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_error_mid_sampling_leaves_no_deltas_installed(two_experts, error):
    backbone = two_experts
    plain = _generate(backbone)
    guide = _injecting(backbone, 0.3)

    def fail_while_installed(_module, _args):
        if guide._installed is not None:
            raise error("stopped mid-sampling")

    handles = [e.module.register_forward_pre_hook(fail_while_installed) for e in backbone.experts]
    try:
        with pytest.raises(error, match="stopped mid-sampling"):
            _generate(backbone, step_hook=guide)
    finally:
        for handle in handles:
            handle.remove()
    assert guide._installed is None
    assert not any(getattr(e.module, backbone.rope_attribute)._forward_hooks for e in backbone.experts)
    assert np.array_equal(_generate(backbone), plain)


# -- the guided step on the toy -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy() -> ToyBackbone:
    return ToyBackbone.load()


@pytest.fixture(scope="module")
def toy_reference(toy) -> torch.Tensor:
    clip = render(SceneSpec((ObjectSpec("circle", "red", "right", size=0.3),)))
    return toy.encode_video(to_tensor(clip.frames))


def _toy_guide(toy, reference, prompt: str = "a blue square", steps: int = 4, **ditflow) -> DiTFlowGuide:
    settings = GuidanceSettings(method="ditflow", ditflow={"optimise": "positions", "inner_steps": 3,
                                                           "lr": (0.05, 0.05), "query_chunk": 100,
                                                           "guided_fraction": 0.5} | ditflow)
    return make_guide(toy, settings, reference, prompt, steps=steps, seed=0, model="toy")


def _toy_generate(toy, reference, prompt: str = "a blue square", **extra) -> np.ndarray:
    frames, height, width = reference.shape[2:]
    return toy.generate(prompt, negative_prompt="", num_frames=frames, height=height, width=width, steps=4,
                        guidance=1.0, seed=0, adapter_scales={}, **extra)


def test_a_guided_step_moves_the_tables_toward_the_references_flow_and_leaves_the_latent(toy, toy_reference):
    guide = _toy_guide(toy, toy_reference)
    expert = toy.experts[0]
    g = torch.Generator().manual_seed(3)
    latents = 0.2 * toy_reference + 0.8 * toy.draw_noise(tuple(toy_reference.shape), g)
    t = torch.tensor(800.0)
    target = guide.reference_flow(expert)

    def distance() -> float:
        with torch.no_grad():
            return float(amf_distance(guide.flow(expert, latents, t, guide.target_cond), target))

    before = distance()
    assert guide.latents(1, t, latents) is latents  # the latent is not moved
    installed = distance()  # the step's own passes run with the optimised tables
    assert installed < before
    losses = guide.history[0]["losses"]
    assert losses[-1] < losses[0] and losses[0] == pytest.approx(before, rel=1e-4)
    guide.velocity(1, t, latents)
    assert distance() == before  # taken off once the step's passes are done: the stock tables
    assert all(d.abs().max() > 0 for d in guide.positions[0])
    # the next guided step starts from this one's deltas (as the release continues from its last embedding)
    with toy.rotary_transform(expert, adding(guide.positions[0])), torch.no_grad():
        carried = float(amf_distance(guide.flow(expert, latents, torch.tensor(600.0), guide.target_cond), target))
    guide.latents(2, torch.tensor(600.0), latents)
    assert guide.history[1]["losses"][0] == pytest.approx(carried, rel=1e-5)
    guide.end()
    assert torch.equal(guide.latents(3, t, latents), latents) and len(guide.history) == 2  # past the guided steps


def test_a_saved_file_injected_reproduces_the_optimising_sample(toy, toy_reference, tmp_path):
    guide = _toy_guide(toy, toy_reference)
    optimised = _toy_generate(toy, toy_reference, step_hook=guide)
    plain = _toy_generate(toy, toy_reference)
    assert not np.array_equal(optimised, plain)
    paths = guide.outputs(tmp_path, "result_ditflow")
    path = paths["positions"]
    assert path == tmp_path / "result_ditflow_positions.safetensors"
    from follow_your_motion.runs import read_metadata

    meta = read_metadata(path)
    assert (meta["guided"], meta["steps"], meta["family"], meta["model"], meta["variant"]) == ("2", "4", "toy", "toy",
                                                                                              "")
    assert json.loads(meta["latents"]) == list(toy_reference.shape[1:])
    assert json.loads(meta["shapes"]) == [list(s) for s in guide.shapes]
    expert = toy.experts[0]
    assert json.loads(meta["transformers"]) == [[len(expert.sites), expert.sites[0].heads, expert.sites[0].head_dim]]

    same = _toy_guide(toy, toy_reference, positions_from=str(path))
    assert np.array_equal(_toy_generate(toy, toy_reference, step_hook=same), optimised)
    assert same.history == [] and same.outputs(tmp_path / "again", "x") == {}  # nothing optimised, nothing written
    other = _toy_guide(toy, toy_reference, "a green triangle", positions_from=str(path))
    injected = _toy_generate(toy, toy_reference, "a green triangle", step_hook=other)
    assert not np.array_equal(injected, _toy_generate(toy, toy_reference, "a green triangle"))


@pytest.fixture(scope="module")
def saved(toy, toy_reference, tmp_path_factory):
    guide = _toy_guide(toy, toy_reference)
    _toy_generate(toy, toy_reference, step_hook=guide)
    return guide.outputs(tmp_path_factory.mktemp("positions"), "result")["positions"]


def test_a_file_for_another_sampling_is_refused_naming_both(toy, toy_reference, saved, tmp_path):
    with pytest.raises(InputError, match=r"positions for 2 guided steps of a 4-step sampling; this sampling guides 3 "
                                         r"of 6"):
        _toy_guide(toy, toy_reference, steps=6, positions_from=str(saved))
    with pytest.raises(InputError, match=r"2 guided steps of a 4-step sampling; this sampling guides 2 of 5"):
        _toy_guide(toy, toy_reference, steps=5, guided_fraction=0.4, positions_from=str(saved))
    smaller = toy_reference[:, :, :, :16, :16]
    with pytest.raises(InputError, match=r"tables of shapes \[\(1, 576, 1, 32\), .*latents \[3, 9, 16, 16\] has "
                                         r"\[\(1, 144, 1, 32\)"):
        _toy_guide(toy, smaller, positions_from=str(saved))
    with pytest.raises(InputError, match="no such file"):
        _toy_guide(toy, toy_reference, positions_from=str(tmp_path / "missing.safetensors"))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file at all")
    with pytest.raises(InputError, match="corrupt.safetensors: not a readable safetensors file"):
        _toy_guide(toy, toy_reference, positions_from=str(corrupt))
    foreign = tmp_path / "lora.safetensors"
    save_file({"a": torch.zeros(2)}, str(foreign))
    with pytest.raises(InputError, match="not a DiTFlow positions file"):
        _toy_guide(toy, toy_reference, positions_from=str(foreign))
    positions = Positions([[torch.zeros(1, 576, 1, 32)] * 2] * 2, "wan", "", "", (3, 9, 32, 32), 4)
    with pytest.raises(InputError, match="positions of a wan model; this is a toy model"):
        _toy_guide(toy, toy_reference, positions_from=str(save_positions(tmp_path / "wan.safetensors", positions)))
    positions.family, positions.variant = "toy", "wan2.2-t2v-a14b"
    with pytest.raises(InputError, match="the wan2.2-t2v-a14b variant .*; this model is the toy base variant"):
        _toy_guide(toy, toy_reference, positions_from=str(save_positions(tmp_path / "a14b.safetensors", positions)))
    positions.variant, positions.transformers = "", [[40, 40, 128]]
    with pytest.raises(InputError, match=r"made with transformers of \[\[40, 40, 128\]\] .*; this model's are \[\["):
        _toy_guide(toy, toy_reference, positions_from=str(save_positions(tmp_path / "14b.safetensors", positions)))
    positions.transformers = [[len(e.sites), e.sites[0].heads, e.sites[0].head_dim] for e in toy.experts]
    positions.deltas = [[torch.zeros(1, 576, 1, 32)]] * 2
    with pytest.raises(InputError, match=r"tables of shapes \[\(1, 576, 1, 32\)\] "):
        _toy_guide(toy, toy_reference, positions_from=str(save_positions(tmp_path / "one.safetensors", positions)))


@pytest.mark.parametrize("shapes, latents, transformers", [
    ("5", "[3, 9, 32, 32]", "[]"), ("[[1, 2], 5]", "[3, 9, 32, 32]", "[]"), ("[[1, 2.5]]", "[3, 9, 32, 32]", "[]"),
    ("[[1, 2]]", "{}", "[]"), ("[[1]]", "null", "[]"), ("[[1]]", "[3, 9, 32, 32]", "[[2, true]]"),
    ("[[1]]", "[3, 9, 32, 32]", "3")])
def test_a_file_with_broken_metadata_types_is_refused_before_loading(saved, tmp_path, shapes, latents, transformers):
    from follow_your_motion.method.positions import read_header
    from follow_your_motion.runs import load_tensors, read_metadata

    broken = tmp_path / "broken.safetensors"
    save_file(load_tensors(saved), str(broken), read_metadata(saved) | {"shapes": shapes, "latents": latents,
                                                                      "transformers": transformers})
    with pytest.raises(InputError, match="broken.safetensors: a DiTFlow positions file with broken metadata"):
        read_header(broken)


def test_float64_tables_keep_the_zero_delta_identity():
    table = torch.rand(4, 3, dtype=torch.float64) + 1e-9
    assert torch.equal(adding([torch.zeros(4, 3)])((table,))[0], table)


def test_the_settings_and_files_are_checked_before_the_model_loads(saved, tmp_path, monkeypatch):
    def config(**ditflow):
        return resolve_config({"guidance": {"method": "ditflow", "ditflow": ditflow}, "generate": {"steps": 4}})

    with pytest.raises(InputError, match="set optimise: positions with it"):
        config(positions_from=str(saved))
    ok = config(optimise="positions", positions_from=str(saved), guided_fraction=0.5)
    check_guided_sampling(ok, ok.generate)
    other = config(optimise="positions", positions_from=str(saved), guided_fraction=0.75)
    with pytest.raises(InputError, match="2 guided steps of a 4-step sampling; this sampling guides 3 of 4"):
        check_guided_sampling(other, other.generate)
    missing = config(optimise="positions", positions_from=str(tmp_path / "gone.safetensors"), guided_fraction=0.5)
    with pytest.raises(InputError, match="gone.safetensors: no such file"):
        check_guided_sampling(missing, missing.generate)
    steps = resolve_config({"guidance": {"method": "ditflow", "ditflow": {"optimise": "positions", "positions_from":
                                                                          str(saved), "guided_fraction": 0.4}},
                            "generate": {"steps": 5}})
    with pytest.raises(InputError, match="2 guided steps of a 4-step sampling; this sampling guides 2 of 5"):
        check_guided_sampling(steps, steps.generate)
    # the latent size, from the model's config files and the clip's size (`fym guide` knows it once the reference
    # is fitted: `check_inputs`)
    sized = ok.model_copy(update={"video": ok.video.model_copy(update={"frames": 9, "height": 16, "width": 16})})
    with pytest.raises(InputError, match=r"made for latents \[3, 9, 32, 32\]; this sampling's are \[9, 16, 16\]"):
        check_guided_sampling(sized, sized.generate)
    fitting = ok.model_copy(update={"video": ok.video.model_copy(update={"frames": 9, "height": 32, "width": 32})})
    check_guided_sampling(fitting, fitting.generate)
    # a relative path in a YAML is resolved from the working directory, as the CLI flag and the reference are
    monkeypatch.chdir(saved.parent)
    relative = config(optimise="positions", positions_from=saved.name, guided_fraction=0.5)
    assert relative.guidance.ditflow.positions_from == str(saved)


# -- refusals: no rotary video positions --------------------------------------------------------------------------
def test_cogvideox_without_rotary_positions_refuses_before_and_after_loading(tmp_path):
    path = build_tiny_cogvideox_pipeline(tmp_path / "pipe", layout="2b")
    cfg = resolve_config({"model": {"source": str(path)}, "guidance": {"method": "ditflow",
                                                                       "ditflow": {"optimise": "positions"}}})
    with pytest.raises(InputError, match=r"use_rotary_positional_embeddings: false.*set "
                                         r"guidance.ditflow.optimise: latent"):
        check_guided_sampling(cfg, cfg.generate)
    latent = resolve_config({"model": {"source": str(path)}, "guidance": {"method": "ditflow"}})
    check_guided_sampling(latent, latent.generate)  # the latent mode runs on it
    backbone = load_backbone(str(path))
    with pytest.raises(InputError, match="guidance.ditflow.optimise: latent"):
        _guide(backbone)


def test_cogvideox_runs_its_guided_steps_eager(tmp_path):
    """CogVideoX swaps its attention processors while the tables are transformed: compiled blocks (`model.compile`)
    would recompile at every guided step, so they run eager meanwhile, and as compiled again after."""
    from torch._dynamo import eval_frame  # its `_stance`: what torch.compiler.set_stance sets (no public reader)

    backbone = load_backbone(str(build_tiny_cogvideox_pipeline(tmp_path / "pipe")))
    with backbone.rotary_transform(backbone.experts[0], lambda tables: tables):
        assert eval_frame._stance.stance == "force_eager"
    assert eval_frame._stance.stance == "default"


# -- the command line ---------------------------------------------------------------------------------------------
def test_fym_guide_writes_positions_and_injects_them_with_another_prompt(tmp_path):
    clip = render(SceneSpec((ObjectSpec("circle", "red", "right", size=0.3),)))
    reference = write_video(tmp_path / "ref.mp4", clip.frames, 8.0)
    config = tmp_path / "quick.yaml"
    config.write_text(yaml.safe_dump({"generate": {"steps": 4}, "guidance": {"ditflow": {"inner_steps": 2}}}))

    def fym(*args):
        return CliRunner().invoke(app, ["guide", str(reference), "--config", str(config), *map(str, args)])

    result = fym("--prompt", "a blue square", "--out", tmp_path / "a", "--optimise", "positions")
    assert result.exit_code == 0, result.output
    path = tmp_path / "a" / "samples" / "result_ditflow_positions.safetensors"
    assert f"positions: {path}" in result.output
    again = fym("--prompt", "a blue square", "--out", tmp_path / "b", "--positions-from", path)
    assert again.exit_code == 0, again.output
    assert not (tmp_path / "b" / "samples" / "result_ditflow_positions.safetensors").exists()
    first, second = (read_video(tmp_path / run / "samples" / "result_ditflow.mp4").frames for run in "ab")
    assert np.array_equal(first, second)
    assert fym("--prompt", "a green triangle", "--out", tmp_path / "c", "--positions-from", path).exit_code == 0
    smaller = fym("--prompt", "a blue square", "--out", tmp_path / "e", "--positions-from", path, "--size", "16x16")
    assert smaller.exit_code == 2  # refused once the reference is fitted, before the model loads (`check_inputs`)
    assert re.search(r"made for latents \[3, \d+, 32, 32\]; this sampling's are \[\d+, 16, 16\]", smaller.output)
    assert not (tmp_path / "e").exists()
    wrong = fym("--prompt", "a blue square", "--out", tmp_path / "d", "--method", "flow", "--optimise", "positions")
    assert wrong.exit_code == 2 and "give --method ditflow" in wrong.output
    assert not (tmp_path / "d").exists()


def test_fym_plan_traces_the_positions_optimisation(tmp_path):
    """`fym plan --guide ditflow` with `optimise: positions` traces the guided step (the tables' optimisation) on
    fake tensors at real size, as it traces the latent mode's."""
    config = tmp_path / "positions.yaml"
    config.write_text(yaml.safe_dump({"spatial": {"steps": 0}, "motion": {"steps": 0},
                                      "generate": {"motion_scale": 0, "spatial_scale": 0},
                                      "guidance": {"ditflow": {"optimise": "positions"}}}))
    result = CliRunner().invoke(app, ["plan", "-m", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "--frames", "9", "--size",
                                      "256x256", "--config", str(config), "--guide", "ditflow", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    stages = {s["stage"]: s for s in plan["stages"]}
    assert plan["complete"] and list(stages) == ["encode", "classify", "guide", "generate", "decode"]
    assert stages["guide"]["flops"] > 0 and stages["generate"]["repeats"] == 50
