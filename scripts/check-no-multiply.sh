#!/usr/bin/env bash
# Fails if a multiply instruction of any kind (float or integer multiply, multiply-add,
# dot product) appears in the ternary kernels of the built flashlm-infer binary: every
# `sums_*` function (the products) and every `tables_*` function (the int8 kernels' look-up
# table builders).
# usage: scripts/check-no-multiply.sh [BINARY]      (default: builds target/release/flashlm-infer)
#        scripts/check-no-multiply.sh --aarch64 [BINARY]
#            the aarch64 build (default: cross-built with ../shared/cross's xcargo into
#            $CARGO_TARGET_DIR, default /tmp/cross-target), read with aarch64-linux-gnu-objdump
set -euo pipefail
cd "$(dirname "$0")/.."
arch=x86_64
if [ "${1:-}" = --aarch64 ]; then
    arch=aarch64
    shift
fi
bin=${1:-}
if [ "$arch" = x86_64 ]; then
    objdump=objdump
    if [ -z "$bin" ]; then
        cargo build --release -q -p flashlm-infer --bin flashlm-infer
        bin=target/release/flashlm-infer
    fi
    kernels="sums_scalar sums_portable sums_avx2 sums_avx2_lut1 sums_avx2_lut4 sums_avx2_lut6x1 sums_avx2_lut6x4
        tables_avx2 tables_avx2_i6 sums_avx512_apply sums_avx512_tables sums_avx512_lut1 sums_avx512_lut4
        tables_avx512_pairs"
    # mul, imul, (v)mulps/ss/pd, pmul*, pmuludq, vpmull*, fma (vfmadd/vfmsub/vfnmadd...),
    # pmaddwd/pmaddubsw, vpdpbusd/vpdpwssd (VNNI), dpps/dppd.
    multiply='(v?p?mul[a-z0-9]*|imul[a-z]*|v?fn?m(add|sub)[a-z0-9]*|v?pmadd[a-z0-9]*|vpdp[a-z0-9]*|v?dpp[sd])'
else
    objdump=aarch64-linux-gnu-objdump
    command -v "$objdump" >/dev/null || { echo "check-no-multiply: $objdump not found (apt-get install binutils-aarch64-linux-gnu)" >&2; exit 1; }
    if [ -z "$bin" ]; then
        xcargo=${XCARGO:-$HOME/.cache/flashlm-cross/bin/xcargo}
        [ -x "$xcargo" ] || { echo "check-no-multiply: $xcargo not found (run ../shared/cross/setup-cross.sh)" >&2; exit 1; }
        export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/cross-target}
        "$xcargo" aarch64 build --release -q -p flashlm-infer --bin flashlm-infer
        bin=$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release/flashlm-infer
    fi
    kernels="sums_scalar sums_portable sums_neon_i6x1 sums_neon_i6x4 sums_neon_exact tables_neon_i6"
    # A64 and NEON: mul, madd, msub, mneg, smull, umull, smulh, smaddl, umsubl, mla, mls,
    # smlal, umlal2, sqdmulh, sqrdmlah, pmul, pmull, fmul, fmulx, fmla, fmls, fmadd, fmsub,
    # fnmadd, fnmul, sdot, udot, usdot, bfdot, smmla, ummla, bfmmla...
    multiply='(s|u|us|su|p|f|fn|sq|sqd|sqrd|bf)?(mul|mla|mls|madd|msub|mneg|dot|mmla)[a-z0-9]*'
fi
asm=$("$objdump" -d --no-show-raw-insn "$bin" | awk '
    /^[0-9a-f]+ <.*kernels.*(sums|tables)_[a-z0-9_]*.*>:$/ { p = 1; print; next }
    /^[0-9a-f]+ <.*>:$/ { p = 0 }
    p')
found=$(printf '%s\n' "$asm" | grep -cE '^[0-9a-f]+ <' || true)
for want in $kernels; do
    # Legacy mangling ends in 17h<hash>E, v0 mangling (Debian's rustc) in the name itself.
    if ! grep -qE "^[0-9a-f]+ <.*[0-9]${want}(17h[0-9a-f]+E)?>:" <<< "$asm"; then
        echo "check-no-multiply: kernel function $want not found in $bin" >&2
        exit 1
    fi
done
bad=$(printf '%s\n' "$asm" | grep -iE "^\s+[0-9a-f]+:\s+${multiply}(\s|$)" || true)
if [ -n "$bad" ]; then
    echo "check-no-multiply: multiply instructions in the ternary kernels ($arch):" >&2
    printf '%s\n' "$bad" >&2
    exit 1
fi
n=$(printf '%s\n' "$asm" | grep -cE '^\s+[0-9a-f]+:' || true)
echo "check-no-multiply: ok ($arch, $found kernels, $n instructions, no multiply)"
