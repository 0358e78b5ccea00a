#!/usr/bin/env python3
"""Report Rust files over a line limit and functions over a line limit (outside tests).

    scripts/check-sizes.py [--max-file 700] [--max-fn 120] [--top N] [--check]

Reads every `*.rs` under crates/ (not fuzz/). A function is counted from its `fn` line to the
line of its closing brace; code after a `#[cfg(test)]` module start and files under `tests/`,
`benches/` and `examples/` are test code and not counted for functions. With `--check` it
exits 1 when anything is over a limit; without it, it prints the largest files and functions.
"""
import argparse
import pathlib
import re
import sys

FN = re.compile(r'^\s*(pub(\([a-z]+\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+"C"\s+)?fn\s+(\w+)')


def strip(line):
    """The line without string/char literals and // comments (enough for brace counting)."""
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split("//", 1)[0]


def functions(path):
    """(name, first line, length) of every non-test function in the file."""
    lines = path.read_text().splitlines()
    out, stack, depth, in_test = [], [], 0, None
    for i, raw in enumerate(lines, 1):
        line = strip(raw)
        if in_test is None and re.match(r'\s*#\[cfg\(test\)\]', raw):
            in_test = depth  # the next item at this depth is test code
        m = FN.match(line)
        if m and in_test is None and ("{" in line or not line.rstrip().endswith(";")):
            stack.append((m.group(7), i, depth))
        depth += line.count("{") - line.count("}")
        while stack and depth <= stack[-1][2] and ("}" in line or line.rstrip().endswith(";")):
            name, start, _ = stack.pop()
            out.append((name, start, i - start + 1))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-file", type=int, default=700)
    ap.add_argument("--max-fn", type=int, default=120)
    ap.add_argument("--top", type=int, default=8)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    root = pathlib.Path(__file__).resolve().parent.parent
    files = sorted((root / "crates").rglob("*.rs"))
    sizes, fns = [], []
    for f in files:
        rel = f.relative_to(root)
        sizes.append((len(f.read_text().splitlines()), str(rel)))
        if not any(p in ("tests", "benches", "examples") for p in rel.parts):
            fns += [(n, str(rel), s, name) for name, s, n in functions(f)]
    sizes.sort(reverse=True)
    fns.sort(reverse=True)
    big_files = [s for s in sizes if s[0] > a.max_file]
    big_fns = [f for f in fns if f[0] > a.max_fn]
    if a.check:
        for n, p in big_files:
            print(f"{p}: {n} lines (limit {a.max_file})")
        for n, p, s, name in big_fns:
            print(f"{p}:{s} fn {name}: {n} lines (limit {a.max_fn})")
        if big_files or big_fns:
            sys.exit(1)
        print(f"{len(sizes)} files, {len(fns)} functions: none over {a.max_file} / {a.max_fn} lines")
        return
    print(f"largest files ({len(sizes)} .rs files, {len(big_files)} over {a.max_file} lines):")
    for n, p in sizes[: a.top]:
        print(f"  {n:5} {p}")
    print(f"largest functions outside tests ({len(fns)}, {len(big_fns)} over {a.max_fn} lines):")
    for n, p, s, name in fns[: a.top]:
        print(f"  {n:5} {p}:{s} {name}")


if __name__ == "__main__":
    main()
