#!/usr/bin/env python3
"""Time generation the way the original FlashLM v4 does it: for every new token the whole
window (up to seq_len tokens) is run through the PyTorch model again.

usage: generate_original.py MODEL.flm [TOKENS=256] [THREADS=1]
Reads the .flm (docs/FORMAT.md; f32, f16 or int8 embedding), puts its weights into
scripts/reference/flashlm_v4.py's model (ternary codes * alpha as the float weights; the model
re-quantises them, which keeps the ternary pattern), greedily generates TOKENS tokens after a
BOS and prints `original-style generate: <n> tokens, <us> us/token, <x> tok/s`.
Speed does not depend on the weights' values. Needs torch (pip install torch).
"""
import struct
import sys
import time

import numpy as np
import torch

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(__file__)))
from flashlm_v4 import FlashLMv4  # noqa: E402

KINDS = {0: "f32", 1: "f16", 2: "ternary", 3: "int8rows", 4: "u32", 5: "u8"}


def read_flm(path):
    b = open(path, "rb").read()
    assert b[:8] == b"FLASHLM\0", "not a .flm file"
    version, _hlen, vocab, dim, blocks, hidden, k, seq, _eps, _flags, n = struct.unpack_from("<8If2I", b, 8)
    assert version == 1, f"unknown .flm version {version}"
    tensors = {}
    for i in range(n):
        e = b[128 + 80 * i: 128 + 80 * (i + 1)]
        name = e[:36].rstrip(b"\0").decode()
        scale, kind, ndim = struct.unpack_from("<fII", e, 36)
        shape = struct.unpack_from("<4I", e, 48)[:ndim]
        off, ln = struct.unpack_from("<QQ", e, 64)
        data = b[off: off + ln]
        kind = KINDS[kind]
        count = int(np.prod(shape))
        if kind == "f32":
            t = np.frombuffer(data, "<f4").reshape(shape)
        elif kind == "f16":
            t = np.frombuffer(data, "<f2").astype(np.float32).reshape(shape)
        elif kind == "int8rows":
            q = np.frombuffer(data[:count], np.int8).astype(np.float32).reshape(shape)
            t = q * np.frombuffer(data[count:], "<f4")[:, None]
        elif kind == "ternary":
            codes = np.unpackbits(np.frombuffer(data, np.uint8)[:, None], axis=1, bitorder="little")
            codes = codes.reshape(-1, 4, 2)
            vals = (codes[:, :, 0] + 2 * codes[:, :, 1]).reshape(-1)[:count].astype(np.float32) - 1.0
            t = vals.reshape(shape) * scale
        else:
            continue
        tensors[name] = torch.from_numpy(np.array(t, dtype=np.float32))
    cfg = dict(vocab_size=vocab, dim=dim, n_blocks=blocks, glu_hidden=hidden, kernel_size=k, seq_len=seq)
    return cfg, tensors


def main():
    path = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    cfg, t = read_flm(path)
    model = FlashLMv4(cfg["vocab_size"], cfg["dim"], cfg["n_blocks"], cfg["kernel_size"], cfg["glu_hidden"])
    sd = {}
    for name, v in t.items():
        if name.endswith("conv.weight"):
            v = v.reshape(v.shape[0], 1, v.shape[1])
        sd[name] = v
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert set(missing) <= {"head.weight"} and not unexpected, (missing, unexpected)
    model.eval()
    ids = [2]
    with torch.no_grad():
        for _ in range(8):  # warm-up
            model(torch.tensor([ids[-cfg["seq_len"]:]]))
        t0 = time.perf_counter()
        for _ in range(n):
            logits = model(torch.tensor([ids[-cfg["seq_len"]:]]))
            ids.append(int(logits[0, -1].argmax()))
        dt = time.perf_counter() - t0
    print(f"original-style generate: {n} tokens, {dt / n * 1e6:.1f} us/token, {n / dt:.0f} tok/s "
          f"(d={cfg['dim']} blocks={cfg['n_blocks']} seq={cfg['seq_len']}, {torch.get_num_threads()} thread(s))")


if __name__ == "__main__":
    main()
