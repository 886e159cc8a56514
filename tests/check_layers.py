#!/usr/bin/env python3
"""Fails when a source includes a layer above its own (docs/design.md: each layer includes only
the layers below it). The layer of a file is its folder: host/X/ and include/mnist/X/, with
kernels/ and include/mnist/ops/ the ops."""
import glob
import os
import re
import sys

ORDER = ["core", "ops", "data", "model", "optim", "io", "train", "cli"]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def layer_of(path):
    parts = path.split("/")
    if parts[0] == "kernels":
        return "ops"
    if parts[0] == "host" and len(parts) > 2:
        return parts[1]
    if parts[:2] == ["include", "mnist"] and len(parts) > 3:
        return parts[2]
    return None


def main():
    os.chdir(ROOT)
    files = sorted(glob.glob("host/**/*.*", recursive=True) + glob.glob("include/mnist/**/*.*", recursive=True) +
                   glob.glob("kernels/*.*"))
    problems, unplaced = [], []
    for path in files:
        if not path.endswith((".h", ".cuh", ".cpp", ".cu")):
            continue
        layer = layer_of(path)
        if layer not in ORDER:
            unplaced.append(path)
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, 1):
                m = re.match(r'\s*#\s*include\s+"mnist/([a-z_]+)/', line)
                if m and m.group(1) in ORDER and ORDER.index(m.group(1)) > ORDER.index(layer):
                    problems.append(f"{path}:{number}: the {layer} layer includes the {m.group(1)} layer above it")
                elif re.match(r'\s*#\s*include\s+"mnist/[a-z_]+\.h"', line):
                    problems.append(f"{path}:{number}: includes a header outside every layer folder")
    for path in unplaced:
        problems.append(f"{path}: in no layer folder ({', '.join(ORDER)})")
    for problem in problems:
        print(problem)
    print(f"{len(files)} files, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
