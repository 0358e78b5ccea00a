#!/usr/bin/env bash
# How training and inference scale with cores (run it on a many-core machine).
#
# usage: scripts/bench-scaling.sh MODEL.flm [THREADS...]     (default threads: 1 2 4 8 16, capped at nproc)
# env:   BIN   folder holding flashlm-train, flashlm-infer and bench_generate
#              (default: target/release, built first when missing)
#        FLASHLM_DATA_DIR  story files (default ../shared/data)
#        STEPS training steps per run (default 30), STORIES eval stories (default 200)
#
# For each thread count: flashlm-train --small --batch 8 for STEPS steps (tokens/s from its
# summary line, which includes start-up and one short evaluation), and
# `flashlm-infer eval --protocol original` on STORIES validation stories. Then single-thread
# generation speed. Ends with one line per measurement: `scaling <what> threads=<n> tok_s=<x>`.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bench-scaling.sh MODEL.flm [THREADS...]}
shift
data=${FLASHLM_DATA_DIR:-../shared/data}
steps=${STEPS:-30}
stories=${STORIES:-200}
bin=${BIN:-target/release}
if [ ! -x "$bin/flashlm-train" ] || [ ! -x "$bin/flashlm-infer" ] || [ ! -x "$bin/bench_generate" ]; then
    cargo build --release -q -p flashlm-train -p flashlm-infer --bins
    cargo build --release -q -p flashlm-infer --example bench_generate
    bin=target/release
    cp target/release/examples/bench_generate target/release/bench_generate
fi
cores=$(nproc)
threads=("$@")
[ ${#threads[@]} -eq 0 ] && threads=(1 2 4 8 16)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lines=()
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $cores cores"
for n in "${threads[@]}"; do
    [ "$n" -gt "$cores" ] && continue
    "$bin/flashlm-train" --small --batch 8 --max-steps "$steps" --threads "$n" --data-dir "$data" \
        --save-dir "$work/t$n" --eval-batches 2 --final-bpc-stories 0 --sample-every off \
        --save-every off --quiet > "$work/train$n.log" 2>&1 || { cat "$work/train$n.log"; exit 1; }
    t=$(grep -o 'tok_s=[0-9.]*' "$work/train$n.log" | tail -1 | cut -d= -f2)
    lines+=("scaling train-small-batch8 threads=$n tok_s=$t")
    echo "${lines[-1]}"
    e=$("$bin/flashlm-infer" eval --model "$model" --data "$data"/*valid* --stories "$stories" \
        --protocol original --threads "$n" 2>&1 | grep -o '[0-9]* tok/s' | tail -1 | cut -d' ' -f1)
    lines+=("scaling eval threads=$n tok_s=$e")
    echo "${lines[-1]}"
done
out=$("$bin/bench_generate" "$model" 512)
echo "$out"
g=$(echo "$out" | grep -o '[0-9]* tok/s' | tail -1 | cut -d' ' -f1)
lines+=("scaling generate threads=1 tok_s=$g")
printf '%s\n' "${lines[@]}"
