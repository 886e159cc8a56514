#!/usr/bin/env python3
"""Whether training runs that must be identical wrote the same metrics.

    profiling/same_metrics.py FIRST OTHER...

Each file is a run's metrics.jsonl, one JSON object per epoch. Every OTHER must match FIRST
line by line in every field but "seconds" (wall time differs from run to run; the losses and
accuracies of a deterministic trainer do not). Exit 0 with one line saying how many epochs
agree; 1 with one line naming the first differing line (file, line number, both lines); 2 when
a file cannot be read. gpu_session.sh runs it on the default `mnist train` run with seed 1
twice and with --no-graph; profiling/test_gpu_session.sh runs it on made-up files.
"""
import json
import sys

IGNORED = ("seconds",)


def comparable(line):
    """The line without its ignored fields: a dict for a JSON object, else the text itself."""
    try:
        record = json.loads(line)
    except ValueError:
        return line.rstrip("\n")
    if isinstance(record, dict):
        for key in IGNORED:
            record.pop(key, None)
    return record


def first_difference(first, other):
    """(line number, first's line, other's line) of the first line that differs, or None."""
    with open(first, encoding="utf-8") as a, open(other, encoding="utf-8") as b:
        lines_a, lines_b = a.read().splitlines(), b.read().splitlines()
    for number in range(max(len(lines_a), len(lines_b))):
        line_a = lines_a[number] if number < len(lines_a) else "(no such line)"
        line_b = lines_b[number] if number < len(lines_b) else "(no such line)"
        if number >= len(lines_a) or number >= len(lines_b) or comparable(line_a) != comparable(line_b):
            return number + 1, line_a, line_b
    return None


def main(argv):
    if len(argv) < 3:
        print("usage: same_metrics.py FIRST OTHER...", file=sys.stderr)
        return 2
    first = argv[1]
    try:
        for other in argv[2:]:
            difference = first_difference(first, other)
            if difference:
                number, line_a, line_b = difference
                print(f"{other} line {number} differs from {first}: {line_b} (against {line_a})")
                return 1
        with open(first, encoding="utf-8") as a:
            epochs = len(a.read().splitlines())
    except OSError as error:
        print(f"metrics not readable: {error}")
        return 2
    if epochs == 0:  # runs that all ended before their first epoch agree on nothing
        print(f"{first} has no lines")
        return 1
    print(f"{len(argv) - 1} files agree in all {epochs} lines but for {', '.join(IGNORED)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
