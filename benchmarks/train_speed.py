"""Training throughput and test negative ELBO after N epochs.

    python benchmarks/train_speed.py --epochs 5 --mixed-precision float32
    python benchmarks/train_speed.py --protocol vampprior --architecture hvae \
        --epochs 1 --train-split 'train[:10000]'

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

from keras_vae import data, runs, training  # noqa: E402
from keras_vae.choices import ARCHITECTURES, PRECISIONS, PRIORS  # noqa: E402
from keras_vae.config import PROTOCOLS, TrainConfig  # noqa: E402

WARMUP_STEPS = 20


class StepTimer(keras.callbacks.Callback):
    """Times the optimizer steps after the first `WARMUP_STEPS` (callbacks come
    once per `steps_per_execution` steps, so it counts the optimizer's steps)."""

    def __init__(self):
        super().__init__()
        self.start = None

    def on_train_batch_end(self, batch, logs=None):
        steps = int(self.model.optimizer.iterations)
        if self.start is None and steps >= WARMUP_STEPS:
            self.start, self.first_step = time.perf_counter(), steps

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start
        self.timed_steps = int(self.model.optimizer.iterations) - self.first_step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--mixed-precision", choices=PRECISIONS, default="float32")
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol", choices=tuple(PROTOCOLS), default="none")
    parser.add_argument("--architecture", choices=ARCHITECTURES)
    parser.add_argument("--prior", choices=PRIORS)
    parser.add_argument("--prior-components", type=int)
    parser.add_argument("--train-split", help="e.g. 'train[:10000]' for a shorter epoch")
    args = parser.parse_args()

    given = {
        name: value
        for name, value in vars(args).items()
        if value is not None and name in TrainConfig.__dataclass_fields__
    }
    # Flags beneath the protocol's (as train.py does); the benchmark's own defaults
    # only where the protocol is silent.
    protocol = PROTOCOLS[args.protocol]
    for name in ("batch_size", "latent_dim"):
        if name in protocol and parser.get_default(name) == given[name]:
            del given[name]
    config = TrainConfig.from_flags(
        **{**given, "num_images": 4, "early_stopping": 0, "validation_split": None}
    )
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.mixed_precision)
    datasets = data.load_datasets(config)
    train, test, info = datasets.train, datasets.test, datasets.info
    model = training.build_model(config, datasets.image_shape)
    timer = StepTimer()
    started = time.perf_counter()
    model.fit(
        train,
        epochs=config.epochs,
        steps_per_epoch=datasets.steps_per_epoch,
        callbacks=[timer],
        verbose=2,
        shuffle=False,
    )
    wall = time.perf_counter() - started
    test_metrics = model.evaluate(test, return_dict=True, verbose=0)
    rate = timer.timed_steps * config.batch_size / timer.seconds  # examples per second
    result = {
        "architecture": config.architecture,
        "prior": config.prior,
        "train_split": config.train_split,
        "threads": os.environ.get("TF_NUM_INTRAOP_THREADS", "default"),
        "precision": config.mixed_precision,
        "jit_compile": config.jit_compile,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "examples_per_second": round(rate, 1),
        "seconds_per_50k_epoch": round(50_000 / rate, 1),
        "train_wall_seconds": round(wall, 1),
        "test_negative_elbo_nats": round(float(test_metrics["loss"]), 2),
        "data_source": info.source,
        "versions": runs.versions(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
