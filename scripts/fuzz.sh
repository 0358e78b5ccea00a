#!/usr/bin/env bash
# Run every fuzz target (fuzz/fuzz_targets) for SECONDS each, one after another, and print one
# summary line per target: executions, coverage, crashes.
#   scripts/fuzz.sh SECONDS [TARGET ...]
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Seeds come from
# `cargo run -p flashlm-train --example fuzz_seeds` (tiny valid files of every kind); crashes
# land in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:?usage: scripts/fuzz.sh SECONDS [TARGET ...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(flm_forward checkpoint_read token_cache_read parquet_read); fi
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 1; }
cargo run --release -q -p flashlm-train --example fuzz_seeds -- fuzz/corpus
mkdir -p fuzz/logs
status=0
for t in "${targets[@]}"; do
    log=fuzz/logs/$t.log
    echo "== $t: ${secs}s (log: $log)"
    set +e
    (cd fuzz && cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 -rss_limit_mb=4096) >"$log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    cov=$(grep -oE '#[0-9]+[[:space:]]+DONE[[:space:]]+cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || echo "cov: ?")
    crashes=$(ls "fuzz/artifacts/$t" 2>/dev/null | wc -l)
    echo "summary: target=$t secs=$secs execs=$execs $cov crashes=$crashes rc=$rc"
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then status=1; fi
done
exit $status
