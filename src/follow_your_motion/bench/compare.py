"""Two or more benchmark runs of one suite in one report, paired on the same cases.

A setting's effect (a head rule, another model, more steps) is measured by running the suite twice, once with
it (``fym bench run ... -c setting.yaml --out runs/b``) and once without. Compared unpaired, the case-to-case
spread hides it; paired on the same (case, prompt, seed) it shows. ``compare_runs`` writes one bench folder
holding every run's results, a method that ran in more than one run named ``<method>@<label>`` in each, and
its report (``report.write_report``) with the paired differences from one baseline, so `fym bench report`
reads it again like any run. ``compare.json`` records what each label was: its folder, model and settings.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from ..errors import InputError
from ..runs import atomic_write_text
from .aggregates import load_results
from .paired import DEFAULT_BASELINE
from .report import write_report


def parse_run(spec: str) -> tuple[Path, str]:
    """``RUN`` or ``RUN=LABEL`` -> (folder, label); the label defaults to the folder's name.

    A spec that names an existing folder is that folder, and a label follows the last ``=``: sweep folders
    are often named ``lr=1e-4``.
    """
    folder, label = (spec, "") if Path(spec).is_dir() or "=" not in spec else spec.rsplit("=", 1)
    path = Path(folder)
    return path, (label or path.resolve().name)


def _suite(run: Path) -> dict:
    if not run.is_dir():
        raise InputError(f"{run}: not a benchmark directory (does not exist or is not a directory)")
    try:
        return json.loads((run / "suite.json").read_text())
    except FileNotFoundError:
        raise InputError(f"{run}: no suite.json (not the --out of `fym bench run`)") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{run}/suite.json: not valid JSON ({err.msg})") from None


def _suite_name(suite: dict) -> str | None:
    manifest = suite.get("manifest")
    return manifest.get("name") if isinstance(manifest, dict) else None


def _check_out(out: Path) -> None:
    """Refuse an ``out`` holding results that compare did not write: they would be overwritten."""
    if (out / "suite.json").exists():
        raise InputError(f"{out} is a benchmark run (it has suite.json): give another --out")
    if ((out / "results.jsonl").exists() or (out / "results").is_dir()) and not (out / "compare.json").exists():
        raise InputError(f"{out} holds results not made by `fym bench compare` (no compare.json): give another --out")


def _rebased(paths: dict, run: Path, out: Path) -> dict:
    """A record's file paths, relative ones made relative to ``out`` so the page finds them."""
    return {key: value if not isinstance(value, str) or Path(value).is_absolute()
            else os.path.relpath(run / value, out) for key, value in paths.items()}


def compare_runs(runs: list[tuple[Path, str]], out: Path, baseline: str | None = None) -> dict[str, Path]:
    """Merge ``runs`` ((folder, label) pairs, one suite) into ``out`` and report them (``write_report``'s files).

    The baseline of the paired differences is ``baseline`` when given (a method name after renaming), else
    the first run's fym (``fym`` or ``fym@<first label>``), else the first run's first method. Everything is
    checked before anything is written: at least two distinct runs, distinct labels, one suite, ``out`` neither
    a run nor a folder of results that compare did not write (an earlier compare there is replaced).
    """
    if len(runs) < 2:
        raise InputError("give at least two benchmark runs to compare")
    folders = [str(run.resolve()) for run, _ in runs]
    if len(set(folders)) < len(folders):
        raise InputError(f"a run is given twice ({', '.join(folders)}): compare different runs")
    labels = [label for _, label in runs]
    if len(set(labels)) < len(labels):
        raise InputError(f"two runs have the same label ({', '.join(labels)}): name them RUN=LABEL")
    if any(not label or any(c in label for c in "@|\n\r") for label in labels):
        raise InputError(f"labels must be non-empty, without '@', '|' or line breaks (got {', '.join(labels)})")
    out = Path(out)
    _check_out(out)
    suites = {label: _suite(run) for run, label in runs}
    names = {label: _suite_name(suite) for label, suite in suites.items()}
    if len(set(names.values())) > 1:
        raise InputError("the runs are of different suites (" + ", ".join(f"{k}: {v}" for k, v in names.items())
                         + "): compare runs of one suite")
    loaded = {label: load_results(run)[0] for run, label in runs}
    in_runs = Counter(method for records in loaded.values() for method in {r["method"] for r in records})
    shared = {method for method, count in in_runs.items() if count > 1}

    def renamed(method: str, label: str) -> str:
        return f"{method}@{label}" if method in shared else method

    def merged_record(record: dict, run: Path, label: str) -> dict:
        entry = {**record, "method": renamed(record["method"], label), "run": label,
                 "paths": _rebased(record.get("paths") or {}, run, out)}
        if isinstance(record.get("tuning_from"), str):  # a method of the same run: named as it is here
            entry["tuning_from"] = renamed(record["tuning_from"], label)
        return entry

    merged = [merged_record(record, run, label) for run, label in runs for record in loaded[label]]
    methods = list(dict.fromkeys(r["method"] for r in merged))
    if baseline is None:
        first = [r["method"] for r in merged if r["run"] == labels[0]]
        fym = renamed(DEFAULT_BASELINE, labels[0])
        baseline = fym if fym in first else first[0]
    elif baseline not in methods:
        raise InputError(f"baseline {baseline!r} is not among the compared methods ({', '.join(methods)})")
    out.mkdir(parents=True, exist_ok=True)
    sources = {label: {"folder": folder, "suite": names[label], "model": suites[label].get("model"),
                       "overrides": suites[label].get("overrides"),
                       "methods": sorted({r["method"] for r in loaded[label]})}
               for folder, label in zip(folders, labels, strict=True)}
    atomic_write_text(out / "compare.json", json.dumps({"baseline": baseline, "runs": sources}, indent=1) + "\n")
    atomic_write_text(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in merged))
    return write_report(out, baseline)
