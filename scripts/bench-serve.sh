#!/usr/bin/env bash
# Usage: scripts/bench-serve.sh [MODEL.flm]          (default: the bundled model)
#        SOAK=1 scripts/bench-serve.sh [MODEL.flm]   (16 streams for SOAK_SECONDS, default 600)
#        LOGPROBS=5 scripts/bench-serve.sh            (every request asks for logprobs: 5)
#        LEVELS="1 16" scripts/bench-serve.sh         (other concurrency levels)
# Starts flashlm-serve on a free loopback port, drives it with N concurrent streaming clients
# (1, 4, 16, 64; BENCH_SECONDS each, default 10; MAX_TOKENS per request, default 128) and
# prints aggregate tokens/s, p50/p99 time to first token and inter-chunk gap per level, then
# the server's peak RSS. Stops by itself; the server is shut down with SIGTERM at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${BENCH_SECONDS:-10}
max_tokens=${MAX_TOKENS:-128}
threads=${THREADS:-1}
cargo build --release -q -p flashlm-serve --bin flashlm-serve --example bench_serve
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; flags: $(grep -m1 -o -w -E 'avx512f|avx512_vnni|avx2|fma|f16c' /proc/cpuinfo | sort -u | tr '\n' ' ')"
log=$(mktemp)
model_args=()
if [ $# -ge 1 ]; then model_args=(--model "$1"); fi
./target/release/flashlm-serve "${model_args[@]}" --port 0 --threads "$threads" --max-streams 64 --max-queue 64 \
    --shutdown-grace 2 2>"$log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 200); do
    addr=$(sed -n 's|.* on http://\([0-9.:]*\) .*|\1|p' "$log" | head -1)
    [ -n "$addr" ] && break
    kill -0 $pid 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.05
done
[ -n "${addr:-}" ] || { echo "flashlm-serve did not start" >&2; cat "$log" >&2; exit 1; }
head -1 "$log"
bench=./target/release/examples/bench_serve
if [ "${SOAK:-0}" = 1 ]; then
    soak=${SOAK_SECONDS:-600}
    echo "soak: 16 streams for ${soak}s, ${max_tokens} tokens per request"
    $bench "$addr" 16 "$soak" "$max_tokens" $pid
else
    echo "each level ${secs}s, ${max_tokens} tokens per request, server threads ${threads}, logprobs ${LOGPROBS:-off}"
    for n in ${LEVELS:-1 4 16 64}; do
        $bench "$addr" $n "$secs" "$max_tokens"
    done
fi
echo "server peak RSS: $(sed -n 's/^VmHWM: *//p' /proc/$pid/status)"
kill -TERM $pid
t0=$(date +%s%N)
wait $pid
echo "server stopped on SIGTERM in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
trap - EXIT
rm -f "$log"
