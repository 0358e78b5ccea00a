#!/usr/bin/env python3
"""Write PyTorch checkpoints of the parity model, as the original FlashLM v4 saves them, for the
`flashlm-export --torch` tests.

usage: torch_fixture.py OUT_DIR
Reads tests/fixtures/parity/{weights.safetensors,batch.json} and writes to OUT_DIR:
  tiny.pt               {"model_state_dict": ..., "config": {...}, "step": 0} (tied head included)
  tiny-state-dict.pt    the bare state_dict (config to be inferred from the shapes)
  tiny.safetensors      the state_dict without the tied head
  tokenizer.json        an original-format tokenizer with 252 ids (PAD, UNK, BOS, EOS + 252)
Needs torch and safetensors (pip install torch safetensors).
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from flashlm_v4 import from_config  # noqa: E402


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    fx = os.path.join(here, "..", "..", "tests", "fixtures", "parity")
    c = json.load(open(os.path.join(fx, "batch.json")))["config"]
    model = from_config(c)
    model.load_state_dict(load_file(os.path.join(fx, "weights.safetensors")), strict=False)
    sd = model.state_dict()
    torch.save({"model_state_dict": sd, "config": c, "step": 0}, os.path.join(out, "tiny.pt"))
    torch.save(sd, os.path.join(out, "tiny-state-dict.pt"))
    save_file({k: v.contiguous() for k, v in sd.items() if k != "head.weight"}, os.path.join(out, "tiny.safetensors"))
    # GPT-2 ids 11, 18, 25, ... (any distinct ids work for the model; decoding uses their bytes).
    ids = [11 + 7 * i for i in range(c["vocab_size"] - 4)]
    # The original's layout: both maps are dicts, so JSON keys are strings.
    tok = {"vocab_size": c["vocab_size"], "id_to_base": {str(i + 4): b for i, b in enumerate(ids)},
           "base_to_id": {str(b): i + 4 for i, b in enumerate(ids)}}
    json.dump(tok, open(os.path.join(out, "tokenizer.json"), "w"))
    print("wrote", sorted(os.listdir(out)))


if __name__ == "__main__":
    main()
