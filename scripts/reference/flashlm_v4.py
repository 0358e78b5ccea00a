"""FlashLM v4 "Bolt" in PyTorch, as published (train.py of the original project), for
parity and speed comparisons. Never part of the Rust build.

Architecture: embedding -> N x (x += mixer(norm1(x)); x += ffn(norm2(x))) -> final_norm ->
tied head. Ternary layers quantise with alpha = mean|W| and a straight-through estimator.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def ternary_quantize(w):
    alpha = w.abs().mean()
    w_t = ((w / (alpha + 1e-8)).round().clamp(-1, 1)) * alpha
    return w + (w_t - w).detach()


class BitLinear(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in) * 0.02)

    def forward(self, x):
        return F.linear(x, ternary_quantize(self.weight))


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.scale


class GatedConvMixer(nn.Module):
    def __init__(self, dim, kernel_size):
        super().__init__()
        self.up = BitLinear(dim, 2 * dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size - 1, groups=dim, bias=False)
        self.down = BitLinear(dim, dim)

    def forward(self, x):
        t = x.shape[1]
        gate, val = self.up(x).chunk(2, dim=-1)
        h = self.conv(val.transpose(1, 2))[:, :, :t].transpose(1, 2)
        return self.down(h * torch.sigmoid(gate))


class TernaryGLU(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.W_gate = BitLinear(dim, hidden)
        self.W_up = BitLinear(dim, hidden)
        self.W_down = BitLinear(hidden, dim)

    def forward(self, x):
        return self.W_down(F.silu(self.W_gate(x)) * self.W_up(x))


class BoltBlock(nn.Module):
    def __init__(self, dim, kernel_size, hidden):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.mixer = GatedConvMixer(dim, kernel_size)
        self.norm2 = RMSNorm(dim)
        self.ffn = TernaryGLU(dim, hidden)

    def forward(self, x):
        x = x + self.mixer(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class FlashLMv4(nn.Module):
    def __init__(self, vocab_size, dim, n_blocks, kernel_size, glu_hidden):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList([BoltBlock(dim, kernel_size, glu_hidden) for _ in range(n_blocks)])
        self.final_norm = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        self.head.weight = self.embedding.weight
        for m in self.modules():
            if isinstance(m, (BitLinear, nn.Conv1d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, x, targets=None):
        h = self.embedding(x)
        for b in self.blocks:
            h = b(h)
        logits = self.head(self.final_norm(h))
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def get_lr(step, total, warmup, peak, lr_min):
    if step < warmup:
        return peak * step / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr_min + 0.5 * (peak - lr_min) * (1 + math.cos(math.pi * progress))


def from_config(c):
    return FlashLMv4(c["vocab_size"], c["dim"], c["n_blocks"], c["kernel_size"], c["glu_hidden"])


def load_setup(d):
    """A `train_setup` folder: (setup dict, model holding its initial weights, AdamW as the
    original: betas 0.9/0.95, eps 1e-8, weight decay 0.01)."""
    import json
    import os

    from safetensors.torch import load_file

    s = json.load(open(os.path.join(d, "setup.json")))
    model = from_config(s["config"])
    missing, unexpected = model.load_state_dict(load_file(os.path.join(d, "init.safetensors")), strict=False)
    assert set(missing) <= {"head.weight"} and not unexpected, (missing, unexpected)
    opt = torch.optim.AdamW(model.parameters(), lr=s["lr"]["peak"], betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    return s, model, opt
