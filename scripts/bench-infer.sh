#!/usr/bin/env bash
# Inference benchmarks, single thread: ternary kernels vs f32 per shape (ratios), then
# end-to-end generation tokens/s of small and large models with each embedding storage.
# usage: scripts/bench-infer.sh [MODEL.flm ...]   (extra trained models to time as well)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p flashlm-infer --examples
cargo build --release -q -p flashlm-train --example random_flm
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "== kernels (µs per matrix-vector product, ratio = f32 time / kernel time)"
./target/release/examples/bench_kernels
echo "== generation (random weights; speed does not depend on training)"
for size in small large; do
    for emb in f32 int8; do
        ./target/release/examples/random_flm "$size" "$tmp/$size-$emb.flm" "$emb"
        printf '%-6s %-5s ' "$size" "$emb"
        ./target/release/examples/bench_generate "$tmp/$size-$emb.flm" 256
    done
done
for m in "$@"; do
    printf '%s: ' "$m"
    ./target/release/examples/bench_generate "$m" 256
done
