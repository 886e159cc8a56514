"""Shared by the `mnist serve` tests: a small trained model, a server on a free port, MNIST test
digits as PNG bytes. The tests run from the source directory (data/mnist)."""
import gzip
import os
import select
import signal
import struct
import subprocess
import tempfile
import time
import zlib

BINARY = os.environ.get("MNIST_BINARY", os.path.join(os.path.dirname(__file__), "..", "build", "mnist"))


def train_model(directory):
    """A 784-256-10 MLP, 3 epochs with affine augmentation (about 97% on the test set)."""
    out = os.path.join(directory, "model")
    subprocess.run([BINARY, "train", "--device", "cpu", "--epochs", "3", "--hidden", "256", "--augment", "affine",
                    "--seed", "1", "--no-report", "--out", out], check=True, capture_output=True)
    return os.path.join(out, "best.ckpt")


class Server:
    """`mnist serve --port 0` in the background; .url once it has said where it listens."""

    def __init__(self, model, *options):
        self.process = subprocess.Popen([BINARY, "serve", "--model", model, "--port", "0", *options],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = b""
        deadline = time.monotonic() + 30
        while not line.endswith(b"\n"):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.process.kill()
                raise AssertionError(f"mnist serve did not start: {line!r} {self.process.stderr.read()!r}")
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                line += os.read(self.process.stdout.fileno(), 1)
        self.first_line = line.decode()
        self.port = int(self.first_line.rsplit(":", 1)[1].split("/")[0])
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        """SIGTERM; returns (exit status, stderr)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            _, stderr = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, stderr = self.process.communicate()
        return self.process.returncode, stderr.decode(errors="replace")


def mnist_test_digits(count):
    """The first `count` MNIST test images (784 bytes each) and their labels."""
    with gzip.open("data/mnist/t10k-images-idx3-ubyte.gz", "rb") as file:
        magic, total, rows, cols = struct.unpack(">IIII", file.read(16))
        assert (magic, rows, cols) == (2051, 28, 28)
        images = [file.read(784) for _ in range(count)]
    with gzip.open("data/mnist/t10k-labels-idx1-ubyte.gz", "rb") as file:
        file.read(8)
        labels = list(file.read(count))
    return images, labels


def png_bytes(pixels, width=28, height=28):
    """An 8-bit grayscale PNG of row-major pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + bytes(pixels[y * width:(y + 1) * width]) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def temporary_directory():
    return tempfile.TemporaryDirectory(prefix="mnist-serve-")
