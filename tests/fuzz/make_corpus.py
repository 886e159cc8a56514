#!/usr/bin/env python3
"""Writes the starting corpus of the fuzz harnesses: tests/fuzz/corpus/{idx,checkpoint,image}/.

A few tiny valid files and a few damaged ones, so that the fuzzer starts from inputs that reach
deep into each parser. The files are committed; run this again only to change them:
    python3 tests/fuzz/make_corpus.py
Inputs a harness once failed on are committed beside these, not written here (they are
regression tests: image/png-chunk-type-line-break).
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
    """The version-1 layout of include/mnist/io/checkpoint.h, for a 784-hidden...-10 MLP, or with
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


def pgm_p5(pixels, maxval=255):
    return b"P5\n# a comment\n28 28\n%d\n" % maxval + bytes(pixels)


def pgm_p2(pixels, maxval=255):
    lines = (" ".join(str(p) for p in pixels[r * 28:(r + 1) * 28]) for r in range(28))
    return b"P2\n28 28 %d\n" % maxval + "\n".join(lines).encode() + b"\n"


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_rows(channels):
    """28 rows of a filter byte (0..4 in turn) and 28·channels samples."""
    return b"".join(bytes([y % 5]) + bytes((x * 3 + y * 5) % 256 for x in range(28 * channels)) for y in range(28))


def png(color, rows=None, width=28, height=28, depth=8, interlace=0, header_only=False):
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]
    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
    if not header_only:
        out += png_chunk(b"tEXt", b"Comment\0seed") + png_chunk(b"IDAT", zlib.compress(rows or png_rows(channels), 9))
    return out + png_chunk(b"IEND", b"")


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

    # Digit images: whole PGMs and PNGs of each colour type, headers of the kinds refused, and
    # bare filtered rows, which fuzz_image also wraps into a PNG (its first byte the colour type).
    pixels = [(i * 11) % 256 for i in range(PIXELS)]
    write("image", "pgm-p5", pgm_p5(pixels))
    write("image", "pgm-p2-maxval-15", pgm_p2([p % 16 for p in pixels], maxval=15))
    write("image", "pgm-p5-16-bit", pgm_p5(pixels, maxval=65535)[:40])
    write("image", "pgm-p5-truncated", pgm_p5(pixels)[:300])
    for color, name in ((0, "gray"), (2, "rgb"), (4, "gray-alpha"), (6, "rgba")):
        write("image", f"png-{name}", png(color))
        write("image", f"rows-{name}", bytes([color]) + png_rows({0: 1, 2: 3, 4: 2, 6: 4}[color]))
    write("image", "png-palette", png(3, header_only=True))
    write("image", "png-16-bit", png(0, depth=16, header_only=True))
    write("image", "png-interlaced", png(0, interlace=1, header_only=True))
    write("image", "png-27x28", png(0, width=27, header_only=True))
    write("image", "png-truncated", png(0)[:200])
    write("image", "netpbm-p6", b"P6\n28 28\n255\n")
    write("image", "jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
    # Whole files as image programs write them (Pillow, from Debian's python3-pil): JPEG baseline
    # and progressive, and the PNG kinds the hand-made writer above leaves out, at sizes other
    # than 28x28, a dark digit on light paper.
    import io
    from PIL import Image
    drawing = Image.frombytes("L", (28, 28), bytes(255 - p for p in pixels)).resize((56, 40))
    for name, options in (("jpeg-baseline", {"format": "JPEG", "quality": 90}),
                          ("jpeg-progressive", {"format": "JPEG", "quality": 75, "progressive": True}),
                          ("png-interlaced-56x40", {"format": "PNG", "interlace": 1}),
                          ("png-palette-56x40", {"format": "PNG", "palette": True}),
                          ("png-16-bit-56x40", {"format": "PNG", "wide": True})):
        image = drawing
        if options.pop("palette", False):
            image = drawing.convert("P")
        if options.pop("wide", False):
            image = drawing.convert("I;16")
        out = io.BytesIO()
        image.save(out, **options)
        write("image", name, out.getvalue())

if __name__ == "__main__":
    main()
