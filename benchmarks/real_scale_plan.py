"""`fym plan`'s predicted peak beside each peak `real_scale` measures: which plan answers which measured stage, the
plans traced once on the CPU into a committed file, and the pairing that puts the two side by side.

The plans are precomputed (`python -m benchmarks.real_scale --plan-only` writes `results/real_scale_plan.json`)
rather than traced at the start of the GPU run: a real-size plan takes minutes of CPU per case here (the file
records each case's seconds), a run needs several cases per model (one per stage-3 setting it measures), and the
GPU run has 8 minutes in all. Nothing in a plan depends on the device, so the GPU need not spend its time on it.
`--plan-only` traces only the cases the file lacks: after a change to `plan.py` (or to what it traces), delete
the file and run it again (34 minutes for the 8 cases of the default run on this 2-core machine).

Each case is a `TransferConfig` with real_scale's own settings: the variant's published configs (`Wan2.1-T2V-1.3B`,
`-14B` through the registry), its frames and size, one LoRA rank for both stages, stage 1's queries, K, the
shrink factor, `keep_encoders`, bf16 weights, bf16 autocast and gradient checkpointing in both tuning stages,
batch size 1. A run whose settings have no case in the file shows "-" in the planned columns and says which command
computes it: a plan of other settings is never shown beside a measurement.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from .common import command, machine

PLAN_FILE = Path(__file__).parent / "results" / "real_scale_plan.json"
VARIANTS = {"wan2.1-1.3b": "wan2.1-t2v-1.3b", "wan2.1-14b": "wan2.1-t2v-14b"}  # real_scale's names -> the registry's
PROMPT = "a tiger walks through snow"
MEASURED = ("Measured: torch.cuda.max_memory_allocated over the stage (tensors only: no allocator cache, "
            "fragmentation or CUDA context); planned: the parameters on the device + the most the traced tensors "
            "held at once (fake tensors; attention through the CPU kernels' meta functions). GB = 1e9 bytes, "
            "MiB = 2^20")
TUNING = ("the same LoRA tensors: a head-masked LoRA is full-rank on every layer it has a head in, so real_scale's "
          "halves of each layer's heads and the plan's both-kinds-on-every-layer worst case add the same parameters "
          "and activations; the plan traces one step with AdamW's moments made, real_scale's peak is over its steps")
ENCODE = ("the plan's encode peak is the largest of its parts (the clip, the prompt, one frame, the shrunk clip), "
          "the clip being the largest; measured with the first model's transformer on the device, which the plan "
          "counts too")
GENERATE = ("the measured window holds the sampling steps and the VAE decode, so the planned peak is the larger of "
            "the plan's generate and decode")
DECODE = "its measured peak is the generation window's (the decode is timed apart, its memory is not)"


def motion_stage(keep: int | None, downsample: int = 1, encoders: bool = False) -> str:
    """real_scale's name of a stage-3 measurement: dense or sparse at K, on the shrunk clip, with the encoders back."""
    name = "stage 3 dense" if keep is None else f"stage 3 sparse K={keep}"
    if downsample > 1:
        name += f", 1/{downsample} size"
    return name + (", encoders on the device" if encoders else "")


@dataclass(frozen=True)
class Counterpart:
    """The plan that answers one measured stage: its case (settings) and the planned stages whose peak is compared."""

    case: dict
    stages: tuple[str, ...]
    note: str = ""


def case(run: dict, keep: int | None, downsample: int = 1, keep_encoders: bool | None = None) -> dict:
    """The settings of one plan, from real_scale's run config (`data["config"]`)."""
    return {"frames": run["frames"], "height": run["height"], "width": run["width"], "rank": run["rank"],
            "queries": run["queries"], "keep_frames": keep, "downsample": downsample,
            "keep_encoders": run["keep_encoders"] if keep_encoders is None else keep_encoders}


def counterparts(run: dict) -> dict[str, Counterpart]:
    """Measured stage name -> its planned counterpart; stages not named (building, parking, the encodings of the
    frames, the prompt and the shrunk clip, which the plan folds into one encode peak) have none."""
    keep = run["keep"]
    base = case(run, keep[0])
    pairs = {"encode clip": Counterpart(base, ("encode",), ENCODE), "stage 1": Counterpart(base, ("classify",)),
             "stage 2": Counterpart(base, ("spatial",), TUNING)}
    for k in [None, *keep]:
        pairs[motion_stage(k)] = Counterpart(case(run, k), ("motion",), TUNING)
    if run["downsample"] > 1:
        pairs[motion_stage(keep[0], run["downsample"])] = Counterpart(
            case(run, keep[0], run["downsample"]), ("motion",), TUNING)
    if not run["keep_encoders"]:
        pairs[motion_stage(keep[0], encoders=True)] = Counterpart(
            case(run, keep[0], keep_encoders=True), ("motion",), TUNING)
    pairs["generation step"] = Counterpart(base, ("generate", "decode"), GENERATE)
    pairs["vae decode"] = Counterpart(base, ("decode",), DECODE)
    return pairs


def find(cases: list[dict], model: str, settings: dict) -> dict | None:
    """The plan of `model` with exactly these settings among the file's cases."""
    return next((c["plan"] for c in cases if c["model"] == model and c["settings"] == settings), None)


def pair(measured: dict[str, dict], parts: dict[str, Counterpart], cases: list[dict], model: str) -> dict[str, dict]:
    """Per measured stage with a counterpart whose plan is in `cases`: the planned peak (bytes, the largest of its
    planned stages) and measured / planned, both in bytes."""
    out = {}
    for name, part in parts.items():
        plan = find(cases, model, part.case)
        if name not in measured or plan is None:
            continue
        planned = max(s["peak_bytes"] for s in plan["stages"] if s["stage"] in part.stages and not s["untraced"])
        out[name] = {"planned_bytes": planned, "measured_over_planned": measured[name]["peak_mib"] * 2**20 / planned,
                     "planned_stages": list(part.stages), "case": part.case, "note": part.note}
    return out


def planned_cells(paired: dict | None) -> list[str]:
    """The table's "planned GB" and "measured / planned" cells of one stage ("-" without a counterpart)."""
    if paired is None:
        return ["-", "-"]
    return [f"{paired['planned_bytes'] / 1e9:.2f}", f"{paired['measured_over_planned']:.3f}"]


def plan_notes(data: dict) -> list[str]:
    """Lines under real_scale's table: what each pairing of a measured and a planned peak compares, and the cases
    the run had no plan for."""
    paired = [(name, p["note"]) for model in data["models"].values() for name, p in model.get("planned", {}).items()]
    lines = [f"Planned: `fym plan`, from {data['plan']['file']} (benchmarks/real_scale_plan.py). {MEASURED}."] \
        if paired else []
    for note in dict.fromkeys(n for _, n in paired if n):
        lines.append(f"- {'; '.join(dict.fromkeys(name for name, n in paired if n == note))}: {note}.")
    for need in data.get("plan", {}).get("missing", []):
        lines.append(f"- no plan of {need['model']} with {need['settings']} in {data['plan']['file']}: "
                     "`python -m benchmarks.real_scale --plan-only` with this run's options traces it.")
    return lines


def missing(run: dict, models: list[str], cases: list[dict]) -> list[dict]:
    """The cases a run needs (one per distinct settings, per model with published configs) that `cases` lacks."""
    needed = {json.dumps(p.case, sort_keys=True) for p in counterparts(run).values()}
    return [{"model": m, "settings": json.loads(s)} for m in models if m in VARIANTS for s in sorted(needed)
            if find(cases, m, json.loads(s)) is None]


def load(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cases"] if path.exists() else []


def transfer_config(model: str, settings: dict):
    """The `TransferConfig` of one case, resolved as `fym plan` resolves its flags."""
    from follow_your_motion.backbones.variants import BY_NAME
    from follow_your_motion.precedence import resolve_config

    tuning = {"rank": settings["rank"], "grad_checkpointing": True, "mixed_precision": "bf16", "batch_size": 1}
    return resolve_config(settings={
        "prompt": PROMPT,
        "model": {"source": BY_NAME[VARIANTS[model]].hub_ids[0], "dtype": "bfloat16",
                  "keep_encoders": settings["keep_encoders"]},
        "video": {"frames": settings["frames"], "height": settings["height"], "width": settings["width"]},
        "heads": {"num_queries": settings["queries"]},
        "spatial": tuning,
        "motion": tuning | {"keep_frames": settings["keep_frames"], "downsample": settings["downsample"]}})


def write_plans(run: dict, models: list[str], path: Path, argv: list[str] | None) -> list[dict]:
    """Trace every case the run needs that `path` lacks, adding each to the file as it is done (a run cut short
    keeps what it traced)."""
    from follow_your_motion.plan import plan_transfer

    cases = load(path)
    record = json.loads(path.read_text()) if path.exists() else {"commands": []}
    for need in missing(run, models, cases):
        began = time.perf_counter()
        plan = plan_transfer(transfer_config(need["model"], need["settings"])).to_json()
        cases.append(need | {"trace_seconds": round(time.perf_counter() - began, 1), "plan": plan})
        commands = list(dict.fromkeys([*record["commands"], command("real_scale", argv)]))
        record = {"commands": commands, "machine": machine(), "cases": cases}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"[real_scale] plan of {need['model']} {need['settings']}: {cases[-1]['trace_seconds']} s", flush=True)
    return cases
