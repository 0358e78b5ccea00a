#!/usr/bin/env bash
# Instructions executed per generated token on aarch64, counted under qemu-user (no ARM
# hardware here, so this stands in for speed): the bundled model, greedy, for each kernel and
# head pair. Each pair runs twice (N1 and N2 generated tokens, same prompt); the difference
# divided by N2 - N1 is the cost of one token without the load and the prompt.
# Needs ../shared/cross/setup-cross.sh (xcargo, qemu-aarch64) and a C compiler for the
# counting plugin (scripts/qemu/insn_count.c).
# usage: scripts/count-insns-aarch64.sh [N1 N2]     (default 20 120)
set -euo pipefail
cd "$(dirname "$0")/.."
n1=${1:-20}
n2=${2:-120}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/cross-target}
xcargo=${XCARGO:-$HOME/.cache/flashlm-cross/bin/xcargo}
[ -x "$xcargo" ] || { echo "count-insns: $xcargo not found (run ../shared/cross/setup-cross.sh)" >&2; exit 1; }
plugin=$CARGO_TARGET_DIR/insn_count.so
mkdir -p "$CARGO_TARGET_DIR"
cc -shared -fPIC -O2 -o "$plugin" scripts/qemu/insn_count.c
"$xcargo" aarch64 build --release -q -p flashlm-infer --bin flashlm-infer
bin=$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release/flashlm-infer
count() { # kernel head tokens
    qemu-aarch64 -L /usr/aarch64-linux-gnu -plugin "$plugin" "$bin" --kernel "$1" --head "$2" \
        --prompt "Once upon a time" --temperature 0 --ignore-eos --max-tokens "$3" 2>&1 >/dev/null |
        awk '/^insns:/ { print $2 }'
}
echo "aarch64 (qemu-user $(qemu-aarch64 --version | awk 'NR == 1 { print $3 }')), bundled model, greedy; instructions per generated token"
printf '%-12s %-9s %14s\n' kernel head insns/token
declare -A per
for pair in portable-i6:portable neon-i6:portable portable-i6:neon neon-i6:neon neon:neon; do
    k=${pair%%:*}
    h=${pair##*:}
    a=$(count "$k" "$h" "$n1")
    b=$(count "$k" "$h" "$n2")
    per[$pair]=$(( (b - a) / (n2 - n1) ))
    printf '%-12s %-9s %14d\n' "$k" "$h" "${per[$pair]}"
done
awk -v p="${per[portable-i6:portable]}" -v n="${per[neon-i6:neon]}" \
    'BEGIN { printf "summary: portable-i6 + portable head %d, neon-i6 + neon head %d insns/token: %.2fx fewer\n", p, n, p / n }'
