#!/usr/bin/env bash
# Build and install the flashlm Python package (bindings/python, PyO3 + maturin) into a
# virtual environment under target/, then run its pytest suite. Run by scripts/test.sh.
# FLASHLM_SKIP_PYTHON=1 skips it (prints why); in CI it never skips.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${FLASHLM_SKIP_PYTHON:-0}" = 1 ] && [ "${CI:-}" != true ]; then
    echo "test-python: skipped (FLASHLM_SKIP_PYTHON=1)"
    exit 0
fi
# The bindings are outside the cargo workspace: their own format and lint checks.
cargo fmt --manifest-path bindings/python/Cargo.toml -- --check
CARGO_TARGET_DIR="$PWD/target/python" cargo clippy -q --manifest-path bindings/python/Cargo.toml --release -- -D warnings
venv=target/pyenv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check pytest numpy
# The wheel is built by maturin (fetched by pip's build isolation); its cargo build shares
# this checkout's target/ folder.
CARGO_TARGET_DIR="$PWD/target/python" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --force-reinstall --no-deps ./bindings/python
"$venv/bin/python" -m pytest -q bindings/python/tests
