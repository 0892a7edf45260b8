"""`fym plan` of every variant whose configs ship, at its recipe size: the peak per stage with the default options
and with model.offload, and which cards (24 / 48 / 80 GB) each fits. The tables of docs/performance.md.

    python -m benchmarks.plan_tables            # writes benchmarks/results/plan_tables.{json,md}
    python -m benchmarks.plan_tables --only wan2.1-t2v-1.3b
    python -m benchmarks.plan_tables --only wan2.1-t2v-1.3b --guide ditflow   # a row with training-free guidance
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import command, machine
from follow_your_motion.backbones.variants import supported
from follow_your_motion.plan import GB, plan_transfer
from follow_your_motion.precedence import resolve_config

RESULTS = Path(__file__).parent / "results"
CARDS = (24, 48, 80)


def plan_variant(hub_id: str, guide: str = "none") -> dict:
    """The plan's JSON of one hub id with its recipe (and `guidance.method` `guide`), and how long tracing took."""
    began = time.perf_counter()
    cfg = resolve_config({"model": {"source": hub_id}, "guidance": {"method": guide}},
                         settings={"prompt": "a tiger walks through snow"})
    result = plan_transfer(cfg).to_json()
    return result | {"trace_seconds": round(time.perf_counter() - began, 1)}


def what_fits(plan: dict) -> dict[str, str]:
    """Per card: "default", "model.offload: true", the fewest blocks to swap ("model.blocks_to_swap: N", priced from
    the plan: `Plan.swap_to_fit`), or "no option here"."""
    out = {}
    swap = plan.get("blocks_to_swap_to_fit", {})  # rows traced before swapping was priced have none
    for gb in CARDS:
        if plan["peak_bytes"] <= gb * GB:
            out[str(gb)] = "default"
        elif plan["offload_peak_bytes"] <= gb * GB:
            out[str(gb)] = "model.offload: true"
        elif swap.get(str(gb)):
            out[str(gb)] = f"model.blocks_to_swap: {swap[str(gb)]}"
        else:
            out[str(gb)] = "no option here"
    return out


def markdown(plans: dict[str, dict]) -> str:
    lines = ["Peak accelerator memory per stage (GB = 1e9 bytes), `fym plan` at each recipe size: parameters on the "
             "device + the most the stage's tensors hold at once.", "",
             "| variant | size | encode | classify | spatial | motion | guide | generate | decode | peak "
             + "| with offload | " + " | ".join(f"{gb} GB" for gb in CARDS) + " |",
             "|---" * (11 + len(CARDS)) + "|"]
    for name, plan in plans.items():
        peaks: dict[str, str] = {}
        for stage in plan["stages"]:  # the largest over experts
            if stage["untraced"]:
                peaks[stage["stage"]] = "not traced"
            elif stage["peak_bytes"] / GB >= float(peaks.get(stage["stage"], "0").replace("not traced", "0")):
                peaks[stage["stage"]] = f"{stage['peak_bytes'] / GB:.1f}"
        frames, height, width = plan["size"]
        fits = what_fits(plan)
        mark = "" if plan["complete"] else " (traced stages)"
        cells = [peaks.get(s, "-") for s in ("encode", "classify", "spatial", "motion", "guide", "generate", "decode")]
        lines.append(f"| {name} | {frames}x{height}x{width} | " + " | ".join(cells)
                     + f" | {plan['peak_bytes'] / GB:.1f}{mark} | {plan['offload_peak_bytes'] / GB:.1f}{mark} | "
                     + " | ".join(fits[str(gb)] + mark for gb in CARDS) + " |")
    return "\n".join(lines) + "\n"


def write(out: Path, plans: dict[str, dict], argv: list[str] | None) -> None:
    """plan_tables.json (the plans, the machine, the commands that made them) and plan_tables.md (the table)."""
    path = out / "plan_tables.json"
    commands = json.loads(path.read_text()).get("commands", []) if path.exists() else []
    commands = list(dict.fromkeys([*commands, command("plan_tables", argv)]))
    record = {"commands": commands, "machine": machine(), "plans": plans}
    (out / "plan_tables.json").write_text(json.dumps(record, indent=1) + "\n")
    (out / "plan_tables.md").write_text("; ".join(f"`{c}`" for c in commands) + "\n\n" + markdown(plans))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="variant names (default: every one whose configs ship)")
    parser.add_argument("--guide", choices=("none", "ditflow", "flow"), default="none",
                        help="with this training-free guidance (rows named 'VARIANT + METHOD')")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    path = args.out / "plan_tables.json"
    plans = json.loads(path.read_text())["plans"] if path.exists() else {}
    for variant in supported():
        if variant.configs is None or (args.only and variant.name not in args.only):
            continue
        name = variant.name if args.guide == "none" else f"{variant.name} + {args.guide}"
        plans[name] = plan_variant(variant.hub_ids[0], args.guide)
        write(args.out, plans, argv)  # after each: a long run keeps what it has
        print(name, f"{plans[name]['peak_bytes'] / GB:.1f} GB", flush=True)
    return plans


if __name__ == "__main__":
    main()
