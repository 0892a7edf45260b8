#!/usr/bin/env bash
# The motion-prior pretraining run on a CPU (issue 24), continuing from the shipped weights: straight lines and
# camera moves as before plus random curved, cornered, stop-and-go and bouncing paths (--free-paths 0.5),
# one torch thread at the lowest priority, a checkpoint every 25 steps. Run it again with the same OUT_DIR to
# resume from the newest checkpoint, bit for bit (the settings below must not change within a run).
#
#   usage: toyworld-pretrain/cpu-prior-run.sh [OUT_DIR]      (default /work/toy-run; outside git)
# Progress: OUT_DIR/log.jsonl (one line a step); the EMA model: OUT_DIR/model; console: OUT_DIR.console.txt.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-/work/toy-run}
mkdir -p "$(dirname "$out")"
cd "$root" || exit 1
OMP_NUM_THREADS=1 PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" exec nice -n 19 "${PYTHON:-python3}" \
  -m follow_your_motion.cli toyworld pretrain --out "$out" --init src/follow_your_motion/toyworld/assets/toy-model \
  --free-paths 0.5 --anchor-spread 0.2 --steps 3500 --decay-start 2500 --lr 3e-4 --batch-size 16 \
  --checkpoint-every 25 --threads 1 >>"$out.console.txt" 2>&1
