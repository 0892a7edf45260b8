"""The benchmark report: tables, plots and a static HTML page from a bench directory's per-result records.

``write_report(bench_dir)`` reads the results the runner wrote (``results.jsonl``, or else every
``results/*.json``), one record per (case, method, prompt, seed), and writes next to them:

* ``results.csv``  - one row per result, metrics / timings / memory / paths flattened to ``group.key`` columns;
* ``results.json`` - the aggregates: per method, per category and overall, for every metric and the tuning
  time, n, mean and the 95% confidence interval of the mean;
* ``results.md``   - the same aggregates as Markdown tables, and each method's paired difference from the
  baseline method (``paired``: fym when it ran, or the one a compared folder's compare.json names) on the
  same cases, and a compared folder's runs (label, folder, model, settings);
* ``index.html``   - a self-contained page (no scripts, no external resources): the overall table, the plots,
  and one row per case with the reference and every method's output side by side;
* ``plots/fidelity_vs_time.png`` and ``plots/per_category.png``.

The aggregates and what counts as a sample or as tuning time are described in ``aggregates`` and ``stats``;
the plots are drawn by ``plots``, the page by ``html_page``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import InputError
from ..runs import atomic_write_text
from .aggregates import (
    FLAT_GROUPS,
    OVERALL,
    TIMES,
    TUNING,
    TUNING_STAGES,
    aggregate,
    is_rate,
    load_results,
    mean_ci,
    metric_label,
    metric_names,
    ordered_categories,
    tuning_time,
)
from .html_page import index_page
from .paired import baseline_of, paired_differences
from .plots import plot_fidelity_vs_time, plot_per_category, plotted_metric
from .stats import CI_LEVEL

ID_FIELDS = ("case", "category", "method", "prompt", "prompt_index", "seed")
TIMING_ORDER = (*TUNING_STAGES, "generate", "total")
NESTED = ("ground_truth", "metric_errors", "constants", "config", "video", "process")
"""Record fields that are objects (some only sometimes): left out of the CSV, which flattens FLAT_GROUPS."""
PLOT_FIDELITY_VS_TIME = "plots/fidelity_vs_time.png"
PLOT_PER_CATEGORY = "plots/per_category.png"


def _cell(stats: dict, metric: str) -> str:
    """"mean ± half-width (n=k)"; "± n/a" with one value; an em dash with none."""
    return f"{mean_ci(stats, metric)} (n={stats['n']})" if stats["n"] else "—"


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


def _paired_markdown(paired: dict, baseline: str, cols: list[str], rates: set[str]) -> list[str]:
    lines = [f"## Paired differences from {baseline}", "",
             f"Per method, (method - {baseline}) on each result both have (same case, prompt and seed): mean ±",
             f"half-width of its {CI_LEVEL:.0%} interval (n pairs). An interval that excludes 0 separates the two.",
             "", "| method | " + " | ".join(metric_label(m, rates) for m in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for method, stats in paired.items():
        lines.append(f"| {method} | " + " | ".join(_cell(stats[m], m) for m in cols) + " |")
    return [*lines, ""]


def _runs_markdown(runs: dict) -> list[str]:
    """A compared folder's runs (compare.json): what each METHOD@LABEL's label stands for."""
    lines = ["## Compared runs", "", "| label | folder | model | settings changed (--config) |", "|---|---|---|---|"]
    for label, run in runs.items():
        run = run if isinstance(run, dict) else {}
        cells = [label, run.get("folder"), run.get("model") or "default", json.dumps(run.get("overrides") or {})]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return [*lines, ""]


def _markdown(aggregates: dict, metrics: list[str], rates: set[str], source: str, n: int,
              paired: dict, baseline: str, runs: dict) -> str:
    cols = [*metrics, *TIMES]
    header = "| {} | results | " + " | ".join(metric_label(m, rates) for m in cols) + " |"
    rule = "|---|---:|" + "---:|" * len(cols)
    lines = [
        "# FYM MotionBench results",
        "",
        f"{n} results from `{source}`. Cells: mean ± half-width of the {CI_LEVEL:.0%} confidence interval of",
        "the mean (Student's t, n - 1 degrees of freedom; n/a with one value), and n, the number of results",
        "with that value. Each result (case × prompt × seed) counts as one sample. Rates are booleans averaged",
        "as 0/1. Tuning time: classify + spatial + motion stages (0 for methods that do not tune; for a method",
        "that reused another's tuning of the case, that tuning's). Sampling time: generating the one video alone,",
        "what a video costs once its LoRAs are tuned (tuning + sampling: what it costs from scratch).",
        "",
        *(_runs_markdown(runs) if runs else []),
        "## Overall",
        "",
        header.format("method"),
        rule,
    ]
    for method, groups in aggregates.items():
        stats = groups[OVERALL]
        lines.append(f"| {method} | {stats['n_results']} | " + " | ".join(_cell(stats[m], m) for m in cols) + " |")
    lines.append("")
    if paired:
        lines += _paired_markdown(paired, baseline, cols, rates)
    lines += ["## Per method and category", ""]
    for method, groups in aggregates.items():
        lines += [f"### {method}", "", header.format("category"), rule]
        for name, stats in groups.items():
            label = f"**{name}**" if name == OVERALL else name
            lines.append(f"| {label} | {stats['n_results']} | " + " | ".join(_cell(stats[m], m) for m in cols) + " |")
        lines.append("")
    return "\n".join(lines)


def _compare_record(bench_dir: Path) -> dict:
    """A compared folder's compare.json (``compare.compare_runs``: its baseline and runs), else {}."""
    path = bench_dir / "compare.json"
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        record = None
    if (not isinstance(record, dict) or not isinstance(record.get("baseline"), str) or not record["baseline"]
            or not isinstance(record.get("runs", {}), dict)):
        raise InputError(f"{path}: not a compare record (no baseline); make it again with `fym bench compare`")
    return record


def write_report(bench_dir: Path, baseline: str | None = None) -> dict[str, Path]:
    """Write results.csv, results.json, results.md, plots/*.png and index.html into ``bench_dir``.

    The paired differences are from ``baseline``: when not given, the one compare.json names, else fym when it
    ran, else the first method.

    Returns {"csv", "json", "markdown", "plot_fidelity_vs_time", "plot_per_category", "html"} -> path.
    Raises ValueError when the directory is missing or holds no (valid) results.
    """
    bench_dir = Path(bench_dir)
    records, source = load_results(bench_dir)
    metrics = metric_names(records)
    rates = {m for m in metrics if is_rate(records, m)}
    categories = ordered_categories(records)
    aggregates = aggregate(records)
    compared = _compare_record(bench_dir)
    baseline = baseline or compared.get("baseline") or baseline_of(list(aggregates))
    differences = paired_differences(records, baseline)
    paired = {method: differences[method] for method in aggregates if method in differences}  # table order
    primary = plotted_metric(metrics)

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
        "tuning_time": f"0 if not tuned; else sum of timings {list(TUNING_STAGES)} (a reused tuning's: see "
                       "tuning_from); else total - generate",
        "sampling_time": "timings.generate: generating the one video",
        "aggregates": aggregates,
        "paired": {"baseline": baseline, "difference": "method - baseline, per (case, prompt index, seed) both have",
                   "methods": paired},
    }
    written["json"] = atomic_write_text(bench_dir / "results.json", json.dumps(summary, indent=1) + "\n")
    written["markdown"] = atomic_write_text(
        bench_dir / "results.md", _markdown(aggregates, metrics, rates, source, len(records), paired, baseline,
                                             compared.get("runs") or {}) + "\n"
    )
    written["plot_fidelity_vs_time"] = plot_fidelity_vs_time(
        bench_dir / PLOT_FIDELITY_VS_TIME, records, aggregates, primary
    )
    written["plot_per_category"] = plot_per_category(bench_dir / PLOT_PER_CATEGORY, aggregates, categories, primary)
    plots = {"fidelity vs tuning time": written["plot_fidelity_vs_time"],
             "per-category motion fidelity": written["plot_per_category"]}
    written["html"] = atomic_write_text(
        bench_dir / "index.html", index_page(bench_dir, records, aggregates, metrics, rates, plots, source)
    )
    return written
