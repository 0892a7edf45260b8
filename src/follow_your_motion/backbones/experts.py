"""A backbone's transformers as the method sees them: each `Expert` (the noise levels it serves) and its
self-attention layers (`AttentionSite`: projections, heads, where the video tokens sit), which head
classification, the head-masked LoRAs and their files are written against."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

# Projections of one self-attention layer that LoRA may target, by role. "q", "k", "v" are split into
# heads along their OUTPUT rows; "o" along its INPUT columns.
ROW_ROLES = ("q", "k", "v")
COLUMN_ROLES = ("o",)


@dataclass(frozen=True)
class AttentionSite:
    """One self-attention layer as the method sees it: its projections (module names relative to the expert's
    transformer), its heads, and where the video tokens sit among the tokens it attends over."""

    q: str
    k: str
    v: str
    o: str
    heads: int
    head_dim: int
    text_tokens: Literal["none", "before", "after"] = "none"  # joint text+video attention: where the text is
    qk_norm: Literal["across_heads", "per_head", "none"] = "across_heads"  # across: a q/k row of one head
    # is rescaled by the others' (a head-local LoRA leaks a little there; v and o are exactly head-local)

    def targets(self) -> dict[str, str]:
        """Module name of each projection by role ("q", "k", "v" split by output rows, "o" by input columns)."""
        return {"q": self.q, "k": self.k, "v": self.v, "o": self.o}


@dataclass
class Expert:
    """One transformer of a backbone and the noise levels it serves (most families have one for all; Wan2.2-A14B
    has a high-noise and a low-noise one). Heads, LoRA adapters, timesteps and files are per expert."""

    name: str  # "" for a backbone's only expert; "high_noise" / "low_noise": file and folder suffixes
    module: nn.Module
    sites: list[AttentionSite]
    sigma_range: tuple[float, float] = (0.0, 1.0)  # serves noise levels lo <= sigma < hi (hi = 1 inclusive)

    @property
    def suffix(self) -> str:
        """What the expert adds to artifact names: nothing for an only expert, "_high_noise" etc. otherwise."""
        return f"_{self.name}" if self.name else ""

    def serves(self, sigma: float) -> bool:
        lo, hi = self.sigma_range
        return lo <= sigma < hi or (hi >= 1.0 and sigma >= 1.0)

    def loaded_adapters(self) -> set[str]:
        return set(getattr(self.module, "peft_config", None) or {})
