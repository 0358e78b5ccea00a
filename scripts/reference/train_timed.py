#!/usr/bin/env python3
"""Train the original PyTorch FlashLM v4 for a fixed wall time, as `flashlm-train --minutes M
--lr-schedule time --snapshot-minutes S` does: the same initial weights and token batches
(from `train_setup`), AdamW (0.9, 0.95, eps 1e-8, wd 0.01), clipping at 1.0, linear warmup
over `warmup` steps, then a cosine over the time left, and a snapshot of the weights every
S minutes of training and at the end.

usage: train_timed.py SETUP_DIR THREADS MINUTES SNAPSHOT_MINUTES OUT_DIR [time|steps]
With `steps`, the LR follows the original's step schedule instead (warmup, then a cosine over
the planned steps of setup.json, as `flashlm-train --lr-schedule steps`), and training also
ends when those steps are done.
writes OUT_DIR/snap-NNN.safetensors (PyTorch names, head tied so left out) and
OUT_DIR/metrics.jsonl (`{"kind": "snapshot", "index", "step", "tokens", "elapsed_s", "path"}`).
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flashlm_v4 import get_lr, load_setup  # noqa: E402


def lr_at_time(step, warmup, secs, warmup_end, limit, peak, lr_min):
    """The same rule as flashlm_train::step::lr_at_time."""
    if warmup_end is None or step < warmup:
        return peak * min(step, warmup) / max(1, warmup)
    progress = min(1.0, max(0.0, (secs - warmup_end) / max(1e-9, limit - warmup_end)))
    return lr_min + 0.5 * (peak - lr_min) * (1 + math.cos(math.pi * progress))


def main():
    d, threads, minutes, snap_minutes, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    by_steps = len(sys.argv) > 6 and sys.argv[6] == "steps"
    torch.set_num_threads(threads)
    os.makedirs(out, exist_ok=True)
    s, model, opt = load_setup(d)
    c, b, steps, lr = s["config"], s["batch"], s["steps"], s["lr"]
    t = c["seq_len"]
    data = np.memmap(os.path.join(d, "batches.bin"), dtype="<u2", mode="r").reshape(steps, b, 2, t)
    metrics = open(os.path.join(out, "metrics.jsonl"), "w")
    limit, every = minutes * 60.0, snap_minutes * 60.0

    def snapshot(index, step, secs):
        path = os.path.join(out, f"snap-{index:03}.safetensors")
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k != "head.weight"}
        save_file(state, path)
        row = {"kind": "snapshot", "index": index, "step": step, "tokens": step * b * t, "elapsed_s": secs, "path": path}
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()

    warmup_end, taken, step, last_snap_step = None, 0, 0, -1
    start = time.perf_counter()
    while True:
        secs = time.perf_counter() - start
        if secs >= limit or (by_steps and step >= lr["total"]):
            break
        if step >= steps:
            sys.exit(f"train_timed.py: the {steps} prepared batches ran out after {secs:.0f} s; prepare more")
        if step >= lr["warmup"] and warmup_end is None:
            warmup_end = secs
        if by_steps:
            rate = get_lr(step, lr["total"], lr["warmup"], lr["peak"], lr["min"])
        else:
            rate = lr_at_time(step, lr["warmup"], secs, warmup_end, limit, lr["peak"], lr["min"])
        for g in opt.param_groups:
            g["lr"] = rate
        x = torch.from_numpy(data[step, :, 0].astype(np.int64))
        y = torch.from_numpy(data[step, :, 1].astype(np.int64))
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        secs = time.perf_counter() - start
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} lr {rate:.2e} {step * b * t / secs:.0f} tok/s", flush=True)
        if secs >= every * (taken + 1):
            taken += 1
            last_snap_step = step
            snapshot(taken, step, secs)
    secs = time.perf_counter() - start
    if step != last_snap_step:
        snapshot(taken + 1, step, secs)
    print(f"reference steps {step} tokens {step * b * t} secs {secs:.1f} tok_s {step * b * t / secs:.0f}")


if __name__ == "__main__":
    main()
