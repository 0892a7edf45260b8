"""Per-tag tables of a benchmark run: issue 14's bar per method and kind (tags ``kind:<kind>``).

The report groups results by category; the robustness set's question is per kind of path, and whether each
result passes the issue's bar (``meets_bar``): a centred error of at most ``MAX_ERROR`` and at most
``MAX_STATIC_SHARE`` of the no-motion error, the target colour found in every frame, and no reference
colour. A result without those metrics (no ground truth) does not pass. ``python -m
follow_your_motion.bench.by_tag RUN_DIR [--prefix kind:] [--out FILE]`` prints (or writes) the tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..runs import atomic_write_text
from .aggregates import as_number, load_results, metric_values
from .stats import CI_LEVEL, summarize

MAX_ERROR, MAX_STATIC_SHARE = 0.12, 0.5
ALL = "all"


def meets_bar(metrics: dict) -> bool:
    """Whether a result's metrics pass the bar of the module docstring."""
    error, static = as_number(metrics.get("centred_error")), as_number(metrics.get("static_baseline_error"))
    found, frames = metrics.get("target_found_frames"), metrics.get("frames")
    return (error is not None and static is not None and error <= MAX_ERROR and error <= MAX_STATIC_SHARE * static
            and isinstance(found, int) and found == frames and metrics.get("colour_leak") is False)


def tag_value(record: dict, prefix: str) -> str | None:
    """The rest of the record's first tag that starts with `prefix`, or None."""
    return next((t[len(prefix):] for t in record.get("tags") or [] if t.startswith(prefix)), None)


def _count(records: list[dict], test) -> int:
    return sum(bool(test(r.get("metrics") or {})) for r in records)


def _row(records: list[dict]) -> dict:
    return {
        "results": len(records),
        "centred_error": summarize(metric_values(records, "centred_error")),
        "static_baseline_error": summarize(metric_values(records, "static_baseline_error")),
        "found_every_frame": _count(records, lambda m: m.get("frames") is not None
                                    and m.get("target_found_frames") == m.get("frames")),
        "no_colour_leak": _count(records, lambda m: m.get("colour_leak") is False),
        "meets_bar": _count(records, meets_bar),
    }


def by_tag(records: list[dict], prefix: str = "kind:") -> dict[str, dict[str, dict]]:
    """Per method (in order of appearance), per value of its `prefix` tag (likewise) and ``ALL`` (every result
    of the method, tagged or not): the row of ``_row``."""
    if not prefix:
        raise InputError("the tag prefix must not be empty (e.g. 'kind:')")
    out: dict[str, dict[str, dict]] = {}
    for method in dict.fromkeys(r["method"] for r in records):
        mine = [r for r in records if r["method"] == method]
        values = dict.fromkeys(v for r in mine if (v := tag_value(r, prefix)) is not None)
        out[method] = {v: _row([r for r in mine if tag_value(r, prefix) == v]) for v in values}
        out[method][ALL] = _row(mine)
    return out


def _mean_ci(stats: dict) -> str:
    if stats["mean"] is None:
        return "n/a"
    half = "" if stats["ci95_half"] is None else f" ± {stats['ci95_half']:.3f}"
    return f"{stats['mean']:.3f}{half}"


def _share(k: int, n: int) -> str:
    return f"{k}/{n} ({k / n:.0%})" if n else "n/a"


def markdown(table: dict[str, dict[str, dict]], prefix: str = "kind:") -> str:
    """The tables of ``by_tag``, one per method."""
    name = prefix.rstrip(":")
    lines = [f"Per method and {name}: centred error, mean ± half-width of its {CI_LEVEL:.0%} interval (Student t); "
             f"the bar: error <= {MAX_ERROR} and <= {MAX_STATIC_SHARE} x the no-motion error, the target found in "
             "every frame, no reference colour.", ""]
    for method, rows in table.items():
        lines += [f"### {method}", "",
                  f"| {name} | results | centred error | no-motion error | target in every frame | no reference colour "
                  "| meets the bar |", "|---|---:|---:|---:|---:|---:|---:|"]
        for value, row in rows.items():
            n = row["results"]
            static = row["static_baseline_error"]["mean"]
            lines.append(f"| {value} | {n} | {_mean_ci(row['centred_error'])} | "
                         f"{'n/a' if static is None else f'{static:.3f}'} | {_share(row['found_every_frame'], n)} | "
                         f"{_share(row['no_colour_leak'], n)} | {_share(row['meets_bar'], n)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m follow_your_motion.bench.by_tag",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("bench_dir", type=Path, help="a `fym bench run` output folder")
    parser.add_argument("--prefix", default="kind:", help="the tags to group by (default: kind:)")
    parser.add_argument("--out", type=Path, help="write the Markdown here instead of printing it")
    args = parser.parse_args(argv)
    try:
        text = markdown(by_tag(load_results(args.bench_dir)[0], args.prefix), args.prefix)
    except InputError as err:
        parser.error(str(err))
    if args.out is None:
        print(text)
    else:
        atomic_write_text(args.out, text + "\n")
    return text


if __name__ == "__main__":
    main()
