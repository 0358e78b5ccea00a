#!/usr/bin/env bash
# The whole test suite: formatting, lints, the inference crate's dependency rule, and
# every test of the workspace (compiled once, in release mode).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --release -- -D warnings
echo "== dependency rules"
for pkg in flashlm-infer flashlm-core flashlm-tokenizer flashlm-convert flashlm-capi; do
    ./scripts/check-infer-deps.sh "$pkg"
done
ALLOW_BURN=1 ./scripts/check-infer-deps.sh flashlm-train
if ./scripts/check-infer-deps.sh flashlm-data >/dev/null 2>&1; then
    echo "check-infer-deps.sh failed to flag flashlm-data's reqwest/tokio" >&2
    exit 1
fi
echo "== sizes (no file over 700 lines, no function over 120 outside tests)"
python3 scripts/check-sizes.py --check
echo "== no multiply in the ternary kernels"
./scripts/check-no-multiply.sh
echo "== cargo test"
# The C API's test links examples/c/generate.c against libflashlm.a, which only a build of
# the library target writes (cargo test builds the rlib alone).
cargo build --workspace --release --all-targets
# Slow tests (#[ignore]d, each says why) run in CI and with FLASHLM_SLOW_TESTS=1.
if [ "${CI:-}" = true ] || [ "${FLASHLM_SLOW_TESTS:-0}" = 1 ]; then
    cargo test --workspace --release -- --include-ignored
else
    cargo test --workspace --release
fi
# The training step again as an AVX2-only CPU runs it (on an AVX-512 machine FLASHLM_ISA=avx2
# swaps in AVX2 GEMM kernels: OpenBLAS's Haswell ones where libopenblas0 is installed, else
# the gemm crate's capped ones): GEMM kernels against the reference, and the step's loss and
# gradients against PyTorch and burn; then once more with OpenBLAS left out (--workspace: the
# same feature set as the build above, so nothing is recompiled).
echo "== training step under FLASHLM_ISA=avx2"
FLASHLM_ISA=avx2 OPENBLAS_CORETYPE=Haswell cargo test --workspace --release --lib --test parity -- fused layers matmul
FLASHLM_ISA=avx2 FLASHLM_BLAS=off cargo test --workspace --release --lib --test parity -- fused layers matmul
echo "== Python package (bindings/python)"
./scripts/test-python.sh
echo "== lm-evaluation-harness against flashlm-serve"
./scripts/test-lm-eval.sh
