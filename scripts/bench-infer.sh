#!/usr/bin/env bash
# Inference benchmarks, single thread: ternary kernels vs f32 per shape (ratios), the output
# head per embedding storage, then
# end-to-end generation tokens/s of small and large models with each embedding storage, and,
# when PyTorch is installed, the original's style of generation (whole window recomputed per
# token) on the same small weights, with the ratio.
# usage: scripts/bench-infer.sh [MODEL.flm ...]   (extra trained models to time as well)
# FLASHLM_ISA=avx2 runs what an AVX2-only CPU would (kernels, heads, element-wise code) on a
# machine that also has AVX-512.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== CPU"
if command -v lscpu > /dev/null; then
    lscpu | grep -E '^(Model name|CPU family|Model|Flags):'
else
    grep -m1 'model name' /proc/cpuinfo || true
fi
echo "FLASHLM_ISA=${FLASHLM_ISA:-(unset: no cap)}"
cargo build --release -q -p flashlm-infer --examples
cargo build --release -q -p flashlm-train --example random_flm
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "== kernels (µs per matrix-vector product; ratio = best f32 time / kernel time)"
./target/release/examples/bench_kernels
if [ -z "${FLASHLM_ISA:-}" ] && grep -qw avx512bw /proc/cpuinfo 2> /dev/null; then
    echo "== kernels as an AVX2-only CPU runs them (FLASHLM_ISA=avx2, this core)"
    FLASHLM_ISA=avx2 ./target/release/examples/bench_kernels
fi
echo "== output head alone, small shape, weights hot in cache (µs per token)"
./target/release/examples/bench_head 10000 192
echo "== generation (random weights; speed does not depend on training)"
for size in small large; do
    for emb in f32 int8 int4; do
        ./target/release/examples/random_flm "$size" "$tmp/$size-$emb.flm" "$emb" > /dev/null
        printf '%-6s %-5s\n' "$size" "$emb"
        ./target/release/examples/bench_generate "$tmp/$size-$emb.flm" 256 | tee "$tmp/$size-$emb.txt"
    done
done
for m in "$@"; do
    printf '%s:\n' "$m"
    ./target/release/examples/bench_generate "$m" 256
done
if python3 -c "import torch" 2> /dev/null; then
    echo "== original-style generation in PyTorch (1 thread), small, same f32 weights"
    out=$(python3 scripts/reference/generate_original.py "$tmp/small-f32.flm" 256 1)
    echo "$out"
    py=$(echo "$out" | grep -o '[0-9]* tok/s' | cut -d' ' -f1)
    ours=$(grep -o '[0-9]* tok/s' "$tmp/small-f32.txt" | tail -1 | cut -d' ' -f1)
    ours8=$(grep -o '[0-9]* tok/s' "$tmp/small-int8.txt" | tail -1 | cut -d' ' -f1)
    ours4=$(grep -o '[0-9]* tok/s' "$tmp/small-int4.txt" | tail -1 | cut -d' ' -f1)
    echo "ratio flashlm-infer/pytorch-original (small, f32 head): $(echo "scale=1; $ours / $py" | bc)x"
    echo "ratio flashlm-infer/pytorch-original (small, int8 head): $(echo "scale=1; $ours8 / $py" | bc)x"
    echo "ratio flashlm-infer/pytorch-original (small, int4 head): $(echo "scale=1; $ours4 / $py" | bc)x"
else
    echo "(PyTorch not installed: skipping the original-style generation timing)"
fi
