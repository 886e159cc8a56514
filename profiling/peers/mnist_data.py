"""MNIST for the peer scripts, read the way mnist-cuda reads it: the four IDX files in
data/mnist (raw or gzip'd, told apart by the gzip magic bytes, not the name) with gzip and numpy
only, and the same Keras-style split as `mnist train` (host/cli/train_command.cpp): the last
val_split of the 60,000 training images are held out for validation and never trained on.
Also the one output format that profiling/compare.sh reads."""

import argparse
import gzip
import math
import os
import struct
import sys

NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DataError(Exception):
    pass


def _read(path):
    with open(path, "rb") as f:
        data = f.read()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _find(data_dir, name):
    for candidate in (os.path.join(data_dir, name), os.path.join(data_dir, name + ".gz")):
        if os.path.isfile(candidate):
            return candidate
    raise DataError(f"{os.path.join(data_dir, name)}(.gz) not found; run data/fetch.sh mnist")


def load_idx(path, np):
    """An IDX array as uint8: images [count, 784], labels [count]."""
    data = _read(path)
    if len(data) < 8:
        raise DataError(f"{path}: too short for an IDX header")
    magic = struct.unpack(">I", data[:4])[0]
    if magic not in (0x00000803, 0x00000801):
        raise DataError(f"{path}: magic {magic:#010x} is not an IDX image or label file")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(dims):
        raise DataError(f"{path}: {body.size} bytes of data for dimensions {dims}")
    body = body.copy()  # writable: frameworks warn about read-only buffers
    return body.reshape(dims[0], -1) if ndim == 3 else body


def load_split(data_dir, np, val_split=0.1, train_subset=0):
    """(train_x, train_y, test_x, test_y) as uint8 numpy arrays, split as `mnist train` does."""
    train_x = load_idx(_find(data_dir, NAMES["train_images"]), np)
    train_y = load_idx(_find(data_dir, NAMES["train_labels"]), np)
    test_x = load_idx(_find(data_dir, NAMES["test_images"]), np)
    test_y = load_idx(_find(data_dir, NAMES["test_labels"]), np)
    total = train_y.shape[0]
    validation = int(math.floor(total * val_split + 0.5))  # std::lround
    train = total - validation
    if train_subset > 0:
        train = min(train, train_subset)
    return train_x[:train], train_y[:train], test_x, test_y


def _field(value):
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.0f}"
    return str(value).replace(" ", "_")


def result_line(system, **fields):
    """RESULT system=<name> key=value ... : one line, values without spaces."""
    return " ".join(["RESULT", f"system={system}"] + [f"{k}={_field(v)}" for k, v in fields.items()])


def fail(system, message, code=1):
    """The one line a peer prints when it cannot run: RESULT system=<name> error="<why>"; exit."""
    text = " ".join(str(message).split()).replace('"', "'")
    if len(text) > 300:
        text = text[:297] + "..."
    print(f'RESULT system={system} error="{text}"', flush=True)
    sys.exit(code)


def parse_peer_args(description, devices, add_own=None):
    """The peers' shared command line: the model (mlp or cnn, with mnist train's defaults), the
    schedule and the data. devices[0] is the default --device; add_own(parser) adds a peer's own
    options. Exits with argparse's usage message when a value is impossible."""
    p = argparse.ArgumentParser(description=description)
    if add_own is not None:
        add_own(p)
    p.add_argument("--epochs", type=int, default=10, help="timed epochs, after one warm-up epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    p.add_argument("--hidden", default=None,
                   help="hidden layer widths, comma-separated (default 512,512); cnn: the dense width (1024)")
    p.add_argument("--dropout", type=float, default=None, help="default 0.2 (mlp), 0.5 (cnn)")
    p.add_argument("--channels", default="32,64", help="cnn: filters of the two convolutions")
    p.add_argument("--kernel", type=int, default=5, help="cnn: k x k convolutions (odd)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tf32", action="store_true", help="TF32 tensor-core matmuls (default: full fp32)")
    p.add_argument("--data-dir", default="data/mnist")
    p.add_argument("--train-subset", type=int, default=0, help="train on the first N training images only")
    p.add_argument("--eval-repeats", type=int, default=5)
    p.add_argument("--device", choices=devices, default=devices[0], help="cpu: only to check that the script runs")
    args = p.parse_args()
    if args.epochs < 1 or args.batch_size < 1 or args.eval_repeats < 1:
        p.error("--epochs, --batch-size and --eval-repeats must be at least 1")
    cnn = args.model == "cnn"
    if args.hidden is None:
        args.hidden = "1024" if cnn else "512,512"
    if args.dropout is None:
        args.dropout = 0.5 if cnn else 0.2
    args.hidden = [int(w) for w in args.hidden.split(",") if w.strip()]
    args.channels = [int(c) for c in args.channels.split(",") if c.strip()]
    if cnn and (len(args.hidden) != 1 or len(args.channels) != 2 or args.kernel % 2 == 0):
        p.error("--model cnn takes one --hidden width, two --channels and an odd --kernel")
    return args
