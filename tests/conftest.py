"""Shared fixtures: a tiny random-weight Wan2.1 pipeline directory built offline once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_wan import build_tiny_wan_pipeline  # noqa: E402


@pytest.fixture(scope="session")
def tiny_wan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_wan_pipeline(tmp_path_factory.mktemp("tiny-wan") / "pipe")


@pytest.fixture
def wan(tiny_wan_dir: Path):
    """A freshly loaded tiny Wan backbone (each test gets its own, so adapters never leak between tests)."""
    from follow_your_motion.backbones.wan import WanBackbone

    return WanBackbone.load(str(tiny_wan_dir))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models run fastest on one thread, and a busy 2-core machine is not oversubscribed."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def run_script(script: Path, *args: object, cwd: Path, timeout: float, nproc: int | None = None) -> str:
    """Run the Python `script` with `args` in its own process group and return its output: as one process, or
    with `nproc` under torchrun (standalone, CPU). On timeout the whole group (torchrun and its workers) is
    killed and the test fails; a non-zero exit fails it too, with the output's tail."""
    import os
    import signal
    import subprocess

    launcher = [sys.executable]
    if nproc is not None:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd = [*launcher, str(script), *map(str, args)]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if "PYTHONPATH" in env:  # `PYTHONPATH=src pytest`: the same code from the script's own working directory
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{cmd[:4]} timed out after {timeout}s:\n{output[-4000:]}")
    finally:
        if proc.poll() is None:  # e.g. KeyboardInterrupt while waiting
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, f"{cmd[:4]} exited with {proc.returncode}:\n{output[-4000:]}"
    return output


def tiny_config(steps: int) -> str:
    """A run config (YAML) that makes every stage take seconds on the tiny Wan pipeline."""
    return f"""\
video: {{frames: 9, height: 32, width: 32}}
heads: {{num_queries: 32}}
spatial: {{steps: {steps}, rank: 4, lr: 0.01, checkpoint_every: 2}}
motion: {{steps: {steps}, rank: 4, lr: 0.01, keep_frames: 2, checkpoint_every: 2}}
generate: {{steps: 2}}
"""


def record_attention_inputs(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[tuple]:
    """Every (query, key) passed to the attention function `owner.name` (what a family's processor calls),
    in call order: the reference `capture_qk` is checked against, bit for bit."""
    calls: list[tuple] = []
    original = getattr(owner, name)

    def recording(query, key, *args, **kwargs):
        calls.append((query.detach().clone(), key.detach().clone()))
        return original(query, key, *args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return calls


def train_motion(backbone, clip, run: Path, selection: dict[int, list[int]], rank: int, alpha: float,
                 stop_after: int | None = None, prompt: str = "a robot walks") -> tuple:
    """A motion adapter on `selection`'s heads of a backbone's only expert, trained (or resumed) in `run` for 4 steps
    on 3 sparse latent frames of `clip` (3, T, H, W) in [-1, 1]: (latents, the prompt's conditioning, its state)."""
    from follow_your_motion.config import MotionSettings
    from follow_your_motion.method.lora import add_masked_lora
    from follow_your_motion.method.train import motion_inputs, train_adapter
    from follow_your_motion.runs import RunDir

    latents, cond = backbone.encode_video(clip), backbone.encode_prompt(prompt)
    add_masked_lora(backbone.experts[0], "motion", selection, rank=rank, alpha=alpha)
    settings = MotionSettings(steps=4, keep_frames=3, lr=5e-2, rank=rank, alpha=alpha, max_grad_norm=None,
                              checkpoint_every=1)
    state = train_adapter(backbone, backbone.experts[0], RunDir(run), "motion", "motion", settings,
                          motion_inputs(latents, cond, settings), motion_weight=1.0, stop_after=stop_after)
    return latents, cond, state


def trained_output(backbone, latents, cond) -> tuple:
    """A noisy probe of `latents` at timestep 600 and the trained motion adapter's output on it: (noisy, timestep,
    cond, output), what a family's export tests compare loaded files with."""
    import torch

    noisy = 0.4 * latents + 0.6 * torch.randn(latents.shape, generator=torch.Generator().manual_seed(1))
    timestep = torch.tensor([600.0])
    with torch.no_grad(), backbone.adapters({"motion": 1.0}):
        out = backbone.predict(backbone.experts[0], noisy, timestep, cond)
    return noisy, timestep, cond, out
