#!/usr/bin/env bash
# Usage: check-infer-deps.sh [PACKAGE]   (default flashlm-infer)
# Fails if the inference crate depends (directly or not) on burn, reqwest or tokio.
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=${1:-flashlm-infer}
tree=$(cargo tree -p "$pkg" --edges normal,build --prefix none --format '{p}')
bad=$(printf '%s\n' "$tree" | grep -E '^(burn[a-z0-9_-]*|reqwest|tokio[a-z0-9_-]*) ' || true)
if [ -n "$bad" ]; then
    echo "check-infer-deps: $pkg must not depend on burn, reqwest or tokio, but pulls in:" >&2
    printf '%s\n' "$bad" | sort -u >&2
    exit 1
fi
echo "check-infer-deps: $pkg ok ($(printf '%s\n' "$tree" | sort -u | wc -l) crates, none of burn/reqwest/tokio)"
