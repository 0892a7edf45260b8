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
