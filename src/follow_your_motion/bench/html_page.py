"""The report's ``index.html``: a self-contained page (no scripts, no external resources) with the overall
table, the plots, and one row per case with the reference and every method's output side by side."""

from __future__ import annotations

import html
import os
from pathlib import Path
from urllib.parse import quote

from .aggregates import (
    OVERALL,
    TIMES,
    as_number,
    category_of,
    mean_ci,
    metric_label,
    metric_values,
    ordered_categories,
)

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".m4v", ".ogv")
IMAGE_SUFFIXES = (".gif", ".png", ".jpg", ".jpeg", ".webp")

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


def _html_cell(stats: dict, metric: str) -> str:
    if not stats["n"]:
        return "<td class='num'>—</td>"
    return f"<td class='num'>{_esc(mean_ci(stats, metric))}<br><small>n={stats['n']}</small></td>"


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
    number = as_number(value)
    if number is None:
        return "—"
    return f"{number:.4f}"


def _sort_key(value: object) -> tuple:
    number = as_number(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def _seconds(value: list[float]) -> str:
    return f"{value[0]:.1f} s" if value else "—"


def _result_figure(bench_dir: Path, record: dict, metrics: list[str]) -> str:
    paths = record.get("paths") or {}
    values = record.get("metrics") or {}
    caption = f"prompt {_esc(record.get('prompt_index', '?'))}, seed {_esc(record.get('seed', '?'))}"
    if record.get("prompt"):
        caption += f": “{_esc(record['prompt'])}”"
    rows = "".join(f"<dt>{_esc(m)}</dt><dd>{_format_value(values.get(m))}</dd>" for m in metrics)
    tuning, sampling = (metric_values([record], t) for t in TIMES)
    reused = f" (reused {_esc(record['tuning_from'])}'s)" if record.get("tuning_from") else ""
    rows += f"<dt>tuning time</dt><dd>{_seconds(tuning)}{reused}</dd>"
    rows += f"<dt>sampling time</dt><dd>{_seconds(sampling)}</dd>"
    errors = record.get("metric_errors") or {}
    notes = "".join(f"<li>{_esc(k)}: {_esc(v)}</li>" for k, v in errors.items()) if isinstance(errors, dict) else ""
    if notes:
        notes = f"<ul class='errors'>{notes}</ul>"
    return (
        f"<figure>{_media(bench_dir, paths.get('result'), record['method'] + ' result')}"
        f"<figcaption>{caption}<dl>{rows}</dl>{notes}</figcaption></figure>"
    )


def index_page(bench_dir: Path, records: list[dict], aggregates: dict, metrics: list[str], rates: set[str],
          plots: dict[str, Path], source: str) -> str:
    methods = list(aggregates)
    cols = [*metrics, *TIMES]
    summary = "".join(
        f"<tr><th scope='row'>{_esc(method)}</th><td class='num'>{groups[OVERALL]['n_results']}</td>"
        + "".join(_html_cell(groups[OVERALL][m], m) for m in cols)
        + "</tr>"
        for method, groups in aggregates.items()
    )
    summary_head = "".join(f"<th>{_esc(metric_label(m, rates))}</th>" for m in cols)

    order = {c: i for i, c in enumerate(ordered_categories(records))}
    cases: dict[str, list[dict]] = {}
    for record in records:
        cases.setdefault(record["case"], []).append(record)
    case_rows = []
    for case, mine in sorted(cases.items(), key=lambda kv: (order[category_of(kv[1][0])], kv[0])):
        reference = next(((r.get("paths") or {}).get("reference") for r in mine
                          if (r.get("paths") or {}).get("reference")), None)
        cells = [
            f"<th scope='row'>{_esc(case)}<br><small>{_esc(category_of(mine[0]))}</small></th>",
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

