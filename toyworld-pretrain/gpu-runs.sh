#!/usr/bin/env bash
# Three toy-model pretraining runs side by side on one lent GPU within one fixed time budget, as run on the
# NVIDIA H200 on 2026-11-30 (docs/toyworld.md, "Pretraining on a lent GPU"). Each run is a plain
# `fym toyworld pretrain`: 300 steps to measure its speed with the others running, then resumed to the step
# count that fits the time left, the last 30% of it a linear lr decay to zero (the same run as one call with
# those --steps and --decay-start).
#
#   usage: toyworld-pretrain/gpu-runs.sh WORK_DIR RESULTS_DIR [SECONDS] [DEVICE]
# RESULTS_DIR receives one NAME.tar.gz per run: its EMA model, log.jsonl and meta.json.
# Set-up on the device machine: device-env.sh.
set -u
work=${1:?usage: gpu-runs.sh WORK_DIR RESULTS_DIR [SECONDS] [DEVICE]}
results=${2:?usage: gpu-runs.sh WORK_DIR RESULTS_DIR [SECONDS] [DEVICE]}
budget=${3:-520}
device=${4:-cuda}
first=${FIRST_STEPS:-300}
began=$(date +%s)
mkdir -p "$work" "$results"
source "$(dirname "$0")/device-env.sh"
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__,
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" || exit 1

common=(--device "$device" --workers 4 --batch-size 128 --anchor-spread 0.2 --checkpoint-every 500)
declare -A options=(
  [g1]="--lr 1e-3 --layers 4 --heads 4"
  [g2]="--lr 6e-4 --layers 6 --heads 6"
  [g3]="--lr 4e-4 --layers 4 --heads 4"
)
for name in "${!options[@]}"; do
  # shellcheck disable=SC2086
  python3 -m follow_your_motion.cli toyworld pretrain --out "$work/$name" --steps $first "${common[@]}" \
    ${options[$name]} >"$work/$name.first.txt" 2>&1 &
done
wait
for name in "${!options[@]}"; do
  seconds=$(python3 -c "import json, sys; print([json.loads(l) for l in open(sys.argv[1])][-1]['seconds'])" \
    "$work/$name/log.jsonl") || { tail -c 2000 "$work/$name.first.txt"; exit 1; }
  left=$((budget - ($(date +%s) - began)))
  [ "$left" -gt 60 ] || { echo "$name: ${left}s left, stopped at $first steps"; continue; }
  steps=$(python3 -c "print($first + int(0.9 * $left * $first / $seconds) // 100 * 100)")
  echo "$name: $first steps in ${seconds}s; ${left}s left -> --steps $steps --decay-start $((steps * 7 / 10))"
  # shellcheck disable=SC2086
  timeout $((left + 20)) python3 -m follow_your_motion.cli toyworld pretrain --out "$work/$name" --steps "$steps" \
    --decay-start $((steps * 7 / 10)) "${common[@]}" ${options[$name]} >"$work/$name.txt" 2>&1 &
done
wait
for name in "${!options[@]}"; do
  [ -f "$work/$name.txt" ] && echo "$name: $(tail -c 200 "$work/$name.txt" | tr '\r' '\n' | tail -2)"
  tar -czf "$results/$name.tar.gz" -C "$work/$name" model log.jsonl meta.json
done
echo "total $(( $(date +%s) - began ))s"
