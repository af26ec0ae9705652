"""The command lines: flags first, TensorFlow after.

    python train.py ...                 keras-vae-train ...
    python -m keras_vae.evaluate ...    keras-vae-evaluate ...
    python -m keras_vae.visualize ...   keras-vae-visualize ...
    python -m keras_vae.generate ...    keras-vae-generate ...

Each parses its flags (and answers `--help`) with nothing heavier than
argparse loaded, then imports the package module that does the work. The
error boundary is here: a `UsageError` or an `OSError` ends the command with
exit code 2 and one line on stderr; any other exception keeps its
traceback, because it is a bug.
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_vae import choices, presets
from keras_vae import config as config_lib
from keras_vae.errors import UsageError

# Bounds of the evaluation flags (checked before any work).
MAX_IW_SAMPLES = 1_000_000
MAX_BATCH_SIZE = 100_000


def bounded_int(low: int, high: int | None = None):
    """An argparse `type`: an int in [low, high], with a message naming the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            upper = f" and <= {high:,}" if high is not None else ""
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}{upper}, got {value}")
        return value

    return parse


def prog_name(default: str) -> str:
    """The name `--help` shows: the console script's (`keras-vae-*`) when it
    started the process, else the repository form, e.g. `python train.py`."""
    name = os.path.basename(sys.argv[0]) if sys.argv else ""
    return name if name.startswith("keras-vae") else default


def run(work, *args) -> int:
    """Calls `work(*args)`; a user's mistake becomes exit 2 and one line."""
    try:
        work(*args)
    except (UsageError, OSError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


# --- train ------------------------------------------------------------------


def train(argv=None) -> int:
    parser = config_lib.build_parser(
        prog=prog_name("python train.py"),
        description="Train a VAE on a TFDS image dataset, a folder of images or an array "
        "file, and write the model, metrics, "
        "TensorBoard logs, pictures and exports to a run directory.",
    )

    def work():
        config = config_lib.parse_config(argv, parser)
        if config_lib.dataset_is_path(config.dataset):
            # Read and checked before TensorFlow loads: bad data fails at once.
            # The arrays are cached for the run in this process.
            from keras_vae import local_data  # numpy and PIL only

            local_data.load_local(
                config.dataset, config.image_size, config.channels, config.test_fraction
            )
        from keras_vae import training  # TensorFlow loads here, after the flags

        training.train(config)

    return run(work)


# --- evaluate ---------------------------------------------------------------


def evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name("python -m keras_vae.evaluate"),
        description="Importance-weighted evaluation of a finished run; results "
        "are printed and merged into its metrics.json under `evaluation` (the whole "
        "test split) or `evaluation_first_N` (the first N images).",
    )
    parser.add_argument("--model", required=True, help="A run directory written by train.py.")
    parser.add_argument(
        "--iw-samples",
        type=bounded_int(1, MAX_IW_SAMPLES),
        default=1000,
        help="K of the IW bound (default 1000; 5000 for tables). Cost: K decoder passes "
        "per image; K=1000 on the 10k Fashion-MNIST test images took 9.6 min for the "
        "default conv model on 2 CPU cores with bfloat16.",
    )
    parser.add_argument(
        "--batch-size",
        type=bounded_int(1, MAX_BATCH_SIZE),
        default=100,
        help="Images per batch (default 100).",
    )
    parser.add_argument(
        "--max-images",
        type=bounded_int(1),
        help="Evaluate only the first N test images (default: all).",
    )
    parser.add_argument(
        "--precision",
        choices=choices.PRECISIONS,
        default="auto",
        help="Dtype policy of the networks; `auto` is train.py's choice for this machine "
        "(mixed_bfloat16 on CPUs with native bfloat16, 1.4-1.5x float32's speed there). "
        "The distributions and the log-sum-exp are float32 either way.",
    )
    parser.add_argument(
        "--fid",
        action="store_true",
        help="Instead of the IW bound: sample quality. FID, precision and recall of "
        "--max-images (default 10,000) images from each sampler (prior, gmm) against "
        "as many test images, in the features of a small classifier trained once on the "
        "run's training split (a minute on 2 CPU cores; cached in the run directory). "
        "Merged into metrics.json under `sample_quality`.",
    )
    parser.add_argument(
        "--save-preset",
        metavar="DIR",
        help="Instead of the IW bound: write the run as a pretrained preset folder "
        "(config, weights, its GMM sampler if fitted, and metadata with the run's command, "
        "data and test figures, plus the IW bound with K=100 on the first 500 test images, "
        "float32) that keras_vae.VAE.from_preset(DIR) and --model DIR read.",
    )
    parser.add_argument(
        "--preset-weights",
        choices=choices.PRESET_WEIGHTS,
        default="float32",
        help="With --save-preset: how the weights file stores the weights (default "
        "float32). float16 halves the file; the model still computes in float32, and the "
        "recorded check figure is measured with the rounded weights (0.05 nats above "
        "float32's for the fashion_mnist_vampprior preset).",
    )
    return parser


def evaluate(argv=None) -> int:
    parser = evaluate_parser()
    args = parser.parse_args(argv)
    if args.preset_weights != "float32" and not args.save_preset:
        parser.error("--preset-weights applies only with --save-preset DIR; add it or drop it.")
    import json

    from keras_vae import evaluate as evaluate_lib  # TensorFlow loads here

    def work():
        if args.save_preset:
            metadata = evaluate_lib.save_run_preset(
                args.model, args.save_preset, args.preset_weights
            )
            print(f"Preset written to {args.save_preset}: {json.dumps(metadata['check'])}")
            return
        if args.fid:
            from keras_vae import quality

            result = quality.sample_quality(args.model, args.max_images or quality.DEFAULT_COUNT)
            print(json.dumps(result, indent=2))
            return
        result = evaluate_lib.evaluate_run(
            args.model, args.iw_samples, args.batch_size, args.max_images, args.precision
        )
        print(
            json.dumps(
                {k: v for k, v in result.items() if not k.startswith("kl_per_dim")}, indent=2
            )
        )

    return run(work)


# --- visualize --------------------------------------------------------------


def visualize_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name("python -m keras_vae.visualize"),
        description="Draw pictures of a trained model into its run directory and "
        "write report.html.",
    )
    parser.add_argument("--model", required=True, help="A run directory written by train.py.")
    parser.add_argument(
        "--pictures",
        nargs="+",
        choices=choices.PICTURES,
        default=list(choices.PICTURES),
        metavar="NAME",
        help=f"Any of {', '.join(choices.PICTURES)} (default: all).",
    )
    parser.add_argument(
        "--traversal-dims",
        type=bounded_int(1),
        default=8,
        help="Rows of the traversal picture (default 8).",
    )
    parser.add_argument(
        "--num-images", type=bounded_int(1), default=64, help="Images in the grids (default 64)."
    )
    parser.add_argument(
        "--shifted-dataset",
        help="A TFDS dataset with the same image shape to score against the test set "
        "(e.g. mnist for a Fashion-MNIST model); skipped if not available.",
    )
    return parser


def visualize(argv=None) -> int:
    args = visualize_parser().parse_args(argv)
    from keras_vae import visualize as visualize_lib  # TensorFlow loads here

    def work():
        data = visualize_lib.load_run_picture_data(
            args.model, args.num_images, args.traversal_dims, args.shifted_dataset
        )
        report = visualize_lib.update_run_pictures(data, args.model, args.pictures)
        print(f"Report: {report}")

    return run(work)


# --- generate ---------------------------------------------------------------


def positive_float(text: str) -> float:
    """An argparse `type`: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text}")
    return value


MAX_GENERATE = 100_000


PRESET_HELP = (
    f"a pretrained preset: a shipped name ({', '.join(presets.available()) or 'none installed'}) "
    "or a folder written by VAE.save_to_preset."
)


def generate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name("python -m keras_vae.generate"),
        description="Generate new images from a trained model as PNG files: one per "
        "image in --out, and/or one grid in --grid.",
    )
    parser.add_argument(
        "--model",
        required=True,
        help=f"A run directory written by train.py, a .keras file, or {PRESET_HELP}",
    )
    parser.add_argument(
        "--count",
        type=bounded_int(1, MAX_GENERATE),
        default=64,
        help="Images to generate (default 64).",
    )
    parser.add_argument(
        "--out", help="A new (or empty) folder for one PNG per image: 00000.png, ..."
    )
    parser.add_argument("--grid", help="A .png file for all the images in one grid.")
    parser.add_argument(
        "--label",
        help="Conditional models: the class to draw, by name (e.g. Sneaker) or index "
        "(default: cycle through the classes).",
    )
    parser.add_argument(
        "--temperature",
        type=positive_float,
        default=1.0,
        help="Scale of the sampler's standard normal noise; below 1 gives more typical, "
        "less varied images (default 1).",
    )
    parser.add_argument(
        "--sampler",
        choices=choices.SAMPLERS,
        default="prior",
        help="prior: the model's prior. gmm: a Gaussian mixture fitted to the training "
        "images' posterior means (fitted once, kept in the run directory; needs a run "
        "directory). Default: prior.",
    )
    parser.add_argument(
        "--seed", type=bounded_int(0), help="Seed: the same seed writes identical files."
    )
    return parser


def generate(argv=None) -> int:
    args = generate_parser().parse_args(argv)

    def work():
        from keras_vae import generate as generate_lib  # TensorFlow loads here

        generate_lib.run(args)

    return run(work)
