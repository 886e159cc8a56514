#!/usr/bin/env python3
"""The PyTorch peer of mnist-cuda's default run, for profiling/compare.sh.

Same model, data and schedule as `mnist train`: 784-512-512-10, ReLU, dropout 0.2 after each
hidden layer, Kaiming-uniform weights for ReLU (U(+-sqrt(6/fan_in))) and zero biases, softmax
cross-entropy, Adam lr 1e-3 (betas 0.9/0.999, eps 1e-8), batch 128 with the last partial batch
trained on, the training split without its last 6,000 images (the validation split), inputs
x / 255. With --model cnn, `mnist train --model cnn`'s network instead: conv 5x5 32 (pad 2) ->
ReLU -> max-pool 2 -> conv 5x5 64 -> ReLU -> max-pool 2 -> dense 1024 -> ReLU -> dropout 0.5 ->
dense 10, NCHW, the same initialisation (Kaiming-uniform over fan_in = C_in*k*k for the
convolutions), the rest as for the MLP. The data is read from the IDX files with gzip and numpy, moved to the GPU once, and
shuffled on the GPU every epoch (torch.randperm on the device, one gather per epoch; the batches
are views). No data loader.

  --mode eager    plain PyTorch, fused Adam (one kernel for all parameters) where available
  --mode compile  torch.compile(mode="reduce-overhead", dynamic=False) of forward + loss (its
                  backward is compiled with it; CUDA graphs where Inductor can use them), the
                  same fused Adam

One warm-up epoch (compilation happens there), then --epochs timed epochs. Each epoch is timed
like bench_train's: device synchronized, host clock, the epoch (shuffle, steps, and copying its
loss and accuracy to the host), device synchronized, host clock: ms_per_epoch is the median of
that. CUDA events around the same epoch give event_ms_per_epoch. Prints one line:

  RESULT system=torch-eager ms_per_epoch=... images_per_s=... test_accuracy=... epochs=N ...

or, when torch, numpy, a GPU or the data is missing, RESULT system=... error="..." and exit 1.
--device cpu only checks that the script runs; its timings mean nothing.
"""

import math
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_data import DataError, fail, load_split, parse_peer_args, result_line  # noqa: E402


def parse_args():
    return parse_peer_args(
        __doc__.split("\n\n")[0], ("cuda", "cpu"),
        lambda p: p.add_argument("--mode", choices=("eager", "compile"), default="eager"))


def make_adam(torch, params, lr, on_gpu):
    """torch.optim.Adam, fused (one kernel for every parameter) where this torch has it."""
    if on_gpu:
        try:
            return torch.optim.Adam(params, lr=lr, fused=True), "fused"
        except (TypeError, RuntimeError, ValueError):
            pass
    return torch.optim.Adam(params, lr=lr), "default"


def run(args, system, np, torch):
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32

    train_x, train_y, test_x, test_y = load_split(args.data_dir, np, train_subset=args.train_subset)
    x_train = torch.from_numpy(train_x).to(device).float().div_(255.0)
    y_train = torch.from_numpy(train_y).to(device).long()
    x_test = torch.from_numpy(test_x).to(device).float().div_(255.0)
    y_test = torch.from_numpy(test_y).to(device).long()
    n, batch = x_train.shape[0], args.batch_size
    if batch > n:
        raise ValueError(f"--batch-size {batch} is larger than the {n} training images")
    steps = math.ceil(n / batch)

    def he(layer):  # U(+-sqrt(6/fan_in)), zero bias: mnist's he_uniform_init
        nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)
        return layer

    if args.model == "cnn":
        (c1, c2), k, hidden = args.channels, args.kernel, args.hidden[0]
        model = nn.Sequential(
            nn.Unflatten(1, (1, 28, 28)),  # a batch [N, 784] is the NCHW tensor [N, 1, 28, 28]
            he(nn.Conv2d(1, c1, k, padding=k // 2)), nn.ReLU(), nn.MaxPool2d(2),
            he(nn.Conv2d(c1, c2, k, padding=k // 2)), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            he(nn.Linear(c2 * 7 * 7, hidden)), nn.ReLU(), nn.Dropout(args.dropout),
            he(nn.Linear(hidden, 10)),
        ).to(device)
    else:
        sizes = [x_train.shape[1]] + args.hidden + [10]
        layers = []
        for i in range(len(sizes) - 1):
            layers.append(he(nn.Linear(sizes[i], sizes[i + 1])))
            if i < len(sizes) - 2:
                layers += [nn.ReLU(), nn.Dropout(args.dropout)]
        model = nn.Sequential(*layers).to(device)
    optimizer, adam_kind = make_adam(torch, list(model.parameters()), args.lr, on_gpu)

    def forward_loss(x, y):
        logits = model(x)
        return F.cross_entropy(logits, y), (logits.argmax(dim=1) == y).sum()

    step_fn, mark_step = forward_loss, None
    if args.mode == "compile":
        step_fn = torch.compile(forward_loss, mode="reduce-overhead", dynamic=False)
        # Tells the CUDA-graph trees that a new training step starts (torch >= 2.1).
        mark_step = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)

    def train_epoch():
        """Enqueues one epoch; returns its (loss sum, correct) as one device tensor."""
        model.train()
        perm = torch.randperm(n, device=device)
        xs, ys = x_train[perm], y_train[perm]
        loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        for s in range(steps):
            x, y = xs[s * batch : (s + 1) * batch], ys[s * batch : (s + 1) * batch]
            if mark_step is not None:
                mark_step()
            optimizer.zero_grad(set_to_none=True)
            loss, hits = step_fn(x, y)
            loss.backward()
            optimizer.step()
            loss_sum.add_(loss.detach(), alpha=x.shape[0])
            correct.add_(hits)
        return torch.stack([loss_sum.double(), correct.double()])

    def sync():
        if on_gpu:
            torch.cuda.synchronize()

    def timed_epoch():
        """(wall ms, event ms or None, train loss, train accuracy)."""
        sync()
        events = None
        if on_gpu:
            events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        t0 = time.perf_counter()
        if events:
            events[0].record()
        totals = train_epoch()
        if events:
            events[1].record()
        loss_sum, correct = totals.tolist()  # the epoch's one synchronization
        sync()
        wall = (time.perf_counter() - t0) * 1e3
        return wall, events[0].elapsed_time(events[1]) if events else None, loss_sum / n, correct / n

    def evaluate():
        model.eval()
        with torch.no_grad():
            logits = model(x_test)
            return ((logits.argmax(dim=1) == y_test).sum().item()) / y_test.shape[0]

    warmup_ms, _, _, _ = timed_epoch()
    wall, event, last_loss = [], [], float("nan")
    for _ in range(args.epochs):
        w, e, last_loss, _ = timed_epoch()
        wall.append(w)
        if e is not None:
            event.append(e)

    test_accuracy = evaluate()  # warm-up
    eval_ms = []
    for _ in range(args.eval_repeats):
        sync()
        t0 = time.perf_counter()
        test_accuracy = evaluate()
        sync()
        eval_ms.append((time.perf_counter() - t0) * 1e3)

    ms = statistics.median(wall)
    fields = dict(
        ms_per_epoch=ms,
        images_per_s=n / (ms * 1e-3),
        test_accuracy=test_accuracy,
        epochs=args.epochs,
        epochs_trained=args.epochs + 1,
        event_ms_per_epoch=statistics.median(event) if event else "n/a",
        ms_per_epoch_min=min(wall),
        ms_per_epoch_max=max(wall),
        warmup_ms=warmup_ms,
        eval_ms=statistics.median(eval_ms),
        last_train_loss=last_loss,
        train_images=n,
        model=args.model,
        math="tf32" if args.tf32 else "fp32",
        adam=adam_kind,
        torch=torch.__version__,
        gpu=torch.cuda.get_device_name(device) if on_gpu else "cpu",
    )
    return result_line(system, **fields)


def main():
    args = parse_args()
    system = f"torch-{args.mode}" + ("-cnn" if args.model == "cnn" else "")
    try:
        import numpy as np
    except ImportError:
        fail(system, "numpy not installed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torch
    except ImportError:
        fail(system, "torch not installed")
    except Exception as error:  # a broken install: still one line
        fail(system, f"torch failed to import: {type(error).__name__}: {error}")
    if args.device == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        fail(system, f"no CUDA GPU visible to torch {torch.__version__} ({build})")
    if args.mode == "compile" and not hasattr(torch, "compile"):
        fail(system, f"torch.compile needs torch 2.0 or newer (this is {torch.__version__})")
    try:
        line = run(args, system, np, torch)
    except DataError as error:
        fail(system, f"data error: {error}")
    except Exception as error:
        fail(system, f"{type(error).__name__}: {error}")
    print(line, flush=True)


if __name__ == "__main__":
    main()
