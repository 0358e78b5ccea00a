#!/usr/bin/env bash
# Training tokens/s of flashlm-train on burn's flex (default) and ndarray backends, small
# config, same data, batch and threads; runs alternate so drift hits both equally.
# usage: scripts/bench-backends.sh [STEPS=40] [BATCH=4] [ROUNDS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-40}; batch=${2:-4}; rounds=${3:-2}
cargo build --release -q -p flashlm-train
cargo build --release -q -p flashlm-train --features ndarray --target-dir target/ndarray
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# Prepare data once so both runs only train.
./target/release/flashlm-train --small --quiet --max-steps 0 --save-dir "$tmp/flex" >/dev/null
cp -r "$tmp/flex" "$tmp/ndarray"
rate() { # tok/s over steps 6..N from metrics.jsonl (skips warm-up steps)
    python3 - "$1" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl") if '"train"' in l]
a, b = rows[4], rows[-1]
print(f"{(b['tokens'] - a['tokens']) / (b['elapsed_s'] - a['elapsed_s']):.0f}")
PY
}
for r in $(seq 1 "$rounds"); do
    for be in flex ndarray; do
        exe=./target/release/flashlm-train
        [ "$be" = ndarray ] && exe=./target/ndarray/release/flashlm-train
        rm -f "$tmp/$be"/{metrics.jsonl,*.ckpt,training.log}
        "$exe" --small --quiet --batch "$batch" --max-steps "$steps" --eval-every off --sample-every off \
            --save-every off --eval-batches 1 --log-every 1e9 --save-dir "$tmp/$be" >/dev/null
        echo "round $r $be batch $batch: $(rate "$tmp/$be") tok/s"
    done
done
