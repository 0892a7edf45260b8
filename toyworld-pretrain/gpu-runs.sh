#!/usr/bin/env bash
# Toy-model pretraining runs side by side on one lent GPU within one fixed time budget. Each run is a plain
# `fym toyworld pretrain`: 300 steps to measure its speed with the others running, then resumed to the step
# count that fits the time left, the last 30% of it a linear lr decay to zero (the same run as one call with
# those --steps and --decay-start). Sets of runs (SET):
#   size   g1, g2, g3: the model sizes, as run on the NVIDIA H200 on 2026-11-30 (docs/toyworld.md, "Pretraining
#          on a lent GPU"; g2 is the shipped model);
#   prior  p1, p2: the motion prior of issue 24 (random curved, cornered, stop-and-go and bouncing paths,
#          --free-paths 0.5): p1 continues from the shipped weights, p2 starts afresh with g2's recipe.
#
#   usage: toyworld-pretrain/gpu-runs.sh WORK_DIR RESULTS_DIR [SECONDS] [DEVICE] [SET]
# BATCH_SIZE (default 128) and FIRST_STEPS (default 300) are for dry runs on a CPU.
# RESULTS_DIR receives one NAME.tar.gz per run: its EMA model, log.jsonl and meta.json, and, with EVALUATE=1
# (the default for the prior set), eval/eval.json and prior/prior.json of `fym toyworld eval` and `fym toyworld
# prior` on the new model; KEEP_CHECKPOINT=1 adds the newest checkpoint (model, EMA, optimizer: about 60 MB),
# from which `fym toyworld pretrain --out DIR` with the same options and a larger --steps resumes the run.
# Set-up on the device machine: device-env.sh.
set -u
work=${1:?usage: gpu-runs.sh WORK_DIR RESULTS_DIR [SECONDS] [DEVICE] [SET]}
results=${2:?usage: gpu-runs.sh WORK_DIR RESULTS_DIR [SECONDS] [DEVICE] [SET]}
budget=${3:-520}
device=${4:-cuda}
set_name=${5:-size}
first=${FIRST_STEPS:-300}
began=$(date +%s)
mkdir -p "$work" "$results"
source "$(dirname "$0")/device-env.sh"
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__,
  torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" || exit 1

common=(--device "$device" --workers 4 --batch-size "${BATCH_SIZE:-128}" --anchor-spread 0.2 --checkpoint-every 500)
shipped="$(cd "$(dirname "$0")/.." && pwd)/src/follow_your_motion/toyworld/assets/toy-model"
case $set_name in
  size) declare -A options=(
    [g1]="--lr 1e-3 --layers 4 --heads 4"
    [g2]="--lr 6e-4 --layers 6 --heads 6"
    [g3]="--lr 4e-4 --layers 4 --heads 4"
  ); evaluate=${EVALUATE:-0} ;;
  prior) declare -A options=(
    [p1]="--lr 3e-4 --free-paths 0.5 --init $shipped"
    [p2]="--lr 6e-4 --free-paths 0.5 --layers 6 --heads 6"
  ); evaluate=${EVALUATE:-1} ;;
  *) echo "unknown SET $set_name: size or prior"; exit 2 ;;
esac
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
  if [ "$evaluate" = 1 ]; then
    OMP_NUM_THREADS=4 python3 -m follow_your_motion.cli toyworld eval --model "$work/$name/model" --out "$work/$name/eval" \
      >"$work/$name.eval.txt" 2>&1 &
    OMP_NUM_THREADS=4 python3 -m follow_your_motion.cli toyworld prior --model "$work/$name/model" --out "$work/$name/prior" \
      >"$work/$name.prior.txt" 2>&1 &
  fi
done
wait
for name in "${!options[@]}"; do
  parts=(model log.jsonl meta.json)
  [ "$evaluate" = 1 ] && parts+=(eval prior)
  [ "${KEEP_CHECKPOINT:-0}" = 1 ] && parts+=("checkpoints/pretrain/$(ls "$work/$name/checkpoints/pretrain" | grep '^step-' | sort | tail -1)")
  tar -czf "$results/$name.tar.gz" -C "$work/$name" "${parts[@]}"
done
echo "total $(( $(date +%s) - began ))s"
