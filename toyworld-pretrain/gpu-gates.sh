#!/usr/bin/env bash
# The one-clip sanity gate (`fym toyworld sanity PROGRAM --steps 500`) on every held-out program at once on
# one lent GPU, as run on the NVIDIA H200 on 2026-11-30 (docs/toyworld.md, "The gate on the shipped weights").
#
#   usage: toyworld-pretrain/gpu-gates.sh RESULTS_DIR [SECONDS] [DEVICE]
# Writes RESULTS_DIR/gates.jsonl (one gate result per line) and each gate's last progress line in gates.log.
# Set-up on the device machine: device-env.sh.
set -u
results=${1:?usage: gpu-gates.sh RESULTS_DIR [SECONDS] [DEVICE]}
budget=${2:-170}
device=${3:-cuda}
programs=(zigzag orbit-cw orbit-ccw bounce figure-eight spiral grow-shrink)
mkdir -p "$results" /tmp/gates
: >"$results/gates.jsonl"
: >"$results/gates.log"
source "$(dirname "$0")/device-env.sh"
for program in "${programs[@]}"; do
  timeout "$budget" python3 -m follow_your_motion.cli toyworld sanity "$program" --steps 500 --device "$device" \
    >"/tmp/gates/$program.json" 2>"/tmp/gates/$program.err" &
done
wait
for program in "${programs[@]}"; do
  python3 -c "import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))" "/tmp/gates/$program.json" \
    >>"$results/gates.jsonl" || tail -c 1500 "/tmp/gates/$program.err"
  echo "$program: $(tail -c 300 "/tmp/gates/$program.err" | tr '\r' '\n' | tail -1)" >>"$results/gates.log"
done
cat "$results/gates.jsonl" | cut -c 1-400
