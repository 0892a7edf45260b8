"""Result records in, aggregates out: per method, per category and overall, every metric, the tuning time and
the sampling time.

``load_results`` reads what the runner wrote (``results.jsonl``, or else every ``results/*.json``), one
record per (case, method, prompt, seed). Missing or null metric values are left out of that metric's n.
Boolean metrics (e.g. ``reference_colour_leaked``) are averaged as 0/1, i.e. reported as a rate.

Tuning time of a result is 0 for a method that does not tune (``"tuned": false``), else the sum of its
``classify``, ``spatial`` and ``motion`` timings (those not null; the runner repeats its run's stage times in
every result of that run); a record with none of them but a ``total`` and a ``generate`` timing gets
``total - generate``; otherwise it has none. A result that reused another method's tuning (``tuning_from``)
carries that tuning's stage times, so tuning + sampling stays the cost of one video made from scratch; its
sampling time (the ``generate`` timing alone) is what one more video costs with a tuning at hand. Metrics in
``NOT_AGGREGATED`` (the frame count, and ``text_similarity_x100``, which is 100 x ``text_similarity``) are kept in
the CSV but left out of the tables.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import InputError
from .stats import summarize

CATEGORIES = ("camera", "single-object", "multi-object", "human", "other")
"""Benchmark categories, in report order; unknown categories follow in alphabetical order."""
OVERALL = "overall"
PRIMARY_METRICS = ("motion_fidelity_det", "motion_fidelity_dmt")
"""Metrics shown first; the first one present is the fidelity axis of the plots."""
NOT_AGGREGATED = ("frames", "text_similarity_x100")
"""Entries of a result's ``metrics`` that describe it, or repeat another metric on another scale."""
TUNING_STAGES = ("classify", "spatial", "motion")
TUNING = "tuning_time_s"
SAMPLING = "sampling_time_s"
TIMES = (TUNING, SAMPLING)
"""The time columns that follow the metrics in every table."""
FLAT_GROUPS = ("metrics", "timings", "memory", "paths")
"""Record fields that are objects of plain values (the CSV flattens them to ``group.key`` columns)."""


def as_number(value: object) -> float | None:
    """A finite number (bools as 0/1) or None for anything missing, null, non-numeric or non-finite."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _check_record(record: object, where: str) -> dict:
    if not isinstance(record, dict):
        raise InputError(f"{where}: a result must be a JSON object, got {type(record).__name__}")
    for key in ("case", "method"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise InputError(f"{where}: result has no {key!r}")
    for key in FLAT_GROUPS:
        if record.get(key) is not None and not isinstance(record[key], dict):
            raise InputError(f"{where}: {key!r} must be an object, got {type(record[key]).__name__}")
    return record


def load_results(bench_dir: Path) -> tuple[list[dict], str]:
    """The result records of ``bench_dir`` and where they came from (results.jsonl, else results/*.json)."""
    bench_dir = Path(bench_dir)
    if not bench_dir.is_dir():
        raise InputError(f"{bench_dir}: not a benchmark directory (does not exist or is not a directory)")
    records: list[dict] = []
    jsonl = bench_dir / "results.jsonl"
    if jsonl.is_file():
        for number, line in enumerate(jsonl.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InputError(f"{jsonl}:{number}: not valid JSON ({err.msg})") from None
            records.append(_check_record(record, f"{jsonl}:{number}"))
        if records:
            return records, jsonl.name
    for path in sorted((bench_dir / "results").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: not valid JSON ({err.msg})") from None
        records.append(_check_record(record, str(path)))
    if not records:
        raise InputError(
            f"{bench_dir}: no results found (expected results.jsonl or results/*.json; run `fym bench run` first)"
        )
    return records, "results/*.json"


def tuning_time(record: dict) -> float | None:
    """Seconds spent tuning for this result (see the module docstring), or None when unknown."""
    if record.get("tuned") is False:
        return 0.0
    timings = record.get("timings") or {}
    stages = [as_number(timings.get(k)) for k in TUNING_STAGES if k in timings]
    known = [v for v in stages if v is not None]
    if known:
        return math.fsum(known)
    total, generate = as_number(timings.get("total")), as_number(timings.get("generate"))
    if total is not None and generate is not None:
        return max(0.0, total - generate)
    return None


def category_of(record: dict) -> str:
    category = record.get("category")
    return category if isinstance(category, str) and category else "other"


def ordered_categories(records: list[dict]) -> list[str]:
    present = {category_of(r) for r in records}
    return [c for c in CATEGORIES if c in present] + sorted(present - set(CATEGORIES))


def _ordered_methods(records: list[dict]) -> list[str]:
    """Known methods in their registry order (``bench.methods.METHODS``: fym first), then the rest by name; a
    compared run's METHOD@LABEL (``compare``) stands where METHOD would, the runs in the order they came."""
    from .methods import METHODS

    known = list(METHODS)
    seen = list(dict.fromkeys(r["method"] for r in records))

    def place(method: str) -> tuple[int, str, int]:
        name = method.split("@")[0]
        return known.index(name) if name in known else len(known), name, seen.index(method)

    return sorted(seen, key=place)


def metric_names(records: list[dict]) -> list[str]:
    """Metrics with at least one numeric (or boolean) value: the primary ones first, then as first seen."""
    seen: dict[str, None] = {}
    for record in records:
        for key, value in (record.get("metrics") or {}).items():
            if key not in NOT_AGGREGATED and as_number(value) is not None:
                seen[key] = None
    return [m for m in PRIMARY_METRICS if m in seen] + [m for m in seen if m not in PRIMARY_METRICS]


def is_rate(records: list[dict], metric: str) -> bool:
    values = [(r.get("metrics") or {}).get(metric) for r in records]
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, bool) for v in present)


def metric_values(records: list[dict], metric: str) -> list[float]:
    """The metric's numeric values in `records` (the times for ``TIMES``), missing ones left out."""
    if metric == TUNING:
        found = (tuning_time(r) for r in records)
    elif metric == SAMPLING:
        found = (as_number((r.get("timings") or {}).get("generate")) for r in records)
    else:
        found = (as_number((r.get("metrics") or {}).get(metric)) for r in records)
    return [v for v in found if v is not None]


def aggregate(records: list[dict]) -> dict:
    """{method: {category | "overall": {"n_results": n, metric | time: summarize(...)}}} (times: ``TIMES``)."""
    metrics = [*metric_names(records), *TIMES]
    out: dict[str, dict] = {}
    for method in _ordered_methods(records):
        mine = [r for r in records if r["method"] == method]
        groups = {c: [r for r in mine if category_of(r) == c] for c in ordered_categories(mine)}
        groups[OVERALL] = mine
        out[method] = {
            name: {"n_results": len(group), **{m: summarize(metric_values(group, m)) for m in metrics}}
            for name, group in groups.items()
        }
    return out


def metric_label(metric: str, rates: set[str]) -> str:
    """A column heading: rates (boolean metrics, see ``is_rate``) and the times say so."""
    if metric in TIMES:
        return metric.removesuffix("_time_s") + " time (s)"
    return f"{metric} (rate)" if metric in rates else metric


def mean_ci(stats: dict, metric: str) -> str:
    """A ``summarize`` result as "mean ± half-width" ("± n/a" with one value); seconds to 2 decimals."""
    digits = 2 if metric in TIMES else 4
    half = "n/a" if stats["ci95_half"] is None else f"{stats['ci95_half']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {half}"
