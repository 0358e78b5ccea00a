#!/usr/bin/env python3
"""Build FlashLM v4's vocabulary from GPT-2 ids with the original's exact code path.

FlashLM v4's train.py does:
    counts = Counter(); for text in texts[:50000]: counts.update(enc.encode(text))
    most_common = counts.most_common(vocab_size - 4)   # our id = 4 + rank
This script reads the GPT-2 ids (one story per line, from the Rust example
`dump_gpt2_ids`, so no tiktoken download is needed here) and writes the resulting
id_to_base list and coverage as JSON. The Rust test `vocab_matches_python_counter`
compares flashlm's vocabulary build against the committed output.

usage: vocab_reference.py IDS.txt OUT.json [VOCAB_SIZE]
"""
import json
import sys
from collections import Counter


def main():
    ids_path, out_path = sys.argv[1], sys.argv[2]
    vocab_size = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    counts = Counter()
    texts = 0
    with open(ids_path) as f:
        for line in f:
            counts.update(int(t) for t in line.split())
            texts += 1
    most_common = counts.most_common(vocab_size - 4)
    coverage = sum(c for _, c in most_common) / sum(counts.values())
    with open(out_path, "w") as f:
        json.dump({
            "texts": texts,
            "vocab_size": vocab_size,
            "counted_tokens": sum(counts.values()),
            "coverage": coverage,
            "id_to_base": [b for b, _ in most_common],
        }, f)
    print(f"{texts} texts, {len(most_common)} ids kept, coverage {coverage*100:.4f}%")


if __name__ == "__main__":
    main()
