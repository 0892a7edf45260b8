#!/usr/bin/env bash
# Issue 24's gates and tables for a candidate toy model, on this machine's CPUs, in the order that decides whether it
# ships: `fym toyworld eval` and `prior` side by side (gates), the robustness set, the ablation and leakage suites,
# then the one-clip gate on every held-out program (about 17 minutes each on one thread). The robust, ablation and
# leakage steps then run fym again with the grid-independent head rule (`heads: {rule: relative}`; into
# OUT_DIR/<run>-relative) and pair it with the paper's rule on the same cases (`fym bench compare`, into
# OUT_DIR/<run>-vs-relative). Every step resumes: a finished one is skipped (its result file exists) and a benchmark
# run continues its own folder, so running the script again after an interruption goes on where it stopped.
#
#   usage: toyworld-pretrain/measure-model.sh MODEL_DIR OUT_DIR [STEPS...]
#   STEPS: any of gates eval prior robust ablation leakage sanity (default: gates robust ablation leakage sanity)
# Python: $PYTHON, else the checkout's .venv, else python3. Benchmarks run as two processes of one thread
# (torchrun); each step's console goes to OUT_DIR/<step>.log, its start and end to OUT_DIR/progress.txt. Exit status
# 1 (and "FAILED: ..." in progress.txt) if any step failed; the others still ran. An OUT_DIR serves one model only
# (OUT_DIR/model.txt): its results are resumed, never mixed with another model's.
set -u
unset CDPATH
usage="usage: measure-model.sh MODEL_DIR OUT_DIR [gates|eval|prior|robust|ablation|leakage|sanity ...]"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
model=$(cd "$1" 2>/dev/null && pwd) || { echo "no model folder $1 ($usage)" >&2; exit 2; }
[ -f "$model/config.json" ] || { echo "$model is not a toy model folder (no config.json)" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$2" && out=$(cd "$2" && pwd) || exit 2
if [ -f "$out/model.txt" ] && [ "$(cat "$out/model.txt")" != "$model" ]; then
  echo "$out holds the results of $(cat "$out/model.txt"), not of $model: give another OUT_DIR" >&2; exit 2
fi
echo "$model" >"$out/model.txt"
shift 2
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(gates robust ablation leakage sanity)
for step in "${steps[@]}"; do
  case $step in
    gates | eval | prior | robust | ablation | leakage | sanity) ;;
    *) echo "unknown step $step ($usage)" >&2; exit 2 ;;
  esac
done
py=${PYTHON:-}
[ -n "$py" ] || { [ -x "$root/.venv/bin/python" ] && py="$root/.venv/bin/python"; } || py=python3
cd "$root" || exit 2
export OMP_NUM_THREADS=1 PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
"$py" -c "import follow_your_motion, torch" 2>/dev/null || { echo "$py cannot import follow_your_motion and torch" >&2; exit 2; }
fym=("$py" -m follow_your_motion.cli)
bench=("$py" -m torch.distributed.run --standalone --nproc_per_node 2 -m follow_your_motion.cli bench run)
ablation_methods=fym,fym-no-heads,fym-no-rope,fym-dense,two-stage-lora,full-lora,base
printf 'heads: {rule: relative}\n' >"$out/relative.yaml"

run_bench() {  # NAME SUITE METHODS [extra args]: a two-process benchmark run, then its report
  local name=$1 suite=$2 methods=$3
  shift 3
  "${bench[@]}" "$suite" --methods "$methods" -m "$model" --out "$out/$name" "$@" >>"$out/$name.log" 2>&1 &&
    "${fym[@]}" bench report "$out/$name" >>"$out/$name.log" 2>&1
}

run_relative() {  # NAME SUITE: fym with the relative head rule, then paired with NAME's fym in NAME-vs-relative
  run_bench "$1-relative" "$2" fym -c "$out/relative.yaml" &&
    "${fym[@]}" bench compare "$out/$1=paper" "$out/$1-relative=relative" --out "$out/$1-vs-relative" \
      >>"$out/$1-relative.log" 2>&1
}

run_step() {  # STEP: one step; its exit status
  case $1 in
    eval) [ -f "$out/eval/eval.json" ] || "${fym[@]}" toyworld eval -m "$model" --out "$out/eval" >>"$out/eval.log" 2>&1 ;;
    prior) [ -f "$out/prior/prior.json" ] || "${fym[@]}" toyworld prior -m "$model" --out "$out/prior" >>"$out/prior.log" 2>&1 ;;
    gates)  # eval and prior side by side, one core each; an interrupt stops both
      local status=0 pids=()
      [ -f "$out/eval/eval.json" ] ||
        { "${fym[@]}" toyworld eval -m "$model" --out "$out/eval" >>"$out/eval.log" 2>&1 & pids+=($!); }
      [ -f "$out/prior/prior.json" ] ||
        { "${fym[@]}" toyworld prior -m "$model" --out "$out/prior" >>"$out/prior.log" 2>&1 & pids+=($!); }
      trap 'kill "${pids[@]}" 2>/dev/null; exit 130' INT TERM
      for pid in "${pids[@]}"; do wait "$pid" || status=1; done
      trap - INT TERM
      return $status ;;
    robust)
      { [ -f "$out/robust-set/robustness.yaml" ] ||
          "$py" -m follow_your_motion.bench.robustness_suite "$out/robust-set" --count 24 --seed 2026 >>"$out/robust.log" 2>&1; } &&
        run_bench robust "$out/robust-set/robustness.yaml" fym,fym-no-heads,base &&
        "$py" -m follow_your_motion.bench.by_tag "$out/robust" --out "$out/robust/by_kind.md" >>"$out/robust.log" 2>&1 &&
        run_relative robust "$out/robust-set/robustness.yaml" &&
        "$py" -m follow_your_motion.bench.by_tag "$out/robust-relative" --out "$out/robust-relative/by_kind.md" \
          >>"$out/robust.log" 2>&1 ;;
    ablation) run_bench ablation12 benchmarks/suites/toy_ablation12.yaml "$ablation_methods" &&
      run_relative ablation12 benchmarks/suites/toy_ablation12.yaml ;;
    leakage) run_bench leakage benchmarks/suites/toy_leakage.yaml "$ablation_methods" &&
      run_relative leakage benchmarks/suites/toy_leakage.yaml ;;
    sanity)
      local status=0 program
      mkdir -p "$out/sanity"
      for program in $("$py" -c 'from follow_your_motion.toyworld.render import HELDOUT_PROGRAMS as p; print(*p)'); do
        [ -s "$out/sanity/$program.json" ] && continue
        if "${fym[@]}" toyworld sanity "$program" -m "$model" --steps 500 --device cpu >"$out/sanity/$program.part" \
          2>>"$out/sanity.log"; then mv "$out/sanity/$program.part" "$out/sanity/$program.json"; else status=1; fi
      done
      return $status ;;
  esac
}

failed=()
for step in "${steps[@]}"; do
  echo "$(date -u +%H:%M:%S) $step" >>"$out/progress.txt"
  if run_step "$step"; then result=ok; else result=FAILED; failed+=("$step"); fi
  echo "$(date -u +%H:%M:%S) $step $result" >>"$out/progress.txt"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "$(date -u +%H:%M:%S) FAILED: ${failed[*]} (see their .log files in $out)" | tee -a "$out/progress.txt" >&2
  exit 1
fi
echo "$(date -u +%H:%M:%S) done" >>"$out/progress.txt"
