"""The report's plots: motion fidelity against tuning time, and motion fidelity per category (mean ± 95% CI)."""

from __future__ import annotations

from pathlib import Path

from ..runs import atomic_write
from .aggregates import OVERALL, PRIMARY_METRICS, as_number, tuning_time
from .stats import summarize


def plotted_metric(metrics: list[str]) -> str | None:
    """The fidelity axis of the plots: the first primary metric present, else the first metric."""
    for metric in PRIMARY_METRICS:
        if metric in metrics:
            return metric
    return metrics[0] if metrics else None


def _save_figure(fig, path: Path) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no data: {what}", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_fidelity_vs_time(path: Path, records: list[dict], aggregates: dict, metric: str | None) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    colours = [f"C{i}" for i in range(10)]
    plotted = False
    for i, method in enumerate(aggregates):
        pairs = [
            (tuning_time(r), as_number((r.get("metrics") or {}).get(metric)) if metric else None)
            for r in records if r["method"] == method
        ]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        if not pairs:
            continue
        plotted = True
        colour = colours[i % len(colours)]
        ax.scatter([p[0] for p in pairs], [p[1] for p in pairs], color=colour, alpha=0.35, s=18)
        xs, ys = summarize(p[0] for p in pairs), summarize(p[1] for p in pairs)
        ax.errorbar(xs["mean"], ys["mean"], xerr=xs["ci95_half"], yerr=ys["ci95_half"], fmt="o", color=colour,
                    markersize=8, capsize=4, label=f"{method} (n={len(pairs)})")
    if plotted:
        ax.set_xlabel("tuning time per result (s)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs tuning time (mean ± 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    else:
        _no_data(ax, "no result has both a motion-fidelity value and a tuning time")
    return _save_figure(fig, path)


def plot_per_category(path: Path, aggregates: dict, categories: list[str], metric: str | None) -> Path:
    from matplotlib.figure import Figure

    groups = [*categories, OVERALL]
    fig = Figure(figsize=(max(6.4, 1.5 + 0.6 * len(groups) * max(1, len(aggregates))), 4.4))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(aggregates))
    plotted = False
    for i, (method, by_group) in enumerate(aggregates.items()):
        xs, means, errs = [], [], []
        for j, group in enumerate(groups):
            stats = by_group.get(group, {}).get(metric) if metric else None
            if stats and stats["n"]:
                xs.append(j - 0.4 + width * (i + 0.5))
                means.append(stats["mean"])
                errs.append(stats["ci95_half"] or 0.0)
        if xs:
            plotted = True
            ax.bar(xs, means, width=width, yerr=errs, capsize=3, color=f"C{i % 10}", label=method)
    if plotted:
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per category (mean ± 95% CI)")
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="small")
    else:
        _no_data(ax, "no motion-fidelity values")
    return _save_figure(fig, path)
