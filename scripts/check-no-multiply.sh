#!/usr/bin/env bash
# Fails if a multiply instruction of any kind (float or integer multiply, multiply-add,
# dot product) appears in the ternary kernels of the built flashlm-infer binary: every
# `sums_*` function (the products) and every `tables_*` function (the int8 kernels' look-up
# table builders).
# usage: scripts/check-no-multiply.sh [BINARY]   (default: builds target/release/flashlm-infer)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
    cargo build --release -q -p flashlm-infer --bin flashlm-infer
    bin=target/release/flashlm-infer
fi
asm=$(objdump -d --no-show-raw-insn "$bin" | awk '
    /^[0-9a-f]+ <.*kernels.*(sums|tables)_[a-z0-9_]*.*>:$/ { p = 1; print; next }
    /^[0-9a-f]+ <.*>:$/ { p = 0 }
    p')
found=$(printf '%s\n' "$asm" | grep -cE '^[0-9a-f]+ <' || true)
for want in sums_scalar sums_portable sums_avx2 sums_avx2_lut1 sums_avx2_lut4 sums_avx2_lut6x1 sums_avx2_lut6x4 tables_avx2 tables_avx2_i6 sums_avx512_apply sums_avx512_tables sums_avx512_lut1 sums_avx512_lut4 tables_avx512_pairs; do
    if ! grep -qE "^[0-9a-f]+ <.*[0-9]${want}17h" <<< "$asm"; then
        echo "check-no-multiply: kernel function $want not found in $bin" >&2
        exit 1
    fi
done
# mul, imul, (v)mulps/ss/pd, pmul*, pmuludq, vpmull*, fma (vfmadd/vfmsub/vfnmadd...),
# pmaddwd/pmaddubsw, vpdpbusd/vpdpwssd (VNNI), dpps/dppd.
bad=$(printf '%s\n' "$asm" | grep -iE '^\s+[0-9a-f]+:\s+(v?p?mul[a-z0-9]*|imul[a-z]*|v?fn?m(add|sub)[a-z0-9]*|v?pmadd[a-z0-9]*|vpdp[a-z0-9]*|v?dpp[sd])\b' || true)
if [ -n "$bad" ]; then
    echo "check-no-multiply: multiply instructions in the ternary kernels:" >&2
    printf '%s\n' "$bad" >&2
    exit 1
fi
n=$(printf '%s\n' "$asm" | grep -cE '^\s+[0-9a-f]+:' || true)
echo "check-no-multiply: ok ($found kernels, $n instructions, no multiply)"
