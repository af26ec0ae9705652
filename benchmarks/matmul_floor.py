"""The floor of a training step: its matrix products alone, at the model's shapes.

    python benchmarks/matmul_floor.py [--architecture gated_mlp] [--prior vamp]
        [--batch-size 100] [--steps 200]

Builds the model `--protocol vampprior` describes (as `keras-vae train` would),
lists every dense kernel (`Dense` and `GatedDense`), and times, in one
`tf.function`, what a training step must multiply: each layer's forward
product `(batch x in) @ (in x out)` and its two backward products (the
input's and the kernel's gradients). A VampPrior also passes its pseudo-inputs
through the encoder each step. Prints the step's GFLOP, the seconds the
products alone take (the floor), the sgemm peak of this CPU (2048^3), and the
CPU and threads. Compare a training pass with it: `train_speed.py` prints
examples/s, so seconds per step = batch / examples_per_second.
"""

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_vae import networks, training  # noqa: E402
from keras_vae.config import TrainConfig  # noqa: E402


def kernels(network) -> list[tuple[int, int, int]]:
    """(in, out, times per step) of every dense product of a network."""
    found = []
    for layer in network._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, networks.GatedDense):
            fan_in, units = layer.kernel.shape
            found.append((int(fan_in), 2 * int(units), 1))  # the linear part and the gate
        elif isinstance(layer, keras.layers.Dense):
            fan_in, units = layer.kernel.shape
            found.append((int(fan_in), int(units), 1))
    return found


def timed(fn, steps: int) -> float:
    fn()  # trace
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def floor(shapes, rows: int, steps: int, learned_inputs: bool = False) -> tuple[float, float]:
    """(GFLOP per step, seconds per step) of the forward and backward products.

    The first kernel reads the images, whose gradient nothing needs, unless the
    inputs are learned (the VampPrior's pseudo-inputs).
    """
    operands = [
        (tf.random.normal((rows, k)), tf.random.normal((k, n)), tf.random.normal((rows, n)))
        for k, n, _ in shapes
    ]

    @tf.function
    def step():
        total = 0.0
        for i, (a, b, grad) in enumerate(operands):
            c = a @ b  # forward
            db = tf.transpose(a) @ grad  # the kernel's gradient
            total += tf.reduce_sum(c[:1, :1]) + db[0, 0]
            if i or learned_inputs:
                da = grad @ tf.transpose(b)  # the input's gradient
                total += tf.reduce_sum(da[:1, :1])
        return total

    flops = sum(
        (3 if i or learned_inputs else 2) * 2 * rows * k * n for i, (k, n, _) in enumerate(shapes)
    )
    return flops / 1e9, timed(lambda: step().numpy(), steps)


def sgemm_peak(size: int = 2048, steps: int = 10) -> float:
    a, b = tf.random.normal((size, size)), tf.random.normal((size, size))
    product = tf.function(lambda: tf.reduce_sum((a @ b)[:1, :1]))
    return 2 * size**3 / timed(lambda: product().numpy(), steps) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", default="gated_mlp", choices=["gated_mlp", "hvae"])
    parser.add_argument("--prior", default="standard_normal")
    parser.add_argument("--prior-components", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    flags = dict(protocol="vampprior", architecture=args.architecture, prior=args.prior)
    if args.prior == "vamp":
        flags["prior_components"] = args.prior_components
    config = TrainConfig.from_flags(**flags)
    model = training.build_model(config, (28, 28, 1), steps_per_epoch=500)
    shapes = kernels(model.encoder) + kernels(model.decoder)
    gflop, seconds = floor(shapes, args.batch_size, args.steps)
    if args.prior == "vamp":  # the pseudo-inputs pass through the encoder every step
        extra, extra_seconds = floor(
            kernels(model.encoder), args.prior_components, args.steps, learned_inputs=True
        )
        gflop, seconds = gflop + extra, seconds + extra_seconds
    peak = sgemm_peak()
    cpu = platform.processor() or "unknown"
    with open("/proc/cpuinfo") as f:
        cpu = next(
            (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu
        )
    threads = os.environ.get("TF_NUM_INTRAOP_THREADS", "default")
    print(f"CPU: {cpu}, {os.cpu_count()} cores, intra-op threads {threads}")
    print(
        f"{args.architecture} + {args.prior}, batch {args.batch_size}: {len(shapes)} dense kernels"
    )
    print(f"matrix products per step: {gflop * 1000:.0f} MFLOP")
    rate = gflop / seconds
    print(f"floor (the products alone): {seconds * 1000:.2f} ms per step, {rate:.0f} GFLOP/s")
    at_peak = gflop / peak * 1000
    print(f"sgemm peak, 2048^3: {peak:.0f} GFLOP/s; the step's products at it: {at_peak:.2f} ms")
    per_epoch = 50_000 / args.batch_size
    print(
        f"floor per 50k epoch: {seconds * per_epoch:.2f} s (peak: {gflop / peak * per_epoch:.2f} s)"
    )


if __name__ == "__main__":
    main()
