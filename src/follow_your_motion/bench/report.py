"""The benchmark report: tables, plots and a static HTML page from a bench directory's per-result records.

``write_report(bench_dir)`` reads the results the runner wrote (``results.jsonl``, or else every
``results/*.json``), one record per (case, method, prompt, seed), and writes next to them:

* ``results.csv``  - one row per result, metrics / timings / memory / paths flattened to ``group.key`` columns;
* ``results.json`` - the aggregates: per method, per category and overall, for every metric and the tuning
  time, n, mean and the 95% confidence interval of the mean;
* ``results.md``   - the same aggregates as Markdown tables;
* ``index.html``   - a self-contained page (no scripts, no external resources): the overall table, the plots,
  and one row per case with the reference and every method's output side by side;
* ``plots/fidelity_vs_time.png`` and ``plots/per_category.png``.

Statistics. Each result is one sample (results of the same case with other prompts or seeds are not
independent, so the interval is optimistic when a case has several). The 95% interval is
``mean ± t(0.975, n - 1) · s / sqrt(n)`` with the sample standard deviation ``s``; with n = 1 there is no
interval ("n/a"). Missing or null metric values are left out of that metric's n. Boolean metrics (e.g.
``reference_colour_leaked``) are averaged as 0/1, i.e. reported as a rate.

Tuning time of a result is 0 for a method that does not tune (``"tuned": false``), else the sum of its
``classify``, ``spatial`` and ``motion`` timings (those not null; the runner repeats its run's stage times in
every result of that run); a record with none of them but a ``total`` and a ``generate`` timing gets
``total - generate``; otherwise it has none. Metrics in ``NOT_AGGREGATED`` (e.g. the frame count) are kept
in the CSV but left out of the tables.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from ..runs import atomic_write, atomic_write_text

CATEGORIES = ("camera", "single-object", "multi-object", "human", "other")
"""Benchmark categories, in report order; unknown categories follow in alphabetical order."""
OVERALL = "overall"
PRIMARY_METRICS = ("motion_fidelity_det", "motion_fidelity_dmt")
"""Metrics shown first; the first one present is the fidelity axis of the plots."""
NOT_AGGREGATED = ("frames",)
"""Entries of a result's ``metrics`` that describe it rather than score it."""
TUNING_STAGES = ("classify", "spatial", "motion")
TUNING = "tuning_time_s"
TIMING_ORDER = (*TUNING_STAGES, "generate", "total")
CI_LEVEL = 0.95
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".m4v", ".ogv")
IMAGE_SUFFIXES = (".gif", ".png", ".jpg", ".jpeg", ".webp")
ID_FIELDS = ("case", "category", "method", "prompt", "prompt_index", "seed")
FLAT_GROUPS = ("metrics", "timings", "memory", "paths")
NESTED = ("ground_truth", "metric_errors", "constants", "config", "video", "process")
"""Record fields that are objects (some only sometimes): left out of the CSV, which flattens FLAT_GROUPS."""
PLOT_FIDELITY_VS_TIME = "plots/fidelity_vs_time.png"
PLOT_PER_CATEGORY = "plots/per_category.png"


# ------------------------------------------------------------------------------------------- statistics


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` >= 1 (closed-form finite series, A&S 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        if df == 1:
            return 2.0 * theta / math.pi
        term, total = 1.0, 1.0
        for k in range(1, (df - 1) // 2):  # terms 2/3 c^2, (2*4)/(3*5) c^4, ...
            term *= (2.0 * k) / (2.0 * k + 1.0) * c2
            total += term
        return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term, total = 1.0, 1.0
    for k in range(1, df // 2):  # terms 1/2 c^2, (1*3)/(2*4) c^4, ...
        term *= (2.0 * k - 1.0) / (2.0 * k) * c2
        total += term
    return math.sin(theta) * total


def t_critical(df: int, level: float = CI_LEVEL) -> float:
    """Two-sided critical value of Student's t: P(|T| <= t) = ``level`` (12.706 for df = 1 at 95%).

    Computed by bisection on the exact distribution function, so no table or SciPy is needed. Above
    10,000 degrees of freedom the value for 10,000 is returned (within 3e-4 of the limit, 1.95996).
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if df > 10_000:
        df = 10_000
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < level:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_two_sided_mass(mid, df) < level:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def summarize(values: Iterable[float]) -> dict:
    """n, mean, sample std and the 95% t interval of the mean (``None`` where undefined)."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95_half": None, "ci95_low": None, "ci95_high": None}
    mean = math.fsum(vals) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci95_half": None, "ci95_low": None, "ci95_high": None}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t_critical(n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95_half": half, "ci95_low": mean - half, "ci95_high": mean + half}


# ------------------------------------------------------------------------------------------------ input


def _number(value: object) -> float | None:
    """A finite number (bools as 0/1) or None for anything missing, null, non-numeric or non-finite."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _check_record(record: object, where: str) -> dict:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a result must be a JSON object, got {type(record).__name__}")
    for key in ("case", "method"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise ValueError(f"{where}: result has no {key!r}")
    for key in FLAT_GROUPS:
        if record.get(key) is not None and not isinstance(record[key], dict):
            raise ValueError(f"{where}: {key!r} must be an object, got {type(record[key]).__name__}")
    return record


def load_results(bench_dir: Path) -> tuple[list[dict], str]:
    """The result records of ``bench_dir`` and where they came from (results.jsonl, else results/*.json)."""
    bench_dir = Path(bench_dir)
    if not bench_dir.is_dir():
        raise ValueError(f"{bench_dir}: not a benchmark directory (does not exist or is not a directory)")
    records: list[dict] = []
    jsonl = bench_dir / "results.jsonl"
    if jsonl.is_file():
        for number, line in enumerate(jsonl.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{jsonl}:{number}: not valid JSON ({err.msg})") from None
            records.append(_check_record(record, f"{jsonl}:{number}"))
        if records:
            return records, jsonl.name
    for path in sorted((bench_dir / "results").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg})") from None
        records.append(_check_record(record, str(path)))
    if not records:
        raise ValueError(
            f"{bench_dir}: no results found (expected results.jsonl or results/*.json; run `fym bench run` first)"
        )
    return records, "results/*.json"


def tuning_time(record: dict) -> float | None:
    """Seconds spent tuning for this result (see the module docstring), or None when unknown."""
    if record.get("tuned") is False:
        return 0.0
    timings = record.get("timings") or {}
    stages = [_number(timings.get(k)) for k in TUNING_STAGES if k in timings]
    known = [v for v in stages if v is not None]
    if known:
        return math.fsum(known)
    total, generate = _number(timings.get("total")), _number(timings.get("generate"))
    if total is not None and generate is not None:
        return max(0.0, total - generate)
    return None


def _category(record: dict) -> str:
    category = record.get("category")
    return category if isinstance(category, str) and category else "other"


def _ordered_categories(records: list[dict]) -> list[str]:
    present = {_category(r) for r in records}
    return [c for c in CATEGORIES if c in present] + sorted(present - set(CATEGORIES))


def _ordered_methods(records: list[dict]) -> list[str]:
    """Known methods in their registry order (``bench.methods.METHODS``: fym first), then the rest by name."""
    from .methods import METHODS

    present = {r["method"] for r in records}
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def metric_names(records: list[dict]) -> list[str]:
    """Metrics with at least one numeric (or boolean) value: the primary ones first, then as first seen."""
    seen: dict[str, None] = {}
    for record in records:
        for key, value in (record.get("metrics") or {}).items():
            if key not in NOT_AGGREGATED and _number(value) is not None:
                seen[key] = None
    return [m for m in PRIMARY_METRICS if m in seen] + [m for m in seen if m not in PRIMARY_METRICS]


def _is_rate(records: list[dict], metric: str) -> bool:
    values = [(r.get("metrics") or {}).get(metric) for r in records]
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, bool) for v in present)


def _values(records: list[dict], metric: str) -> list[float]:
    if metric == TUNING:
        found = (tuning_time(r) for r in records)
    else:
        found = (_number((r.get("metrics") or {}).get(metric)) for r in records)
    return [v for v in found if v is not None]


# ------------------------------------------------------------------------------------------- aggregates


def aggregate(records: list[dict]) -> dict:
    """{method: {category | "overall": {"n_results": n, metric | "tuning_time_s": summarize(...)}}}."""
    metrics = [*metric_names(records), TUNING]
    out: dict[str, dict] = {}
    for method in _ordered_methods(records):
        mine = [r for r in records if r["method"] == method]
        groups = {c: [r for r in mine if _category(r) == c] for c in _ordered_categories(mine)}
        groups[OVERALL] = mine
        out[method] = {
            name: {"n_results": len(group), **{m: summarize(_values(group, m)) for m in metrics}}
            for name, group in groups.items()
        }
    return out


def _label(metric: str, rates: set[str]) -> str:
    if metric == TUNING:
        return "tuning time (s)"
    return f"{metric} (rate)" if metric in rates else metric


def _mean_ci(stats: dict, metric: str) -> str:
    digits = 2 if metric == TUNING else 4
    half = "n/a" if stats["ci95_half"] is None else f"{stats['ci95_half']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {half}"


def _cell(stats: dict, metric: str) -> str:
    """"mean ± half-width (n=k)"; "± n/a" with one value; an em dash with none."""
    return f"{_mean_ci(stats, metric)} (n={stats['n']})" if stats["n"] else "—"


def _html_cell(stats: dict, metric: str) -> str:
    if not stats["n"]:
        return "<td class='num'>—</td>"
    return f"<td class='num'>{_esc(_mean_ci(stats, metric))}<br><small>n={stats['n']}</small></td>"


# --------------------------------------------------------------------------------------------- writers


def _csv_rows(records: list[dict]) -> tuple[list[str], list[dict]]:
    columns: dict[str, None] = dict.fromkeys(ID_FIELDS)
    extra: dict[str, None] = {}
    nested = set(NESTED) | {k for r in records for k, v in r.items() if isinstance(v, dict)}
    rows = []
    for record in records:
        row = {k: record.get(k) for k in ID_FIELDS}
        for key, value in record.items():
            if key in ID_FIELDS or key in nested:
                continue
            if isinstance(value, list):
                if not all(isinstance(v, str | int | float) for v in value):
                    continue
                value = ";".join(str(v) for v in value)
            row[key] = value
            extra[key] = None
        row[TUNING] = tuning_time(record)
        for group in FLAT_GROUPS:
            for key, value in (record.get(group) or {}).items():
                if isinstance(value, dict | list):
                    continue
                row[f"{group}.{key}"] = value
        rows.append(row)
    columns.update(extra)
    columns[TUNING] = None
    for group in FLAT_GROUPS:
        known = [f"timings.{k}" for k in TIMING_ORDER] if group == "timings" else []
        found = {k: None for row in rows for k in row if k.startswith(f"{group}.")}
        columns.update((k, None) for k in known if k in found)
        columns.update(found)
    return list(columns), rows


def _write_csv(path: Path, records: list[dict]) -> Path:
    columns, rows = _csv_rows(records)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return atomic_write_text(path, buf.getvalue())


def _markdown(aggregates: dict, metrics: list[str], rates: set[str], source: str, n: int) -> str:
    cols = [*metrics, TUNING]
    header = "| {} | results | " + " | ".join(_label(m, rates) for m in cols) + " |"
    rule = "|---|---:|" + "---:|" * len(cols)
    lines = [
        "# FYM MotionBench results",
        "",
        f"{n} results from `{source}`. Cells: mean ± half-width of the {CI_LEVEL:.0%} confidence interval of",
        "the mean (Student's t, n - 1 degrees of freedom; n/a with one value), and n, the number of results",
        "with that value. Each result (case × prompt × seed) counts as one sample. Rates are booleans averaged",
        "as 0/1. Tuning time: classify + spatial + motion stages (0 for methods that do not tune).",
        "",
        "## Overall",
        "",
        header.format("method"),
        rule,
    ]
    for method, groups in aggregates.items():
        stats = groups[OVERALL]
        lines.append(f"| {method} | {stats['n_results']} | " + " | ".join(_cell(stats[m], m) for m in cols) + " |")
    lines += ["", "## Per method and category", ""]
    for method, groups in aggregates.items():
        lines += [f"### {method}", "", header.format("category"), rule]
        for name, stats in groups.items():
            label = f"**{name}**" if name == OVERALL else name
            lines.append(f"| {label} | {stats['n_results']} | " + " | ".join(_cell(stats[m], m) for m in cols) + " |")
        lines.append("")
    return "\n".join(lines)


def _primary_metric(metrics: list[str]) -> str | None:
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


def _plot_fidelity_vs_time(path: Path, records: list[dict], aggregates: dict, metric: str | None) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    colours = [f"C{i}" for i in range(10)]
    plotted = False
    for i, method in enumerate(aggregates):
        pairs = [
            (tuning_time(r), _number((r.get("metrics") or {}).get(metric)) if metric else None)
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


def _plot_per_category(path: Path, aggregates: dict, categories: list[str], metric: str | None) -> Path:
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


# ------------------------------------------------------------------------------------------------- HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fff; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure { margin: 0 0 0.6em; }
figcaption { font-size: 0.8em; max-width: 260px; }
video, img.media { width: 256px; height: auto; background: #000; display: block; }
img.plot { max-width: 100%; }
.missing { width: 256px; padding: 2em 0.5em; background: #fee; color: #900; border: 1px dashed #c00;
           font-size: 0.85em; word-break: break-all; }
dl { margin: 0.2em 0; font-size: 0.8em; display: grid; grid-template-columns: auto auto; gap: 0 0.8em; }
ul.errors { margin: 0.2em 0; padding-left: 1.2em; color: #900; font-size: 0.8em; }
dt { color: #555; } dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _media(bench_dir: Path, path_value: object, label: str) -> str:
    """A <video> or <img> for an existing file (relative src), else a visible "missing" note."""
    if not isinstance(path_value, str) or not path_value:
        return f'<div class="missing">missing: no {_esc(label)} path recorded</div>'
    target = Path(path_value)
    full = target if target.is_absolute() else bench_dir / target
    if not full.is_file():
        return f'<div class="missing">missing: {_esc(path_value)}</div>'
    src = _esc(quote(Path(os.path.relpath(full, bench_dir)).as_posix(), safe="/"))
    suffix = full.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return f'<video src="{src}" autoplay loop muted playsinline title="{_esc(label)}"></video>'
    if suffix in IMAGE_SUFFIXES:
        return f'<img class="media" src="{src}" alt="{_esc(label)}">'
    what = _esc(suffix or "this file")
    return f'<div class="missing">cannot show {what}: <a href="{src}">{_esc(path_value)}</a></div>'


def _format_value(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    number = _number(value)
    if number is None:
        return "—"
    return f"{number:.4f}"


def _sort_key(value: object) -> tuple:
    number = _number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def _result_figure(bench_dir: Path, record: dict, metrics: list[str]) -> str:
    paths = record.get("paths") or {}
    values = record.get("metrics") or {}
    caption = f"prompt {_esc(record.get('prompt_index', '?'))}, seed {_esc(record.get('seed', '?'))}"
    if record.get("prompt"):
        caption += f": “{_esc(record['prompt'])}”"
    rows = "".join(f"<dt>{_esc(m)}</dt><dd>{_format_value(values.get(m))}</dd>" for m in metrics)
    tuning = tuning_time(record)
    rows += f"<dt>tuning time</dt><dd>{'—' if tuning is None else f'{tuning:.1f} s'}</dd>"
    errors = record.get("metric_errors") or {}
    notes = "".join(f"<li>{_esc(k)}: {_esc(v)}</li>" for k, v in errors.items()) if isinstance(errors, dict) else ""
    if notes:
        notes = f"<ul class='errors'>{notes}</ul>"
    return (
        f"<figure>{_media(bench_dir, paths.get('result'), record['method'] + ' result')}"
        f"<figcaption>{caption}<dl>{rows}</dl>{notes}</figcaption></figure>"
    )


def _html(bench_dir: Path, records: list[dict], aggregates: dict, metrics: list[str], rates: set[str],
          plots: dict[str, Path], source: str) -> str:
    methods = list(aggregates)
    cols = [*metrics, TUNING]
    summary = "".join(
        f"<tr><th scope='row'>{_esc(method)}</th><td class='num'>{groups[OVERALL]['n_results']}</td>"
        + "".join(_html_cell(groups[OVERALL][m], m) for m in cols)
        + "</tr>"
        for method, groups in aggregates.items()
    )
    summary_head = "".join(f"<th>{_esc(_label(m, rates))}</th>" for m in cols)

    order = {c: i for i, c in enumerate(_ordered_categories(records))}
    cases: dict[str, list[dict]] = {}
    for record in records:
        cases.setdefault(record["case"], []).append(record)
    case_rows = []
    for case, mine in sorted(cases.items(), key=lambda kv: (order[_category(kv[1][0])], kv[0])):
        reference = next(((r.get("paths") or {}).get("reference") for r in mine
                          if (r.get("paths") or {}).get("reference")), None)
        cells = [
            f"<th scope='row'>{_esc(case)}<br><small>{_esc(_category(mine[0]))}</small></th>",
            f"<td>{_media(bench_dir, reference, case + ' reference')}</td>",
        ]
        for method in methods:
            results = sorted((r for r in mine if r["method"] == method),
                             key=lambda r: (_sort_key(r.get("prompt_index")), _sort_key(r.get("seed"))))
            body = "".join(_result_figure(bench_dir, r, metrics) for r in results) or "<small>no result</small>"
            cells.append(f"<td>{body}</td>")
        case_rows.append("<tr class='case'>" + "".join(cells) + "</tr>")
    method_heads = "".join(f"<th>{_esc(m)}</th>" for m in methods)
    plot_imgs = "".join(
        f'<figure><img class="plot" src="{_esc(quote(Path(os.path.relpath(p, bench_dir)).as_posix(), safe="/"))}" '
        f'alt="{_esc(name)}"></figure>'
        for name, p in plots.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>FYM MotionBench report</title>
<style>{_CSS}</style>
</head>
<body>
<h1>FYM MotionBench report</h1>
<p>{len(records)} results from <code>{_esc(source)}</code>, {len(cases)} cases, methods: {_esc(", ".join(methods))}.
Cells: mean ± half-width of the 95% confidence interval of the mean (Student's t; n/a for one value).
Per-category tables: <a href="results.md">results.md</a>; every result: <a href="results.csv">results.csv</a>.</p>
<h2>Overall</h2>
<table id="summary">
<thead><tr><th>method</th><th>results</th>{summary_head}</tr></thead>
<tbody>{summary}</tbody>
</table>
<h2>Plots</h2>
{plot_imgs}
<h2>Cases</h2>
<table id="cases">
<thead><tr><th>case</th><th>reference</th>{method_heads}</tr></thead>
<tbody>
{chr(10).join(case_rows)}
</tbody>
</table>
</body>
</html>
"""


# ------------------------------------------------------------------------------------------------ entry


def write_report(bench_dir: Path) -> dict[str, Path]:
    """Write results.csv, results.json, results.md, plots/*.png and index.html into ``bench_dir``.

    Returns {"csv", "json", "markdown", "plot_fidelity_vs_time", "plot_per_category", "html"} -> path.
    Raises ValueError when the directory is missing or holds no (valid) results.
    """
    bench_dir = Path(bench_dir)
    records, source = load_results(bench_dir)
    metrics = metric_names(records)
    rates = {m for m in metrics if _is_rate(records, m)}
    categories = _ordered_categories(records)
    aggregates = aggregate(records)
    primary = _primary_metric(metrics)

    written = {"csv": _write_csv(bench_dir / "results.csv", records)}
    summary = {
        "source": source,
        "n_results": len(records),
        "methods": list(aggregates),
        "categories": categories,
        "metrics": metrics,
        "rate_metrics": sorted(rates),
        "plotted_metric": primary,
        "confidence_interval": {
            "level": CI_LEVEL,
            "method": "mean ± t(0.975, n-1) * s / sqrt(n), s the sample std; null for n = 1",
            "sample": "one result (case x prompt x seed)",
        },
        "tuning_time": f"0 if not tuned; else sum of timings {list(TUNING_STAGES)}; else total - generate",
        "aggregates": aggregates,
    }
    written["json"] = atomic_write_text(bench_dir / "results.json", json.dumps(summary, indent=1) + "\n")
    written["markdown"] = atomic_write_text(
        bench_dir / "results.md", _markdown(aggregates, metrics, rates, source, len(records)) + "\n"
    )
    written["plot_fidelity_vs_time"] = _plot_fidelity_vs_time(
        bench_dir / PLOT_FIDELITY_VS_TIME, records, aggregates, primary
    )
    written["plot_per_category"] = _plot_per_category(bench_dir / PLOT_PER_CATEGORY, aggregates, categories, primary)
    plots = {"fidelity vs tuning time": written["plot_fidelity_vs_time"],
             "per-category motion fidelity": written["plot_per_category"]}
    written["html"] = atomic_write_text(
        bench_dir / "index.html", _html(bench_dir, records, aggregates, metrics, rates, plots, source)
    )
    return written
