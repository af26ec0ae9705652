"""Side by side: this package's training step against a plain Keras 3 VAE.

    python benchmarks/speed_vs_reference.py [--windows 5] [--steps 60]

In one process and in alternating windows of `--steps` steps, it trains
(a) the reference: the textbook Keras 3 VAE (the TensorFlow CVAE tutorial's
    architecture, `reduce_mean` losses in a custom `train_step`, numpy input,
    float32), written here, and
(b) `keras_vae.VAE` with the package's defaults (precision from `auto`) and
    its tf.data pipeline, in one `fit` call whose epochs are the windows (a
    callback runs a reference window after each), so that the pipeline is
    not rebuilt for every window,
on the same Fashion-MNIST images, batch and optimizer, and prints the median
examples/second of each, their ratio, the process's peak memory, the
measured float32/bfloat16 matmul rate of this machine, the model's FLOPs per
training example and the fraction of the hardware limit each achieves.
"""

import argparse
import json
import os
import platform
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from textbook_vae import ReferenceVAE  # noqa: E402

from keras_vae import data, precision  # noqa: E402
from keras_vae.vae import VAE  # noqa: E402


def training_flops_per_example(model) -> float:
    """2 x multiply-adds of conv/dense layers, forward, times 3 (forward + backward)."""
    macs = 0
    for net in (model.encoder, model.decoder):
        for layer in net.layers:
            if isinstance(layer, keras.layers.Conv2DTranspose):
                _, h, w, c_in = layer.input.shape
                k = layer.kernel_size[0] * layer.kernel_size[1]
                macs += h * w * k * c_in * layer.filters
            elif isinstance(layer, keras.layers.Conv2D):
                _, h, w, _ = layer.output.shape
                k = layer.kernel_size[0] * layer.kernel_size[1]
                macs += h * w * k * layer.input.shape[-1] * layer.filters
            elif isinstance(layer, keras.layers.Dense):
                macs += layer.input.shape[-1] * layer.units
    return 3 * 2 * macs


def matmul_rate(dtype, n=1024, seconds=2.0) -> float:
    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)
    f = tf.function(lambda x: tf.matmul(x, x))
    f(a).numpy()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        f(a).numpy()
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    batch = args.batch_size

    raw, _ = data.load("fashion_mnist", "train")
    images = np.concatenate([b.numpy() for b in data.pipeline(raw, 10_000)])  # (60000, 28, 28, 1)

    keras.utils.set_random_seed(0)
    reference = ReferenceVAE()
    reference.compile(keras.optimizers.Adam(1e-3))
    policy = precision.resolve("auto")
    keras.mixed_precision.set_global_policy(policy)
    package = VAE(latent_dim=16, seed=0)
    package.compile(keras.optimizers.Adam(1e-3))
    keras.mixed_precision.set_global_policy("float32")
    pipeline = data.pipeline(
        tf.data.Dataset.from_tensor_slices({"image": np.round(images * 255).astype(np.uint8)}),
        batch,
        shuffle=True,
        seed=0,
        repeat=True,
        drop_remainder=True,
    )

    rates = {"reference": [], "package": []}

    class EpochTimer(keras.callbacks.Callback):
        """Examples/s of each epoch, from its first step to its last (both
        models are timed alike: no fit start-up, no tracing)."""

        def __init__(self, on_window=None):
            super().__init__()
            self.rates, self.on_window = [], on_window

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.rates.append(args.steps * batch / (time.perf_counter() - self.start))
            if epoch and self.on_window:  # epoch 0 traces the step: not a window
                self.on_window()

    def reference_window():
        # The reference: numpy input to fit, as in the textbook; its second
        # epoch is the timed window.
        x = images[np.random.default_rng().integers(0, len(images), args.steps * batch)]
        timer = EpochTimer()
        reference.fit(x, batch_size=batch, epochs=2, verbose=0, shuffle=True, callbacks=[timer])
        rates["reference"].append(timer.rates[-1])

    # The package: one fit call whose epochs are the windows, so that its
    # input pipeline lives on as in training; a reference window runs after each.
    package_timer = EpochTimer(on_window=reference_window)
    package.fit(
        pipeline,
        steps_per_epoch=args.steps,
        epochs=args.windows + 1,
        verbose=0,
        callbacks=[package_timer],
    )
    rates["package"] = package_timer.rates[1:]
    median = {k: float(np.median(v)) for k, v in rates.items()}
    flops = training_flops_per_example(package)
    limits = {"float32": matmul_rate(tf.float32), "bfloat16": matmul_rate(tf.bfloat16)}
    package_limit = limits["bfloat16" if "bfloat16" in policy else "float32"]
    result = {
        "batch_size": batch,
        "windows": args.windows,
        "steps_per_window": args.steps,
        "reference_examples_per_second": round(median["reference"]),
        "package_examples_per_second": round(median["package"]),
        "ratio": round(median["package"] / median["reference"], 2),
        "package_precision": policy,
        "all_windows": {k: [round(r) for r in v] for k, v in rates.items()},
        "training_gflops_per_example": round(flops / 1e9, 4),
        "matmul_gflops_per_second": {k: round(v / 1e9, 1) for k, v in limits.items()},
        "reference_fraction_of_float32_limit": round(
            median["reference"] * flops / limits["float32"], 3
        ),
        "package_fraction_of_its_dtype_limit": round(median["package"] * flops / package_limit, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
