"""Seconds per whole training epoch of `keras-vae train`, split into its parts.

    python benchmarks/epoch_speed.py --prior vamp --architecture hvae [--epochs 3]
        [--repo PATH] [--threads 1] [-- <more train flags>]

Runs the real `train` command's code (`training.train`, `--protocol vampprior`:
50k training and 10k validation images, batch 100, 2000 epochs) with one
timing callback added after all of its own, and stops after `--epochs`
epochs, before the test record and the run's files. For every epoch after the first (which
traces the graphs) it records, from the callback hooks:
- the training pass: first batch begin -> last batch end;
- validation: test begin -> test end;
- the rest: everything else between one epoch's start and the next (the
  callbacks' epoch-end work: TensorBoard pictures, logs, the backup).
Prints one JSON line with the medians and the CPU, threads and precision.

`--repo` runs another checkout's package (e.g. a `git worktree` of the code
before a change): `benchmarks/before_after.py` alternates two of them.
`--threads 1` pins the process to CPU 0 and sets one intra- and one inter-op
thread; `--threads 2` leaves TensorFlow's defaults on a 2-core machine.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cli_startup import cpu_model  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(__file__)))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--architecture", default="gated_mlp")
    parser.add_argument("--prior", default="standard_normal")
    parser.add_argument("--threads", type=int, choices=(1, 2), default=2)
    parser.add_argument("--mixed-precision", default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("extra", nargs="*", help="more `train` flags, after --")
    return parser.parse_args()


def main():
    args = parse_args()
    if args.threads == 1:
        os.sched_setaffinity(0, {0})
        os.environ["TF_NUM_INTRAOP_THREADS"] = os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.abspath(args.repo))

    import keras

    from keras_vae import config as config_lib
    from keras_vae import training
    from keras_vae.cli import train as train_command

    class Stop(Exception):
        pass

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch_starts, self.passes, self.validations = [], [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_starts.append(time.perf_counter())
            self.pass_start = None

        def on_train_batch_begin(self, batch, logs=None):
            if self.pass_start is None:
                self.pass_start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.pass_end = time.perf_counter()

        def on_test_begin(self, logs=None):
            self.test_start = time.perf_counter()

        def on_test_end(self, logs=None):
            self.validations.append(time.perf_counter() - self.test_start)

        def on_epoch_end(self, epoch, logs=None):
            self.passes.append(self.pass_end - self.pass_start)
            if epoch + 1 == args.epochs:
                self.epoch_starts.append(time.perf_counter())
                raise Stop

    timer = EpochTimer()
    own_callbacks = training._callbacks
    training._callbacks = lambda run: [*own_callbacks(run), timer]
    out = tempfile.mkdtemp(prefix="epoch_speed_")
    flags = [
        "--protocol", "vampprior", "--architecture", args.architecture,
        "--prior", args.prior, "--mixed-precision", args.mixed_precision,
        "--seed", str(args.seed), "--no-export",
        "--iw-samples", "0", "--output-dir", os.path.join(out, "run"), *args.extra,
    ]  # fmt: skip
    if args.prior == "vamp":
        flags += ["--prior-components", "500"]
    given = vars(train_command.build_parser().parse_args(flags))
    given.pop("verbose", None)
    config = config_lib.config_from_flags(given)
    try:
        training.train(config)
    except Stop:
        pass
    finally:
        shutil.rmtree(out, ignore_errors=True)
    starts = timer.epoch_starts
    epochs = [b - a for a, b in zip(starts, starts[1:], strict=False)][1:]
    passes, validations = timer.passes[1:], timer.validations[1:]
    epoch = statistics.median(epochs)
    train_pass = statistics.median(passes)
    validation = statistics.median(validations)
    print(
        json.dumps(
            {
                "repo": os.path.abspath(args.repo),
                "architecture": args.architecture,
                "prior": args.prior,
                "threads": args.threads,
                "precision": args.mixed_precision,
                "cpu": cpu_model(),
                "epoch_seconds": round(epoch, 2),
                "pass_seconds": round(train_pass, 2),
                "validation_seconds": round(validation, 2),
                "rest_seconds": round(epoch - train_pass - validation, 2),
                "around_pass_fraction": round(1 - train_pass / epoch, 3),
                "pass_examples_per_second": round(50_000 / train_pass),
                "timed_epochs": len(epochs),
            }
        )
    )


if __name__ == "__main__":
    main()
