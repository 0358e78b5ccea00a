"""Generation speed from Python against the flashlm-infer CLI (bundled model, 256 tokens).

    python bindings/python/bench.py    (after pip install ./bindings/python and cargo build --release)
"""
import re
import subprocess
import time
from pathlib import Path

import flashlm

TOKENS = 256
model = flashlm.Model()
model.generate("Once upon a time", max_tokens=50, seed=1)  # warm up


def best_of(n, f):
    return max(f() for _ in range(n))


def stream_rate():
    t = time.perf_counter()
    for _ in model.stream("Once upon a time", max_tokens=TOKENS, seed=1, ignore_eos=True):
        pass
    return TOKENS / (time.perf_counter() - t)


def generate_rate():
    t = time.perf_counter()
    model.generate("Once upon a time", max_tokens=TOKENS, seed=1, ignore_eos=True)
    return TOKENS / (time.perf_counter() - t)


print(f"kernel {model.kernel}; {TOKENS} tokens, best of 5")
print(f"python Model.generate: {best_of(5, generate_rate):8.0f} tok/s")
print(f"python Model.stream:   {best_of(5, stream_rate):8.0f} tok/s")
cli = Path(__file__).resolve().parents[2] / "target/release/flashlm-infer"
if cli.exists():
    rates = []
    for _ in range(5):
        err = subprocess.run([str(cli), "--prompt", "Once upon a time", "--seed", "1", "--max-tokens", str(TOKENS),
                              "--ignore-eos"], capture_output=True, text=True, check=True).stderr
        rates.append(float(re.search(r"generated: \d+ tokens in [\d.]+ ms \((\d+) tok/s\)", err).group(1)))
    print(f"flashlm-infer CLI:     {max(rates):8.0f} tok/s")
