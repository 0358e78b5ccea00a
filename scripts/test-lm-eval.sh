#!/usr/bin/env bash
# A real client: lm-evaluation-harness (`lm_eval` from PyPI, model type local-completions,
# the server's own tokenizer through /tokenize) scores tests/lm_eval's multiple-choice task
# through flashlm-serve on 127.0.0.1, and its figures must equal the engine's own scoring of
# the same items (examples/story_continuations.rs): every choice's log-likelihood (1e-6),
# every prediction, and acc / acc_norm exactly. Run by scripts/test.sh;
# FLASHLM_SKIP_LM_EVAL=1 skips it (prints why); in CI it never skips.
# usage: scripts/test-lm-eval.sh [OUT_DIR]   (lm_eval's results and samples are kept there)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${FLASHLM_SKIP_LM_EVAL:-0}" = 1 ] && [ "${CI:-}" != true ]; then
    echo "test-lm-eval: skipped (FLASHLM_SKIP_LM_EVAL=1)"
    exit 0
fi
venv=target/lm-eval-venv
if [ ! -x "$venv/bin/lm_eval" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "lm_eval[api]==0.4.13"
fi
cargo build -q --release -p flashlm-serve --bin flashlm-serve
cargo build -q --release -p flashlm-infer --example story_continuations
out=${1:-$(mktemp -d)}
mkdir -p "$out"
items=$PWD/tests/lm_eval/story_continuations.jsonl
sed "s|DATA_FILE|$items|" tests/lm_eval/story_continuations.yaml >"$out/story_continuations.yaml"

log=$out/server.log
target/release/flashlm-serve --port 0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    url=$(grep -o 'http://127.0.0.1:[0-9]*' "$log" || true)
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { echo "test-lm-eval: the server did not start:"; cat "$log"; exit 1; }

echo "== lm_eval (local-completions) against flashlm-serve at $url"
start=$SECONDS
HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 "$venv/bin/lm_eval" --model local-completions \
    --model_args "model=flashlm-small,base_url=$url/v1/completions,tokenizer_backend=remote,tokenized_requests=True,num_concurrent=1,max_retries=1" \
    --tasks flashlm_story_continuations --include_path "$out" --output_path "$out/results" --log_samples \
    --seed 1234 2>&1 | tee "$out/lm_eval.log" | grep -v -E '^\s*$|Requesting API|it/s\]' || true
echo "== lm_eval took $((SECONDS - start)) s"
target/release/examples/story_continuations score "$items" >"$out/direct.jsonl"

"$venv/bin/python" - "$out" <<'EOF'
import glob, json, math, sys
out = sys.argv[1]
results = sorted(glob.glob(f"{out}/results/**/results_*.json", recursive=True))
samples = sorted(glob.glob(f"{out}/results/**/samples_flashlm_story_continuations_*.jsonl", recursive=True))
assert results and samples, f"lm_eval wrote no results under {out}/results (see {out}/lm_eval.log)"
r = json.load(open(results[-1]))["results"]["flashlm_story_continuations"]
direct = [json.loads(l) for l in open(f"{out}/direct.jsonl")]
summary, items = direct[-1], {d["id"]: d for d in direct[:-1]}
got = [json.loads(l) for l in open(samples[-1])]
assert len(got) == len(items) == summary["items"], (len(got), len(items))
worst = 0.0
for s in got:
    d = items[s["doc"]["id"]]
    lls = [float(x[0]) for x in s["filtered_resps"]]  # (log-likelihood, is_greedy) as strings
    assert len(lls) == len(d["lls"]), (s["doc"]["id"], lls, d["lls"])
    for a, b in zip(lls, d["lls"]):
        worst = max(worst, abs(a - b))
        assert math.isclose(a, b, rel_tol=0, abs_tol=1e-6), (s["doc"]["id"], lls, d["lls"])
    assert s["acc"] == float(d["pred"] == d["label"]), (s["doc"]["id"], s["acc"], d)
    assert s["acc_norm"] == float(d["pred_norm"] == d["label"]), (s["doc"]["id"], s["acc_norm"], d)
acc, acc_norm = r["acc,none"], r["acc_norm,none"]
assert acc == summary["acc"] and acc_norm == summary["acc_norm"], (r, summary)
assert acc_norm >= 0.5, f"acc_norm {acc_norm} is not well above chance (0.25)"
print(f"{'':2}{'':32}{'lm_eval':>10}{'direct':>10}")
print(f"  {'acc (50 items, chance 0.25)':32}{acc:>10.4f}{summary['acc']:>10.4f}")
print(f"  {'acc_norm':32}{acc_norm:>10.4f}{summary['acc_norm']:>10.4f}")
print(f"test-lm-eval: ok: {len(got)} items, every log-likelihood within {worst:.1e} of the engine's, "
      f"acc {acc:.2f}, acc_norm {acc_norm:.2f}")
EOF
