#!/usr/bin/env bash
# Builds the browser engine: bindings/wasm for wasm32-unknown-unknown twice (with SIMD128 and
# without; the page picks the one the browser runs) and wasm-bindgen's glue for each, into
# examples/web/pkg-simd and examples/web/pkg-nosimd (both gitignored). Then serve the repository
# root and open /examples/web/ (the page fetches models/flashlm-small.flm), e.g.
#   python3 -m http.server -b 127.0.0.1 8000   ->   http://127.0.0.1:8000/examples/web/
# Needs ../shared/cross/setup-cross.sh (a rustc with the std source for -Zbuild-std) and
# wasm-bindgen-cli at the version bindings/wasm pins (installed with cargo into
# $FLASHLM_WASM_BINDGEN_ROOT, default $HOME/.cache/flashlm-wasm-bindgen, if missing).
# usage: scripts/build-web.sh [--simd-only]   (--simd-only: the SIMD128 build alone, as CI does)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
env_sh=${XT_CROSS_PREFIX:-$HOME/.cache/flashlm-cross}/env.sh
[ -f "$env_sh" ] || { echo "build-web: $env_sh not found (run ../shared/cross/setup-cross.sh)" >&2; exit 1; }
version=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)"/\1/p' bindings/wasm/Cargo.toml)
[ -n "$version" ] || { echo "build-web: no pinned wasm-bindgen version in bindings/wasm/Cargo.toml" >&2; exit 1; }
wbg_root=${FLASHLM_WASM_BINDGEN_ROOT:-$HOME/.cache/flashlm-wasm-bindgen}
wbg=$wbg_root/bin/wasm-bindgen
if ! "$wbg" --version 2>/dev/null | grep -qx "wasm-bindgen $version"; then
    echo "build-web: installing wasm-bindgen-cli $version into $wbg_root (a few minutes, once)" >&2
    # --locked takes the versions wasm-bindgen-cli shipped with; when one of them is gone from
    # the registry (seen: webpki-roots 1.0.11 for 0.2.130), resolve its dependencies afresh.
    if ! cargo install -q --locked wasm-bindgen-cli --version "$version" --root "$wbg_root"; then
        echo "build-web: the locked install failed; installing with freshly resolved dependencies" >&2
        cargo install -q wasm-bindgen-cli --version "$version" --root "$wbg_root"
    fi
fi
target_dir=${CARGO_TARGET_DIR:-/tmp/flashlm-web-target}
variants="simd nosimd"
[ "${1:-}" = --simd-only ] && variants=simd
for variant in $variants; do
    flags=""
    [ "$variant" = simd ] && flags="-C target-feature=+simd128"
    (
        . "$env_sh"
        cd bindings/wasm
        RUSTFLAGS="$flags" CARGO_TARGET_DIR="$target_dir/$variant" cargo +stable build -q --locked --release \
            -Zbuild-std=std,panic_abort --target wasm32-unknown-unknown
    )
    out=examples/web/pkg-$variant
    rm -rf "$out.new"
    "$wbg" --target web --no-typescript --out-dir "$out.new" \
        "$target_dir/$variant/wasm32-unknown-unknown/release/flashlm_wasm.wasm"
    rm -rf "$out"
    mv "$out.new" "$out"
    echo "build-web: $out ($(wc -c < "$out/flashlm_wasm_bg.wasm") bytes of wasm)"
done
echo "build-web: serve $root and open /examples/web/"
