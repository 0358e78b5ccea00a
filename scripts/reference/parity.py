#!/usr/bin/env python3
"""Parity between flashlm-train (Rust/burn) and the original PyTorch FlashLM v4.

usage: parity.py DIR [--write-expected]
DIR holds weights.safetensors, batch.json and ours.safetensors, written by
    cargo run --release -p flashlm-train --example parity -- DIR
The script loads the same weights into the PyTorch model, runs the same batch, and compares
logits, loss, every gradient and the losses of the same AdamW steps (clip 1.0, the same LR
schedule). It prints the max abs difference of each and exits 1 if one exceeds 1e-4.
With --write-expected it also writes DIR/expected.safetensors, the fixture that the Rust
test `parity_with_pytorch_fixture` checks in CI without PyTorch.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flashlm_v4 import from_config, get_lr  # noqa: E402

TOL = 1e-4


def main():
    d = sys.argv[1]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    batch = json.load(open(os.path.join(d, "batch.json")))
    c = batch["config"]
    model = from_config(c)
    weights = load_file(os.path.join(d, "weights.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert missing == ["head.weight"] or not missing, missing  # tied to embedding.weight
    assert not unexpected, unexpected
    b, t = batch["batch"], c["seq_len"]
    x = torch.tensor(batch["tokens"], dtype=torch.long).reshape(b, t)
    y = torch.tensor(batch["targets"], dtype=torch.long).reshape(b, t)

    logits, loss = model(x, y)
    loss.backward()
    expected = {"logits": logits.detach().contiguous(), "loss": loss.detach().reshape(1)}
    for name, p in model.named_parameters():
        expected["grad." + name] = p.grad.detach().reshape(-1).contiguous()

    model.zero_grad()
    opt = torch.optim.AdamW(model.parameters(), lr=batch["lr"]["peak"], betas=tuple(batch["adamw"]["betas"]),
                            eps=batch["adamw"]["eps"], weight_decay=batch["adamw"]["weight_decay"])
    lr = batch["lr"]
    losses = []
    for step in range(batch["steps"]):
        _, l = model(x, y)
        losses.append(l.item())
        l.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), batch["clip"])
        for g in opt.param_groups:
            g["lr"] = get_lr(step, lr["total"], lr["warmup"], lr["peak"], lr["min"])
        opt.step()
        opt.zero_grad()
    expected["step_losses"] = torch.tensor(losses, dtype=torch.float32)

    if "--write-expected" in sys.argv:
        save_file(expected, os.path.join(d, "expected.safetensors"))

    ours_path = os.path.join(d, "ours.safetensors")
    if not os.path.exists(ours_path):
        print("no ours.safetensors: nothing to compare")
        return 0
    ours = load_file(ours_path)
    worst = 0.0
    for k, v in expected.items():
        if k not in ours:
            print(f"{k:45s} missing on the Rust side")
            worst = float("inf")
            continue
        diff = (ours[k].reshape(-1) - v.reshape(-1)).abs().max().item()
        worst = max(worst, diff)
        if k in ("logits", "loss", "step_losses") or diff > TOL:
            print(f"{k:45s} max abs diff {diff:.3e}")
    print(f"parity: worst max abs diff {worst:.3e} over {len(expected)} tensors "
          f"({'ok' if worst <= TOL else 'FAIL'}, tolerance {TOL})")
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
