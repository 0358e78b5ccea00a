#!/usr/bin/env python3
"""Train the original PyTorch FlashLM v4 on exactly what flashlm-train trains on: the initial
weights and token batches written by `cargo run --release -p flashlm-train --example
train_setup`, the same AdamW (0.9, 0.95, eps 1e-8, wd 0.01), global-norm clipping at 1.0 and
the same LR schedule (linear warmup, cosine).

usage: train_reference.py SETUP_DIR THREADS [JSON_OUT]
prints `step <i> loss <x>` for every step, then
`reference tok_s <x> steps <n> peak_rss_kb <k>` (tokens/s over the steps after the first 3);
with JSON_OUT, also writes those figures and every loss there as one JSON object.
"""
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flashlm_v4 import get_lr, load_setup  # noqa: E402


def main():
    d, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    s, model, opt = load_setup(d)
    c, b, steps, lr = s["config"], s["batch"], s["steps"], s["lr"]
    t = c["seq_len"]
    data = np.fromfile(os.path.join(d, "batches.bin"), dtype="<u2").astype(np.int64)
    data = torch.from_numpy(data.reshape(steps, b, 2, t))
    times, losses = [], []
    for i in range(steps):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = get_lr(i, lr["total"], lr["warmup"], lr["peak"], lr["min"])
        x, y = data[i, :, 0], data[i, :, 1]
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
        print(f"step {i + 1} loss {loss.item():.6f}", flush=True)
    timed = times[3:] if len(times) > 3 else times
    tok_s = len(timed) * b * t / sum(timed)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"reference tok_s {tok_s:.0f} steps {len(timed)} peak_rss_kb {rss}")
    if len(sys.argv) > 3:
        with open(sys.argv[3], "w") as f:
            out = {"tok_s": round(tok_s), "steps": len(timed), "peak_rss_kb": rss, "losses": losses}
            out["torch"] = f"{torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}"
            json.dump(out, f)


if __name__ == "__main__":
    assert math.isfinite(1.0)
    main()
