#!/usr/bin/env python3
"""Time the original PyTorch FlashLM v4 training step (forward + backward, optionally AdamW),
for comparison with `cargo run --release -p flashlm-train --example bench_step`.

usage: bench_step.py [BATCH=8] [THREADS=2] [small|large] [--adamw]
Random init, random tokens; 2 warm-up steps, then the mean of 5 timed steps.
"""
import sys
import time

import torch

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from flashlm_v4 import FlashLMv4  # noqa: E402

CONFIGS = {"small": (10000, 192, 6, 8, 512, 256), "large": (10000, 384, 8, 8, 1024, 512)}


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    batch = int(args[0]) if args else 8
    threads = int(args[1]) if len(args) > 1 else 2
    size = args[2] if len(args) > 2 else "small"
    adamw = "--adamw" in sys.argv
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    v, d, nb, k, h, t = CONFIGS[size]
    model = FlashLMv4(v, d, nb, k, h)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    x = torch.randint(0, v, (batch, t))
    y = torch.randint(0, v, (batch, t))

    def step():
        _, loss = model(x, y)
        loss.backward()
        if adamw:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    n = 5
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    dt = (time.perf_counter() - t0) / n
    what = "step (fwd+bwd+clip+AdamW)" if adamw else "step (fwd+bwd)"
    print(f"pytorch {what} {size} batch {batch}, {threads} threads: {dt * 1e3:.1f} ms/step, {batch * t / dt:.0f} tok/s")


if __name__ == "__main__":
    main()
