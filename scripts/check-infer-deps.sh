#!/usr/bin/env bash
# Usage: check-infer-deps.sh [PACKAGE]   (default flashlm-infer)
# Fails if the package depends (directly or not) on burn, reqwest or tokio: the rule for the
# engine and the crates below it (flashlm-core, flashlm-tokenizer). With ALLOW_BURN=1 only the
# network crates are refused (the trainer: it reads files, it does not download).
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=${1:-flashlm-infer}
if [ "${ALLOW_BURN:-0}" = 1 ]; then
    pattern='^(reqwest|tokio[a-z0-9_-]*|hyper[a-z0-9_-]*) '
    what="reqwest, tokio or hyper"
else
    pattern='^(burn[a-z0-9_-]*|reqwest|tokio[a-z0-9_-]*) '
    what="burn, reqwest or tokio"
fi
tree=$(cargo tree -p "$pkg" --edges normal,build --prefix none --format '{p}')
bad=$(printf '%s\n' "$tree" | grep -E "$pattern" || true)
if [ -n "$bad" ]; then
    echo "check-infer-deps: $pkg must not depend on $what, but pulls in:" >&2
    printf '%s\n' "$bad" | sort -u >&2
    exit 1
fi
echo "check-infer-deps: $pkg ok ($(printf '%s\n' "$tree" | sort -u | wc -l) crates, none of $what)"
