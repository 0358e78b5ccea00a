#!/usr/bin/env bash
# Quality at equal wall time: flashlm-train against the original PyTorch FlashLM v4
# (scripts/reference/train_timed.py, PyTorch installed with pip on demand), one after the
# other, MINUTES of training each, same config (small), batch, seed, initial weights, token
# batches, LR rule and snapshot schedule. The LR rule is 500 warmup steps, then a cosine that
# ends at the time limit (SCHEDULE=time, the default), or the original's cosine over 10 planned
# epochs of steps (SCHEDULE=steps; a trainer that finishes those steps early stops there).
# flashlm-train runs with validation off (--eval-batches 0), as the reference does, so neither
# spends training time on anything but training and snapshots.
# Every snapshot of both is then scored by the same evaluator (`flashlm-infer eval
# --protocol original`, f32 export) and both curves are drawn into one PNG.
#
# usage: scripts/quality-run.sh MINUTES [SNAPSHOTS=10] [THREADS=nproc] [OUT=runs/quality-MINUTESmin]
# env:   FLASHLM_DATA_DIR (default ../shared/data), BATCH (default 8), SCHEDULE (time|steps),
#        REUSE_PYTORCH=DIR (score the reference snapshots of an earlier run, OUT/pytorch, instead
#        of training it again; same MINUTES, SNAPSHOTS, THREADS, BATCH and SCHEDULE)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:?usage: scripts/quality-run.sh MINUTES [SNAPSHOTS] [THREADS] [OUT]}
snaps=${2:-10}
threads=${3:-$(nproc)}
out=${4:-runs/quality-${minutes}min}
batch=${BATCH:-8}
schedule=${SCHEDULE:-time}
case "$schedule" in time | steps) ;; *) echo "SCHEDULE must be time or steps" >&2; exit 2 ;; esac
data=${FLASHLM_DATA_DIR:-../shared/data}
every=$(python3 -c "print($minutes / $snaps)")
# PyTorch for the reference, installed (if missing) before anything is built or timed.
scripts/reference/ensure-torch.sh
cargo build --release -q -p flashlm-train --bin flashlm-train --bin flashlm-export --example train_setup --example quality_plot
cargo build --release -q -p flashlm-infer --bin flashlm-infer
# OUT is the user's path: it is never removed. A new run needs a new or empty directory, or
# one an earlier quality run made (it has .quality-run); only that run's outputs are replaced.
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -f "$out/.quality-run" ]; then
    echo "$out exists and was not made by quality-run.sh: pick another OUT" >&2
    exit 2
fi
mkdir -p "$out"
touch "$out/.quality-run"
for old in setup flashlm pytorch results.tsv quality.png eval.flm flashlm.log pytorch.log; do
    [ -e "$out/$old" ] || [ -L "$out/$old" ] || continue
    if [ -L "$out/$old" ]; then rm "$out/$old"; else rm -r -- "${out:?}/$old"; fi
done
# Enough batches for the reference at up to 6,000 tok/s per thread.
steps=$(python3 -c "import math; print(math.ceil($minutes * 60 * 6000 * $threads / ($batch * 256)) + 10)")
./target/release/examples/train_setup "$out/setup" small "$batch" "$steps" 42 "$data" > /dev/null

echo "flashlm-train: $minutes min on $threads threads..." >&2
./target/release/flashlm-train --small --batch "$batch" --grad-accum 1 --lr 4e-3 --warmup 500 --seed 42 \
    --threads "$threads" --data-dir "$data" --save-dir "$out/flashlm" --minutes "$minutes" --lr-schedule "$schedule" \
    --snapshot-minutes "$every" --epochs "$([ "$schedule" = time ] && echo 100000 || echo 10)" --eval-every off --eval-batches 0 --patience 0 \
    --sample-every off --save-every off --final-bpc-stories 0 --quiet > "$out/flashlm.log" 2>&1 ||
    { tail -20 "$out/flashlm.log"; exit 1; }
if [ -n "${REUSE_PYTORCH:-}" ]; then
    # The reference's snapshots from an earlier run with the same MINUTES, SNAPSHOTS, THREADS,
    # BATCH and SCHEDULE (its side does not change when flashlm-train does).
    [ -f "$REUSE_PYTORCH/metrics.jsonl" ] || { echo "REUSE_PYTORCH: no metrics.jsonl in $REUSE_PYTORCH" >&2; exit 2; }
    echo "pytorch: reusing $REUSE_PYTORCH" >&2
    ln -s "$(realpath "$REUSE_PYTORCH")" "$out/pytorch"
else
    echo "pytorch: $minutes min on $threads threads..." >&2
    python3 scripts/reference/train_timed.py "$out/setup" "$threads" "$minutes" "$every" "$out/pytorch" "$schedule" > "$out/pytorch.log" 2>&1 ||
        { tail -20 "$out/pytorch.log"; exit 1; }
fi

# Score every snapshot with one evaluator.
tok="$out/setup/prep/tokenizer.json"
printf 'series\tsnapshot\tminutes\ttokens\tstep\tbpc\n' > "$out/results.tsv"
for series in flashlm pytorch; do
    grep '"snapshot"' "$out/$series/metrics.jsonl" | while read -r row; do
        read -r index step tokens secs path < <(python3 -c "import json,sys; r=json.loads(sys.argv[1]); print(r['index'], r['step'], r['tokens'], r['elapsed_s'], r['path'])" "$row")
        flm="$out/eval.flm"
        if [ "$series" = flashlm ]; then
            ./target/release/flashlm-export "$path" --tokenizer "$out/flashlm/tokenizer.json" -o "$flm" > /dev/null
        else
            ./target/release/flashlm-export --torch "$path" --tokenizer "$tok" --seq-len 256 -o "$flm" > /dev/null
        fi
        bpc=$(./target/release/flashlm-infer eval --model "$flm" --data "$data/tinystories-valid.txt.zst" \
            --protocol original --threads "$threads" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['bpc'])")
        mins=$(python3 -c "print(f'{$secs / 60:.3f}')")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$series" "$index" "$mins" "$tokens" "$step" "$bpc" >> "$out/results.tsv"
        printf '%-8s snapshot %2s  %6.2f min  %9s tokens  bpc %s\n' "$series" "$index" "$mins" "$tokens" "$bpc"
    done
done
rm -f "$out/eval.flm"
./target/release/examples/quality_plot "$out/results.tsv" "$out/quality.png"
python3 - "$out/results.tsv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
last = {r["series"]: r for r in rows}
f, p = last["flashlm"], last["pytorch"]
print(f"final flashlm-train: bpc {f['bpc']} after {int(f['tokens']):,} tokens ({f['minutes']} min)")
print(f"final pytorch:       bpc {p['bpc']} after {int(p['tokens']):,} tokens ({p['minutes']} min)")
verdict = "lower" if float(f["bpc"]) < float(p["bpc"]) else "NOT lower"
print(f"flashlm-train BPC is {verdict} than PyTorch at equal wall time "
      f"(difference {float(f['bpc']) - float(p['bpc']):+.4f})")
PY
