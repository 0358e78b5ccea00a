#!/usr/bin/env bash
# The kill -9 / resume experiment: train the tiny model once without interruption, then again
# while killing it with SIGKILL at random moments and resuming from latest.ckpt each time.
# Prints how many kills landed, how many inside a checkpoint write (the killed process left
# its temp file), whether every logged training loss of the killed-and-resumed runs equals
# the uninterrupted run's loss at that step, and how many temp files are left at the end.
#   scripts/kill-chain.sh [KILLS=25] [STEPS=8000]
# Data: FLASHLM_DATA_DIR (default ../shared/data). Exit status 0 only if the losses match and
# no temp file is left.
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-25}
steps=${2:-8000}
data=${FLASHLM_DATA_DIR:-../shared/data}
cargo build --release -q -p flashlm-train
bin=target/release/flashlm-train
work=$(mktemp -d /tmp/flashlm-kill-chain.XXXXXX)
echo "work dir: $work   data: $data   kills: $kills   steps: $steps"
args=(--tiny --max-steps "$steps" --save-every 10 --eval-batches 0 --final-bpc-stories 0
      --sample-every off --threads 2 --quiet --seed 7 --data-dir "$data")

echo "== uninterrupted run"
"$bin" "${args[@]}" --save-dir "$work/ref" >"$work/ref.log" 2>&1

echo "== killed and resumed"
landed=0
inside=0
run=0
while [ "$landed" -lt "$kills" ]; do
    run=$((run + 1))
    resume=()
    [ -f "$work/chain/latest.ckpt" ] && resume=(--resume "$work/chain/latest.ckpt")
    "$bin" "${args[@]}" "${resume[@]}" --save-dir "$work/chain" >>"$work/chain.log" 2>&1 &
    pid=$!
    # 0.4 .. 1.6 s: past data preparation, into the steps and their checkpoint writes.
    sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.3f", 0.4 + 1.2 * r / 32767 }')"
    if kill -9 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || true
        landed=$((landed + 1))
        if ls "$work/chain"/.*.tmp-"$pid" >/dev/null 2>&1; then
            inside=$((inside + 1))
        fi
    else
        wait "$pid" 2>/dev/null || true
        echo "run $run finished before its kill"
        break
    fi
done
echo "== last run, to the end"
resume=()
[ -f "$work/chain/latest.ckpt" ] && resume=(--resume "$work/chain/latest.ckpt")
"$bin" "${args[@]}" "${resume[@]}" --save-dir "$work/chain" >>"$work/chain.log" 2>&1

orphans=$(find "$work/chain" -name '.*.tmp-*' | wc -l)
python3 - "$work/ref/metrics.jsonl" "$work/chain/metrics.jsonl" "$landed" "$inside" "$orphans" <<'PY'
import json, sys
ref_path, chain_path, landed, inside, orphans = sys.argv[1:]
def train(path):
    for line in open(path):
        try:
            v = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        if v.get("kind") == "train":
            yield v["step"], v["loss"]
ref = dict(train(ref_path))
chain = list(train(chain_path))
diff = [(s, l, ref.get(s)) for s, l in chain if ref.get(s) != l]
steps = {s for s, _ in chain}
ok = not diff and steps == set(ref) and int(orphans) == 0
print(f"summary: kills={landed} inside_write={inside} losses_compared={len(chain)} "
      f"steps={len(steps)}/{len(ref)} mismatches={len(diff)} orphaned_temp_files={orphans} "
      f"result={'identical' if ok else 'DIFFERENT'}")
for s, l, r in diff[:5]:
    print(f"  step {s}: {l} resumed vs {r} uninterrupted")
sys.exit(0 if ok else 1)
PY
