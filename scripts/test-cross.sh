#!/usr/bin/env bash
# The cross tests (docs/PORTABILITY.md): aarch64 under qemu-user, wasm32-wasip1 under Node's
# WASI, and the browser page in headless Chromium, against the native x86-64 engine.
#   * aarch64: the tests of flashlm-core, flashlm-tokenizer and flashlm-infer (release; the
#     bundled model's 500-story BPC test is skipped: it takes over 15 minutes under qemu, and
#     the 50-story comparison below stands in for it), the NEON kernels' disassembly without
#     a multiply, and instructions per token (scripts/count-insns-aarch64.sh; full run only).
#   * wasm32-wasip1 with SIMD128: the same three crates' tests (those that need threads,
#     processes or a temp dir say so and are skipped on WASI); without SIMD128: flashlm-infer's.
#   * The same text for a seed and the same BPC (both protocols, --stories N) from the native
#     binary, the aarch64 one and the wasm ones (SIMD128 and not), byte for byte.
#   * Speed in Node (full run only): the bundled model, greedy, SIMD128 / plain wasm / native.
#   * The browser: scripts/build-web.sh, then tests/web/browser-test.mjs (Chromium from apt).
# usage: scripts/test-cross.sh [--ci]
#   --ci: what CI runs (.ci/run): no instruction count, no speed table, no plain (non-SIMD)
#   wasm build, --stories 20.
set -euo pipefail
cd "$(dirname "$0")/.."
ci=0
[ "${1:-}" = --ci ] && ci=1
prefix=${XT_CROSS_PREFIX:-$HOME/.cache/flashlm-cross}
if [ ! -x "$prefix/bin/xcargo" ] || [ ! -f "$prefix/env.sh" ]; then
    echo "== setting up the cross toolchains (../shared/cross/setup-cross.sh)"
    if [ "$(id -u)" = 0 ]; then ../shared/cross/setup-cross.sh; else sudo -n ../shared/cross/setup-cross.sh; fi
fi
xcargo=$prefix/bin/xcargo
# Node's WASI calls its imports as V8 "fast API calls", and an allocation inside fd_write can
# start a GC there that frees the WASI object in use: Node aborts (SIGABRT, no message) a few
# thousand writes in, e.g. in `eval`'s progress output (nodejs/node#46777, still open). With
# fast API calls off the same binaries run to the end.
wasi_run="node --no-warnings --no-turbo-fast-api-calls $prefix/bin/wasi-run"
data=${FLASHLM_DATA_DIR:-../shared/data}/tinystories-valid.txt.zst
[ -f "$data" ] || { echo "test-cross: $data not found (set FLASHLM_DATA_DIR)" >&2; exit 1; }
stories=50
[ "$ci" = 1 ] && stories=20
cross=${FLASHLM_CROSS_TARGET_DIR:-/tmp/flashlm-cross-target}
t0=$SECONDS
step() { echo "== [$((SECONDS - t0)) s] $*"; }

step "native flashlm-infer"
cargo build --release -q -p flashlm-infer --bin flashlm-infer
native=target/release/flashlm-infer

step "aarch64: tests of core, tokenizer, infer under qemu-user"
CARGO_TARGET_DIR=$cross/aarch64 "$xcargo" aarch64 test --release -q -p flashlm-core -p flashlm-tokenizer \
    -p flashlm-infer -- --skip bundled_model_scores_the_bpc_in_its_card
CARGO_TARGET_DIR=$cross/aarch64 "$xcargo" aarch64 build --release -q -p flashlm-infer --bin flashlm-infer
a64=$cross/aarch64/aarch64-unknown-linux-gnu/release/flashlm-infer
step "aarch64: no multiply in the NEON kernels"
CARGO_TARGET_DIR=$cross/aarch64 ./scripts/check-no-multiply.sh --aarch64 "$a64"

step "wasm32-wasip1 + SIMD128: tests of core, tokenizer, infer under Node"
RUSTFLAGS="-C target-feature=+simd128" CARGO_TARGET_DIR=$cross/wasm-simd "$xcargo" wasm test --release -q \
    -p flashlm-core -p flashlm-tokenizer -p flashlm-infer
RUSTFLAGS="-C target-feature=+simd128" CARGO_TARGET_DIR=$cross/wasm-simd "$xcargo" wasm build --release -q \
    -p flashlm-infer --bin flashlm-infer
wasm_simd=$cross/wasm-simd/wasm32-wasip1/release/flashlm-infer.wasm
runs=("native:$native" "aarch64:qemu-aarch64 -L /usr/aarch64-linux-gnu $a64" "wasm-simd128:$wasi_run $wasm_simd")
if [ "$ci" = 0 ]; then
    step "wasm32-wasip1 without SIMD128: flashlm-infer's tests"
    CARGO_TARGET_DIR=$cross/wasm "$xcargo" wasm test --release -q -p flashlm-infer
    CARGO_TARGET_DIR=$cross/wasm "$xcargo" wasm build --release -q -p flashlm-infer --bin flashlm-infer
    wasm_plain=$cross/wasm/wasm32-wasip1/release/flashlm-infer.wasm
    runs+=("wasm-plain:$wasi_run $wasm_plain")
fi

step "the same text for a seed on every build"
fail=0
for case in "1|Once upon a time|" "7|The little dog|" "1|Once upon a time|--temperature 0 --max-tokens 300"; do
    IFS='|' read -r seed prompt extra <<< "$case"
    read -r -a more <<< "$extra"
    a=(--seed "$seed" --prompt "$prompt" "${more[@]}")
    want=$($native "${a[@]}" 2>/dev/null)
    for r in "${runs[@]:1}"; do
        name=${r%%:*}
        read -r -a cmd <<< "${r#*:}"
        got=$("${cmd[@]}" "${a[@]}" 2>/dev/null)
        if [ "$got" = "$want" ]; then
            echo "ok   $name: ${a[*]}: ${#got} bytes, identical to native"
        else
            echo "FAIL $name: ${a[*]}: text differs from native"; fail=1
        fi
    done
done

step "the same BPC (both protocols, $stories stories) on every build"
for r in "${runs[@]}"; do
    name=${r%%:*}
    read -r -a cmd <<< "${r#*:}"
    out=$("${cmd[@]}" eval --data "$data" --stories "$stories" 2>/dev/null | sed 's/ (.*//')
    printf '%s\n' "$out" | sed "s/^/$name: /"
    [ "$name" = native ] && want_bpc=$out
    if [ "$out" != "$want_bpc" ]; then echo "FAIL $name: BPC differs from native"; fail=1; fi
done
[ "$fail" = 0 ] || { echo "test-cross: builds disagree" >&2; exit 1; }

if [ "$ci" = 0 ]; then
    step "aarch64: instructions per generated token"
    CARGO_TARGET_DIR=$cross/aarch64 ./scripts/count-insns-aarch64.sh
    step "speed in Node (this CPU: $(lscpu | sed -n 's/^Model name: *//p')), bundled model, greedy, 1000 tokens, 5 runs"
    for r in "native:$native" "wasm-simd128:$wasi_run $wasm_simd" "wasm-plain:$wasi_run $wasm_plain"; do
        name=${r%%:*}
        read -r -a cmd <<< "${r#*:}"
        rates=()
        for i in 1 2 3 4 5; do
            line=$("${cmd[@]}" --prompt "Once upon a time" --temperature 0 --ignore-eos --max-tokens 1000 2>&1 >/dev/null |
                sed -n "s/.*generated: \(.*\) | kernel \(.*\)/\1, kernel \2/p")
            echo "$name run $i: $line"
            rates+=("$(sed -n 's/.*(\([0-9]*\) tok\/s).*/\1/p' <<< "$line")")
        done
        echo "$name median: $(printf '%s\n' "${rates[@]}" | sort -n | sed -n 3p) tok/s"
    done
fi

step "the browser page (headless Chromium)"
command -v "${CHROMIUM:-chromium}" >/dev/null || {
    (apt-get install -y -qq chromium >/dev/null || sudo -n apt-get install -y -qq chromium >/dev/null) ||
        { echo "test-cross: Chromium is needed (apt-get install chromium)" >&2; exit 1; }
}
shot=docs/img/web-page.png
if [ "$ci" = 1 ]; then
    # CI: the SIMD128 build alone (the plain one is the same engine without +simd128; its
    # text is checked through WASI in the full run).
    CARGO_TARGET_DIR=$cross/web ./scripts/build-web.sh --simd-only
    shot=$cross/web-page.png
    export FLASHLM_WEB_BUILDS=1
else
    CARGO_TARGET_DIR=$cross/web ./scripts/build-web.sh
fi
node tests/web/browser-test.mjs "$native" "$shot"
step "the server's playground page (headless Chromium against flashlm-serve)"
cargo build --release -q -p flashlm-serve --bin flashlm-serve
node tests/web/playground-test.mjs target/release/flashlm-serve "$(dirname "$shot")/playground.png"
step "cross tests passed"
