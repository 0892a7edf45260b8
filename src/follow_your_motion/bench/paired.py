"""Paired differences between methods: each method against a baseline on the same (case, prompt, seed).

Methods run on the same cases, so most of the spread of a metric comes from the cases, not the methods: two
methods' per-method intervals can overlap although one is better on nearly every case. The paired difference
(method - baseline, one value per (case, prompt index, seed) both have) removes the case-to-case spread; its 95%
interval (Student's t, as ``stats.summarize``) excluding 0 separates the two methods on that metric.
"""

from __future__ import annotations

from ..errors import InputError
from .aggregates import TIMES, metric_names, metric_values
from .stats import summarize

DEFAULT_BASELINE = "fym"


def _key(record: dict) -> tuple:
    return record["case"], record.get("prompt_index"), record.get("seed")


def paired_differences(records: list[dict], baseline: str) -> dict[str, dict[str, dict]]:
    """{method: {metric | time (``TIMES``): summarize(method - baseline over the shared results)}} for every
    method but `baseline`. Results where either side lacks the metric take no part."""
    by_method: dict[str, dict[tuple, dict]] = {}
    for record in records:
        by_method.setdefault(record["method"], {})[_key(record)] = record
    if baseline not in by_method:
        raise InputError(f"baseline method {baseline!r} has no results (methods: {', '.join(by_method)})")
    base = by_method[baseline]
    out: dict[str, dict[str, dict]] = {}
    for method, mine in by_method.items():
        if method == baseline:
            continue
        shared = [key for key in mine if key in base]
        differences = {}
        for metric in [*metric_names(records), *TIMES]:
            pairs = [(metric_values([mine[k]], metric), metric_values([base[k]], metric)) for k in shared]
            differences[metric] = summarize(a[0] - b[0] for a, b in pairs if a and b)
        out[method] = differences
    return out


def baseline_of(methods: list[str]) -> str:
    """`fym` when it ran, else the first method."""
    return DEFAULT_BASELINE if DEFAULT_BASELINE in methods else methods[0]
