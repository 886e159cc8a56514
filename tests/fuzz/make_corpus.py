#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz harnesses: tests/fuzz/corpus/{idx,checkpoint}/.

A few tiny valid files and a few damaged ones, so that the fuzzer starts from inputs that reach
deep into each parser. The files are committed; run this again only to change them:
    python3 tests/fuzz/make_corpus.py
"""
import gzip
import json
import math
import pathlib
import struct
import zlib

HERE = pathlib.Path(__file__).resolve().parent
PIXELS = 28 * 28


def idx_images(count, rows=28, cols=28, magic=0x803):
    header = struct.pack(">IIII", magic, count, rows, cols)
    return header + bytes((i * 7) % 256 for i in range(count * rows * cols))


def idx_labels(labels, magic=0x801):
    return struct.pack(">II", magic, len(labels)) + bytes(labels)


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def checkpoint(hidden, best=0.5, config=None, version=1, kind=1, cnn=None):
    """The version-1 layout of include/mnist/checkpoint.h, for a 784-hidden...-10 MLP, or with
    cnn=(conv1 filters, conv2 filters, kernel) and kind=2 for the CNN of dense width hidden[0]."""
    if cnn is None:
        sizes = [PIXELS, *hidden, 10]
        params = sum(sizes[i] * sizes[i + 1] + sizes[i + 1] for i in range(len(sizes) - 1))
    else:
        (c1, c2, k), h = cnn, hidden[0]
        sizes = [1, 28, 28, c1, c2, k, h, 10]
        params = (c1 * k * k + c1) + (c2 * c1 * k * k + c2) + (c2 * 49 * h + h) + (h * 10 + 10)
    if config is None:
        config = {"model": "mlp" if cnn is None else "cnn", "hidden": hidden, "dropout": 0.2, "lr": 0.001,
                  "weight_decay": 0.0, "optimizer": "adam", "label_smoothing": 0.0, "batch_size": 128, "epochs": 2,
                  "val_split": 0.1, "seed": 1, "dataset": "mnist", "data_dir": "data/mnist", "device": "cpu",
                  "train_subset": 0, "drop_last": False, "graph": True, "tf32": False}
    text = json.dumps(config, separators=(",", ":")).encode()
    out = b"MNISTCKP" + struct.pack("<III", version, kind, len(sizes)) + struct.pack(f"<{len(sizes)}I", *sizes)
    out += struct.pack("<IQ", 0, params)
    for scale in (0.01, 0.001, 0.0001):  # parameters, Adam m, Adam v
        out += struct.pack(f"<{params}f", *((i % 13 - 6) * scale for i in range(params)))
    out += struct.pack("<qId", 42, 2, best)
    out += struct.pack("<I", len(text)) + text
    return out + struct.pack("<I", zlib.crc32(out))


def write(kind, name, data):
    path = HERE / "corpus" / kind / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def main():
    one = idx_images(1)
    write("idx", "images-1", one)
    write("idx", "images-0", idx_images(0))
    write("idx", "images-1.gz", gz(one))
    write("idx", "images-27x28", idx_images(1, rows=27))
    write("idx", "images-count-too-large", idx_images(1)[:-1])
    write("idx", "labels-5", idx_labels([0, 3, 9, 1, 7]))
    write("idx", "labels-5.gz", gz(idx_labels([0, 3, 9, 1, 7])))
    write("idx", "labels-out-of-range", idx_labels([1, 10]))
    write("idx", "labels-two-gzip-members", gz(idx_labels([2, 2])[:5]) + gz(idx_labels([2, 2])[5:]))
    write("idx", "labels-gzip-trailing-junk", gz(idx_labels([4])) + b"junk")
    write("idx", "labels-gzip-truncated", gz(idx_labels([5] * 40))[:20])

    # Two whole checkpoints (the smallest MLP, ~10 KB, and the smallest CNN); the rest are short:
    # the harness reseals every input's CRC, so damaged variants of the whole ones are one
    # mutation away.
    good = checkpoint([1])
    write("checkpoint", "mlp-784-1-10", good)
    write("checkpoint", "truncated-in-parameters", good[:100])
    write("checkpoint", "version-2-header", checkpoint([1], version=2)[:64])
    write("checkpoint", "cnn-kind-2-header", checkpoint([1], kind=2)[:64])
    write("checkpoint", "cnn-1-1-k1-dense1", checkpoint([1], kind=2, cnn=(1, 1, 1)))  # the smallest CNN
    write("checkpoint", "magic-only", good[:8])

if __name__ == "__main__":
    main()
