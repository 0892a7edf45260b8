"""Stage 1: classify every self-attention head as spatial or temporal, with no training.

For sampled query tokens we compute each head's softmax attention row against all keys (never the full
S x S map: memory is O(n_query * S) per head) and compare the rows with two binary templates over the
(frame, row, col) token grid:
  spatial  - keys in the query's own frame;
  temporal - keys at the query's (row, col), within `radius` cells, in the other frames.
Sim = cosine similarity of the sampled attention rows with the template rows. The paper's rule calls a
head temporal when Sim_s < alpha * Sim_t; the authors' release instead compares attention mass
(temporal iff mass_t >= ratio * mass_s). Both depend on the token grid: a structureless head (attention
spread evenly) scores Sim_s / Sim_t = sqrt(#spatial ones / #temporal ones), sqrt(H W / (F - 1)) at radius 0.
Our `relative` rule divides that out: relative = (Sim_s / Sim_t) / the structureless head's, which is the
mean attention per spatial-template key over the mean per temporal-template key, exactly 1 for a
structureless head on any grid; temporal iff relative < relative_alpha.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..backbones.base import Backbone
from ..backbones.experts import Expert
from ..backbones.inputs import Conditioning
from ..config import HeadSettings
from ..errors import InputError
from .objective import capture_sample


@dataclass
class HeadScores:
    """Per-head statistics of one layer, accumulated over query chunks."""

    mass_s: torch.Tensor  # (heads,) summed attention mass on the spatial template
    mass_t: torch.Tensor
    sq_norm: torch.Tensor  # (heads,) sum of squared attention probabilities
    count_s: int = 0  # number of ones in the sampled spatial template rows
    count_t: int = 0


@dataclass
class HeadMap:
    """The result of stage 1: per layer, per head, its similarities and type."""

    sim_s: list[list[float]]
    sim_t: list[list[float]]
    mass_s: list[list[float]]
    mass_t: list[list[float]]
    temporal: list[list[bool]]
    settings: dict = field(default_factory=dict)
    forced: list[list[int]] = field(default_factory=list)  # [layer, head] flipped by `min_heads`
    # (Sim_s / Sim_t) / a structureless head's, per layer and head: grid-independent; None where Sim_t is 0
    relative: list[list[float | None]] = field(default_factory=list)

    def heads(self, kind: str) -> dict[int, list[int]]:
        """Layer -> selected head indices of `kind` ("spatial" or "temporal")."""
        if kind not in ("spatial", "temporal"):
            raise ValueError(f"unknown head kind {kind!r}")
        want = kind == "temporal"
        return {layer: [h for h, t in enumerate(row) if t == want] for layer, row in enumerate(self.temporal)}

    def counts(self) -> list[dict[str, int]]:
        return [{"spatial": row.count(False), "temporal": row.count(True)} for row in self.temporal]

    def to_json(self) -> dict:
        layers = [
            {
                "layer": i,
                "counts": self.counts()[i],
                "heads": [
                    {
                        "head": h,
                        "type": "temporal" if self.temporal[i][h] else "spatial",
                        "sim_s": self.sim_s[i][h],
                        "sim_t": self.sim_t[i][h],
                        "mass_s": self.mass_s[i][h],
                        "mass_t": self.mass_t[i][h],
                        **({"relative": self.relative[i][h]} if self.relative else {}),
                    }
                    for h in range(len(self.temporal[i]))
                ],
            }
            for i in range(len(self.temporal))
        ]
        total = {k: sum(c[k] for c in self.counts()) for k in ("spatial", "temporal")}
        return {"settings": self.settings, "total": total, "forced": self.forced, "layers": layers}

    @classmethod
    def from_json(cls, data: dict) -> HeadMap:
        def column(key: str) -> list[list]:
            return [[head[key] for head in layer["heads"]] for layer in data["layers"]]

        temporal = [[head["type"] == "temporal" for head in layer["heads"]] for layer in data["layers"]]
        recorded = all("relative" in head for layer in data["layers"] for head in layer["heads"])  # since issue 24
        return cls(
            column("sim_s"), column("sim_t"), column("mass_s"), column("mass_t"), temporal, data["settings"],
            data.get("forced", []), column("relative") if recorded else [],
        )

    @classmethod
    def load(cls, path: Path) -> HeadMap:
        """The map of a one-expert heads.json."""
        maps = load_head_maps(path)
        if list(maps) != [""]:
            raise InputError(f"{path}: holds the head maps of several experts ({', '.join(maps)})")
        return maps[""]


def head_maps_json(maps: dict[str, HeadMap]) -> dict:
    """heads.json: one expert's map as it is; several under "experts", by expert name."""
    if list(maps) == [""]:
        return maps[""].to_json()
    return {"experts": {name: head_map.to_json() for name, head_map in maps.items()}}


def load_head_maps(path: Path) -> dict[str, HeadMap]:
    """Expert name -> its map, from a heads.json of either layout."""
    try:
        data = json.loads(Path(path).read_text())
        experts = data.get("experts", {"": data})
        return {name: HeadMap.from_json(entry) for name, entry in experts.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: not a valid heads.json ({err})") from err


def template_masks(
    queries: torch.Tensor, grid: tuple[int, int, int], radius: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean template rows (n_query, S) for flat query indices on a (frames, rows, cols) grid."""
    frames, rows, cols = grid
    keys = torch.arange(frames * rows * cols)
    kf, kr, kc = keys // (rows * cols), (keys // cols) % rows, keys % cols
    qf, qr, qc = queries // (rows * cols), (queries // cols) % rows, queries % cols
    same_frame = qf[:, None] == kf[None, :]
    near = ((qr[:, None] - kr[None, :]).abs() <= radius) & ((qc[:, None] - kc[None, :]).abs() <= radius)
    return same_frame, near & ~same_frame


def score_layer(
    q: torch.Tensor, k: torch.Tensor, queries: torch.Tensor, grid: tuple[int, int, int], radius: int,
    templates: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> HeadScores:
    """Template statistics of one layer from q, k (B, S, H, D), one head at a time to bound memory.
    `templates`: the (spatial, temporal) template rows already on q's device and dtype (the same for every layer
    of a pass, so a pass builds them once)."""
    if templates is None:
        templates = tuple(m.to(q.device, q.dtype) for m in template_masks(queries.cpu(), grid, radius))
    spatial, temporal = templates
    per_head = []  # (mass_s, mass_t, sum of squares) of each head
    scale = 1 / math.sqrt(q.shape[-1])
    for h in range(q.shape[2]):
        rows = torch.softmax(q[:, queries, h] @ k[:, :, h].transpose(1, 2) * scale, dim=-1)  # (B, n, S)
        per_head.append(torch.stack([(rows * spatial).sum(), (rows * temporal).sum(), rows.square().sum()]))
    mass_s, mass_t, sq = torch.stack(per_head).double().cpu().unbind(1)
    batch = q.shape[0]
    return HeadScores(mass_s, mass_t, sq, int(spatial.sum()) * batch, int(temporal.sum()) * batch)


def structureless_ratio(scores: HeadScores) -> float:
    """Sim_s / Sim_t of a head that attends evenly to every key, on these sampled rows: sqrt(count_s / count_t)
    (a uniform row puts mass 1/S on each key, so each Sim is sqrt(#ones) / sqrt(n S))."""
    return math.sqrt(max(scores.count_s, 1) / max(scores.count_t, 1))


def classify(scores: list[HeadScores], settings: HeadSettings) -> HeadMap:
    """Apply the chosen rule to per-layer template statistics."""
    sim_s, sim_t, mass_s, mass_t, temporal, relative = [], [], [], [], [], []
    for layer in scores:
        norm = layer.sq_norm.sqrt()
        s = layer.mass_s / (norm * math.sqrt(max(layer.count_s, 1)))
        t = layer.mass_t / (norm * math.sqrt(max(layer.count_t, 1)))
        uniform = structureless_ratio(layer)
        if settings.rule == "paper":
            is_temporal = s < settings.alpha * t
        elif settings.rule == "relative":  # (s / t) / uniform < relative_alpha, without dividing by t
            is_temporal = s < settings.relative_alpha * uniform * t
        else:
            is_temporal = layer.mass_t >= settings.release_ratio * layer.mass_s
        relative.append([float(a / b / uniform) if b > 0 else None for a, b in zip(s.tolist(), t.tolist(),
                                                                                    strict=True)])
        sim_s.append(s.tolist())
        sim_t.append(t.tolist())
        mass_s.append(layer.mass_s.tolist())
        mass_t.append(layer.mass_t.tolist())
        temporal.append(is_temporal.tolist())
    score = [[b / max(a, 1e-12) for a, b in zip(*pair, strict=True)] for pair in zip(sim_s, sim_t, strict=True)]
    if settings.rule == "release":
        score = [[b / max(a, 1e-12) for a, b in zip(*pair, strict=True)] for pair in zip(mass_s, mass_t, strict=True)]
    forced = ensure_minimum(temporal, score, settings.min_heads)
    return HeadMap(sim_s, sim_t, mass_s, mass_t, temporal, settings.model_dump(), forced, relative)


def ensure_minimum(temporal: list[list[bool]], score: list[list[float]], minimum: int) -> list[list[int]]:
    """Give each type at least `minimum` heads in the whole model, flipping the heads closest to the other
    type (by `score`, higher = more temporal). A rule can leave a model with no head of one type; its LoRA
    would then be empty and the stage a no-op. Returns the flipped [layer, head] pairs (in place)."""
    heads = sorted((score[i][h], i, h) for i, row in enumerate(temporal) for h in range(len(row)))
    forced: list[list[int]] = []
    for want, candidates in ((True, reversed(heads)), (False, iter(heads))):
        missing = minimum - sum(row.count(want) for row in temporal)
        for _, layer, head in candidates:
            if missing <= 0:
                break
            if temporal[layer][head] != want:
                temporal[layer][head] = want
                forced.append([layer, head])
                missing -= 1
    return forced


def capture_sigma(expert: Expert, sigma: float) -> float:
    """The noise level of the capture pass: `sigma` if the expert serves it, else the middle of its range (each
    expert is classified on noise it sees)."""
    lo, hi = expert.sigma_range
    return sigma if expert.serves(sigma) else (lo + hi) / 2


def classify_heads(
    backbone: Backbone, expert: Expert, latents: torch.Tensor, cond: Conditioning, settings: HeadSettings
) -> HeadMap:
    """One no-grad pass of the frozen expert over the noised reference latents, its scores classified."""
    scores, recorded = head_scores(backbone, expert, latents, cond, settings)
    head_map = classify(scores, settings)
    head_map.settings.update(recorded)
    return head_map


@torch.no_grad()
def head_scores(
    backbone: Backbone, expert: Expert, latents: torch.Tensor, cond: Conditioning, settings: HeadSettings
) -> tuple[list[HeadScores], dict]:
    """Every layer's template statistics from one no-grad pass of the frozen expert over the noised reference
    latents, and what the pass used (the noise level where it differs from `settings.sigma`, a timestep)."""
    generator = torch.Generator().manual_seed(settings.seed)
    grid = backbone.token_grid(latents)
    tokens = math.prod(grid)
    n = min(settings.num_queries, tokens)
    queries = torch.randperm(tokens, generator=generator)[:n].sort().values
    noise = backbone.draw_noise(latents.shape, generator).to(latents)
    sigma_used = capture_sigma(expert, settings.sigma)
    noisy, timesteps, recorded = capture_sample(backbone, latents, noise, sigma_used)  # v-prediction: its timestep
    scores: dict[int, HeadScores] = {}
    masks = template_masks(queries, grid, settings.radius)
    on_device: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # the template rows, moved once per pass

    def collect(layer: int, q: torch.Tensor, k: torch.Tensor) -> None:
        if q.shape[1] != tokens:
            raise RuntimeError(f"layer {layer} handed {q.shape[1]} video tokens for a {grid} grid")
        where = (q.device, q.dtype)
        if where not in on_device:
            on_device[where] = tuple(m.to(*where) for m in masks)
        scores[layer] = score_layer(q, k, queries.to(q.device), grid, settings.radius, on_device[where])

    with backbone.capture_qk(expert, collect):
        backbone.predict(expert, noisy, timesteps, cond)
    if sigma_used != settings.sigma:
        recorded = {"sigma_used": sigma_used, **recorded}
    return [scores[i] for i in range(len(expert.sites))], recorded


def plot_head_map(head_map: HeadMap, path: Path) -> None:
    """Heat map of head types (rows: layers, columns: heads), coloured by sim_t / (sim_s + sim_t)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ratio = np.array(head_map.sim_t) / (np.array(head_map.sim_s) + np.array(head_map.sim_t) + 1e-12)
    layers, heads = ratio.shape
    fig, ax = plt.subplots(figsize=(max(4, heads * 0.35 + 2), max(3, layers * 0.22 + 1.5)))
    image = ax.imshow(ratio, cmap="coolwarm", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    for layer, row in enumerate(head_map.temporal):
        for head, is_temporal in enumerate(row):
            ax.text(head, layer, "T" if is_temporal else "S", ha="center", va="center", fontsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title("head types (T temporal, S spatial); colour: sim_t / (sim_s + sim_t)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
