#!/usr/bin/env bash
# Training throughput: flashlm-train against the original PyTorch FlashLM v4
# (scripts/reference/, PyTorch installed with pip on demand), same config, batch, sequence
# length, threads, initial weights and token batches; runs alternate (ROUNDS times each).
#
# usage: scripts/bench-train.sh [small|large] [BATCH=8] [STEPS=60] [THREADS=nproc] [ROUNDS=2]
# env:   FLASHLM_DATA_DIR (default ../shared/data)
#        FLASHLM_ISA=avx2 (or portable): both sides run what an AVX2-only (SIMD-less) CPU runs:
#        flashlm-train caps its dispatch, GEMM kernels included; PyTorch gets the matching
#        ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS and ONEDNN_MAX_CPU_ISA caps.
#        FLASHLM_BLAS=off: flashlm-train's products stay on the gemm crate even where OpenBLAS
#        (libopenblas0) is installed and would be used (AVX2 level).
#
# Prints both tokens/s (steps after the first 3, best round), peak RSS, whether the first 50
# losses agree within 1e-3 relative, and ends with `ratio <flashlm tok/s / pytorch tok/s>`.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-small}
batch=${2:-8}
steps=${3:-60}
threads=${4:-$(nproc)}
rounds=${5:-2}
data=${FLASHLM_DATA_DIR:-../shared/data}
echo "== CPU"
if command -v lscpu > /dev/null; then
    lscpu | grep -E '^(Model name|CPU family|Model|Flags):'
else
    grep -m1 'model name' /proc/cpuinfo || true
fi
case "${FLASHLM_ISA:-}" in
    # OpenBLAS (used by flashlm-train at AVX2 level when installed) runs its Haswell kernels.
    avx2) export ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell} ;;
    portable | none | scalar) export ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41 ;;
    "" | avx512 | avx-512 | native) ;;
    *) echo "FLASHLM_ISA=$FLASHLM_ISA: expected avx2, portable or avx512" >&2; exit 2 ;;
esac
echo "FLASHLM_ISA=${FLASHLM_ISA:-(unset: no cap)}${ATEN_CPU_CAPABILITY:+; PyTorch capped: ATEN_CPU_CAPABILITY=$ATEN_CPU_CAPABILITY MKL_ENABLE_INSTRUCTIONS=$MKL_ENABLE_INSTRUCTIONS ONEDNN_MAX_CPU_ISA=$ONEDNN_MAX_CPU_ISA}"
# PyTorch for the reference, installed (if missing) before anything is built or timed.
scripts/reference/ensure-torch.sh
cargo build --release -q -p flashlm-train --bin flashlm-train --example train_setup
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
./target/release/examples/train_setup "$work/setup" "$size" "$batch" "$steps" 42 "$data" > /dev/null

best_ours=0
best_ref=0
for r in $(seq "$rounds"); do
    rm -rf "$work/ours"
    /usr/bin/time -f "%M" -o "$work/ours.rss" ./target/release/flashlm-train "--$size" --batch "$batch" \
        --grad-accum 1 --lr 4e-3 --warmup 500 --epochs 10 --seed 42 --max-steps "$steps" --threads "$threads" \
        --data-dir "$data" --save-dir "$work/ours" --eval-every off --eval-batches 1 \
        --sample-every off --save-every off --final-bpc-stories 0 --quiet > "$work/ours.log" 2>&1 ||
        { cat "$work/ours.log"; exit 1; }
    ours=$(python3 - "$work/ours/metrics.jsonl" <<'PY'
import json, sys
rows = [r for r in map(json.loads, open(sys.argv[1])) if r["kind"] == "train"]
a, b = rows[2], rows[-1]
print(round((b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"])))
PY
)
    python3 scripts/reference/train_reference.py "$work/setup" "$threads" "$work/ref.json" > "$work/ref.log"
    ref=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['tok_s'])" "$work/ref.json")
    echo "round $r: flashlm-train $ours tok/s, pytorch $ref tok/s"
    [ "$ours" -gt "$best_ours" ] && best_ours=$ours
    [ "$ref" -gt "$best_ref" ] && best_ref=$ref
done
rss_ours=$(cat "$work/ours.rss")
rss_ref=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['peak_rss_kb'])" "$work/ref.json")
python3 - "$work/ours/metrics.jsonl" "$work/ref.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ours = [r["loss"] for r in rows if r["kind"] == "train"]
ref = json.load(open(sys.argv[2]))["losses"]
n = min(50, len(ours), len(ref))
worst = max(abs(a - b) / abs(b) for a, b in zip(ours[:n], ref[:n]))
print(f"first {n} losses: max relative difference {worst:.2e} ({'ok' if worst <= 1e-3 else 'MISMATCH'})")
print(f"  step 1: flashlm {ours[0]:.5f} pytorch {ref[0]:.5f}; step {n}: flashlm {ours[n-1]:.5f} pytorch {ref[n-1]:.5f}")
sys.exit(0 if worst <= 1e-3 else 1)
PY
echo "config $size batch $batch seq $(python3 -c "import json;print(json.load(open('$work/setup/setup.json'))['config']['seq_len'])") threads $threads steps $steps"
echo "flashlm-train: $best_ours tok/s, peak RSS $((rss_ours / 1024)) MiB ($(grep -m1 -o 'Engine: .*' "$work/ours.log" || echo 'Engine: ?'))"
echo "pytorch:       $best_ref tok/s, peak RSS $((rss_ref / 1024)) MiB ($(python3 -c "import json,sys; print(json.load(open(sys.argv[1])).get('torch', '?'))" "$work/ref.json"))"
echo "ratio $(python3 -c "print(f'{$best_ours / $best_ref:.2f}')")"
