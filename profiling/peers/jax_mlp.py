#!/usr/bin/env python3
"""The JAX peer of mnist-cuda's default run, for profiling/compare.sh.

Same model, data and schedule as `mnist train` and torch_mlp.py: 784-512-512-10, ReLU, dropout
0.2 after each hidden layer, Kaiming-uniform weights for ReLU (U(+-sqrt(6/fan_in))) and zero
biases, softmax cross-entropy, Adam lr 1e-3 (betas 0.9/0.999, eps 1e-8; optax.adam when optax is
installed, else the same update written out below), batch 128 with the last partial batch
trained on, the training split without its last 6,000 images, inputs x / 255. With --model cnn,
`mnist train --model cnn`'s network (torch_mlp.py --model cnn's): conv 5x5 32 ('SAME', pad 2) ->
ReLU -> max-pool 2 -> conv 5x5 64 -> ReLU -> max-pool 2 -> dense 1024 -> ReLU -> dropout 0.5 ->
dense 10, NHWC (lax.conv_general_dilated, lax.reduce_window), Kaiming-uniform over
fan_in = k*k*C_in for the convolutions. The data is read from the IDX files with gzip and numpy
and put on the GPU once.

One epoch is one jit-compiled call: a permutation drawn on the device, one gather, lax.scan
over the full batches, then the partial batch (its own shape, in the same compiled call).
Float32 matmuls and convolutions run at full fp32 (jax_default_matmul_precision "float32";
JAX's default would use TF32 on this GPU), or TF32 with --tf32, so the math matches
bench_train's (bench_cnn's).

One warm-up epoch (compilation happens there), then --epochs timed epochs, each timed like
bench_train's: host clock around the call and jax.block_until_ready on its results (JAX has no
events to record). Prints one line:

  RESULT system=jax ms_per_epoch=... images_per_s=... test_accuracy=... epochs=N ...
  (system=jax-cnn with --model cnn)

or, when jax, numpy, a GPU or the data is missing, RESULT system=jax error="..." and exit 1.
--device cpu only checks that the script runs; its timings mean nothing.
"""

import logging
import math
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mnist_data import DataError, fail, load_split, parse_peer_args, result_line  # noqa: E402

SYSTEM = "jax"  # "jax-cnn" with --model cnn


def parse_args():
    return parse_peer_args(__doc__.split("\n\n")[0], ("gpu", "cpu"))


def make_adam(jax, jnp, lr):
    """(init, update, name): update(grads, state, params) -> (params, state)."""
    try:
        import optax
    except ImportError:
        optax = None
    if optax is not None:
        opt = optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)

        def update(grads, state, params):
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        return opt.init, update, "optax"

    b1, b2, eps = 0.9, 0.999, 1e-8

    def init(params):
        # Separate buffers for m and v: the epoch donates the state, and one buffer cannot be
        # donated twice.
        m = jax.tree_util.tree_map(jnp.zeros_like, params)
        v = jax.tree_util.tree_map(jnp.zeros_like, params)
        return (m, v, jnp.zeros((), jnp.int32))

    def update(grads, state, params):
        m, v, t = state
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        m_scale = 1.0 / (1.0 - b1 ** t.astype(jnp.float32))  # bias corrections
        v_scale = 1.0 / (1.0 - b2 ** t.astype(jnp.float32))
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - lr * (m * m_scale) / (jnp.sqrt(v * v_scale) + eps), params, m, v)
        return params, (m, v, t)

    return init, update, "handwritten"


def he_uniform(jax, jnp, key, shape, fan_in):
    """U(+-sqrt(6/fan_in)): Kaiming uniform for ReLU, gain sqrt(2) * sqrt(3 / fan_in)."""
    bound = math.sqrt(6.0 / fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def run(args, np, jax):
    import jax.numpy as jnp
    from jax import lax

    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if args.tf32 else "float32")
    device = jax.devices(args.device)[0]

    train_x, train_y, test_x, test_y = load_split(args.data_dir, np, train_subset=args.train_subset)
    put = lambda a: jax.device_put(a, device)  # noqa: E731
    x_train = put(train_x.astype(np.float32) / 255.0)
    y_train = put(train_y.astype(np.int32))
    x_test = put(test_x.astype(np.float32) / 255.0)
    y_test = put(test_y.astype(np.int32))
    n, batch = int(x_train.shape[0]), args.batch_size
    if batch > n:
        raise ValueError(f"--batch-size {batch} is larger than the {n} training images")
    full_steps, rest = n // batch, n % batch
    p_drop = args.dropout

    key = jax.random.PRNGKey(args.seed)
    cnn = args.model == "cnn"
    # params: the convolutions' (HWIO kernel, bias) pairs first (CNN only), then the dense
    # layers' (weight [in, out], bias) pairs.
    params, convs = [], 0
    if cnn:
        (c1, c2), k = args.channels, args.kernel
        for c_in, c_out in ((1, c1), (c1, c2)):
            key, sub = jax.random.split(key)
            params.append((he_uniform(jax, jnp, sub, (k, k, c_in, c_out), k * k * c_in),
                           jnp.zeros((c_out,), jnp.float32)))
        convs = 2
        sizes = [c2 * 7 * 7] + args.hidden + [10]
    else:
        sizes = [int(x_train.shape[1])] + args.hidden + [10]
    for i in range(len(sizes) - 1):
        key, sub = jax.random.split(key)
        params.append((he_uniform(jax, jnp, sub, (sizes[i], sizes[i + 1]), sizes[i]),
                       jnp.zeros((sizes[i + 1],), jnp.float32)))
    # Everything the epoch takes is committed to the device, as its outputs are: jit's cache
    # tells committed arguments from uncommitted ones, so an uncommitted key or step counter in
    # the warm-up call would make the first timed epoch compile the epoch again.
    params = jax.device_put(params, device)
    adam_init, adam_update, adam_kind = make_adam(jax, jnp, args.lr)
    opt_state = jax.device_put(adam_init(params), device)
    key = jax.device_put(key, device)

    def features(conv_params, x):  # [N, 784] -> conv-ReLU-pool twice -> [N, 7*7*C2]
        h = x.reshape(x.shape[0], 28, 28, 1)
        for w, b in conv_params:
            h = lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            h = jax.nn.relu(h + b)
            h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        return h.reshape(h.shape[0], -1)

    def forward(params, x, key, train):
        h = features(params[:convs], x) if convs else x
        for w, b in params[convs:-1]:
            h = jax.nn.relu(h @ w + b)
            if train and p_drop > 0:
                key, sub = jax.random.split(key)
                keep = jax.random.bernoulli(sub, 1.0 - p_drop, h.shape)
                h = jnp.where(keep, h / (1.0 - p_drop), 0.0)
        w, b = params[-1]
        return h @ w + b

    def loss_fn(params, x, y, key):
        logits = forward(params, x, key, True)
        log_p = jax.nn.log_softmax(logits)
        loss = -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=1))
        return loss, logits

    def step(carry, xy):
        params, opt_state, key, loss_sum, correct = carry
        x, y = xy
        key, sub = jax.random.split(key)
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y, sub)
        params, opt_state = adam_update(grads, opt_state, params)
        loss_sum = loss_sum + loss * x.shape[0]
        correct = correct + jnp.sum(jnp.argmax(logits, axis=1) == y)
        return (params, opt_state, key, loss_sum, correct), None

    def epoch(params, opt_state, key, x_train, y_train):
        key, perm_key = jax.random.split(key)
        perm = jax.random.permutation(perm_key, n)
        xs, ys = x_train[perm], y_train[perm]
        carry = (params, opt_state, key, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
        cut = full_steps * batch
        carry, _ = lax.scan(step, carry, (xs[:cut].reshape(full_steps, batch, -1), ys[:cut].reshape(full_steps, batch)))
        if rest:
            carry, _ = step(carry, (xs[cut:], ys[cut:]))
        return carry

    train_epoch = jax.jit(epoch, donate_argnums=(0, 1))

    @jax.jit
    def test_correct(params, x, y):
        return jnp.sum(jnp.argmax(forward(params, x, None, False), axis=1) == y)

    def timed_epoch(params, opt_state, key):
        jax.block_until_ready((params, opt_state))
        t0 = time.perf_counter()
        params, opt_state, key, loss_sum, correct = train_epoch(params, opt_state, key, x_train, y_train)
        loss_sum, correct = float(loss_sum), int(correct)  # the epoch's results on the host
        jax.block_until_ready((params, opt_state))
        wall = (time.perf_counter() - t0) * 1e3
        return params, opt_state, key, wall, loss_sum / n

    params, opt_state, key, warmup_ms, _ = timed_epoch(params, opt_state, key)
    wall, last_loss = [], float("nan")
    for _ in range(args.epochs):
        params, opt_state, key, ms, last_loss = timed_epoch(params, opt_state, key)
        wall.append(ms)

    correct = int(test_correct(params, x_test, y_test))  # warm-up (compiles)
    eval_ms = []
    for _ in range(args.eval_repeats):
        t0 = time.perf_counter()
        correct = int(test_correct(params, x_test, y_test))
        eval_ms.append((time.perf_counter() - t0) * 1e3)

    ms = statistics.median(wall)
    return result_line(
        SYSTEM + ("-cnn" if cnn else ""),
        ms_per_epoch=ms,
        images_per_s=n / (ms * 1e-3),
        test_accuracy=correct / int(y_test.shape[0]),
        epochs=args.epochs,
        epochs_trained=args.epochs + 1,
        ms_per_epoch_min=min(wall),
        ms_per_epoch_max=max(wall),
        warmup_ms=warmup_ms,
        eval_ms=statistics.median(eval_ms),
        last_train_loss=last_loss,
        train_images=n,
        model=args.model,
        math="tf32" if args.tf32 else "fp32",
        adam=adam_kind,
        jax=jax.__version__,
        gpu=getattr(device, "device_kind", str(device)),
    )


def main():
    args = parse_args()
    system = SYSTEM + ("-cnn" if args.model == "cnn" else "")
    # Keep JAX's start-up chatter (no GPU backend, falling back to the CPU) off the one line.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("jax", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import numpy as np
    except ImportError:
        fail(system, "numpy not installed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import jax
    except ImportError:
        fail(system, "jax not installed")
    except Exception as error:  # a broken install: still one line
        fail(system, f"jax failed to import: {type(error).__name__}: {error}")
    try:
        jax.devices(args.device)
    except Exception:
        if args.device == "gpu":
            fail(system, f"no GPU visible to jax {jax.__version__} (is a CUDA-enabled jaxlib installed?)")
        raise
    try:
        line = run(args, np, jax)
    except DataError as error:
        fail(system, f"data error: {error}")
    except Exception as error:
        fail(system, f"{type(error).__name__}: {error}")
    print(line, flush=True)


if __name__ == "__main__":
    main()
