"""Training throughput and test negative ELBO after N epochs.

    python benchmarks/train_speed.py --epochs 5 --mixed-precision float32

Prints steady-state examples/second (every step after the first 20, which
include tracing), the test negative ELBO after `--epochs` epochs, and the
machine and versions. Uses the real Fashion-MNIST files (see the README).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

from keras_vae import inputs, runs, training  # noqa: E402
from keras_vae.choices import PRECISIONS  # noqa: E402
from keras_vae.config import TrainConfig  # noqa: E402

WARMUP_STEPS = 20


class StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.step, self.start, self.timed_steps = 0, None, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step == WARMUP_STEPS:
            self.start = time.perf_counter()
        elif self.step > WARMUP_STEPS:
            self.timed_steps += 1

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--mixed-precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        latent_dim=args.latent_dim,
        mixed_precision=args.mixed_precision,
        jit_compile=args.jit_compile,
        seed=args.seed,
        num_images=4,
    )
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.mixed_precision)
    datasets = inputs.load_datasets(config)
    train, test, info = datasets.train, datasets.test, datasets.info
    model = training.build_model(config, datasets.image_shape)
    timer = StepTimer()
    started = time.perf_counter()
    model.fit(train, epochs=config.epochs, callbacks=[timer], verbose=2, shuffle=False)
    wall = time.perf_counter() - started
    test_metrics = model.evaluate(test, return_dict=True, verbose=0)
    result = {
        "precision": config.mixed_precision,
        "jit_compile": config.jit_compile,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "examples_per_second": round(timer.timed_steps * config.batch_size / timer.seconds, 1),
        "train_wall_seconds": round(wall, 1),
        "test_negative_elbo_nats": round(float(test_metrics["loss"]), 2),
        "data_source": info.source,
        "versions": runs.versions(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
