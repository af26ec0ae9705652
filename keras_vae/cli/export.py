"""`keras-vae export`: a trained model as a SavedModel (TF Serving) and TFLite files (LiteRT)."""

from __future__ import annotations

import json
import os

import numpy as np

from keras_vae.cli import common
from keras_vae.errors import UsageError

HELP = "A SavedModel for TF Serving and TFLite files for LiteRT."
EXAMPLES = [
    "keras-vae export --model runs/RUN",
    "keras-vae export --preset fashion_mnist_conv --output-dir exported/",
    "keras-vae export --model model.keras --calibration-images images.npy --model-name vae",
]


def build_parser(prog: str = "keras-vae export"):
    parser = common.parser(
        common.prog_name(prog),
        "Export a trained keras-vae model: the next SavedModel version under "
        "OUT/saved_model/NAME/ (for TF Serving) and OUT/tflite/*.tflite (LiteRT).",
        EXAMPLES,
    )
    source = parser.add_argument_group("Model").add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        help="A run directory written by train.py, or a .keras file.",
    )
    source.add_argument(
        "--preset",
        help=f"{common.PRESET_HELP[0].upper()}{common.PRESET_HELP[1:]} Needs --output-dir.",
    )
    output = parser.add_argument_group("Output")
    output.add_argument(
        "--output-dir",
        help="Where the exports go (default: the run directory or the .keras file's).",
    )
    output.add_argument("--model-name", default="vae", help="TF Serving model name (default: vae).")
    output.add_argument(
        "--calibration-images",
        help=".npy of uint8 images (n, H, W, C) for warm-up and int8 calibration "
        "(default: the run's test split).",
    )
    output.add_argument("--no-tflite", action="store_true", help="Write the SavedModel only.")
    common.add_verbose(output)
    return parser


def calibration_images(args, source):
    """uint8 images for the warm-up file and the int8 calibration, or None."""
    from keras_vae import data  # TensorFlow: after the flags

    if args.calibration_images:
        return np.load(args.calibration_images)
    if source.config is None:
        if args.no_tflite:
            return None
        raise UsageError(
            "A bare .keras file does not say which data it was trained on: pass "
            "--calibration-images images.npy (uint8, n x H x W x C) or --no-tflite."
        )
    images = data.load_test_examples(source.config, data.EXPORT_CALIBRATION_IMAGES)[0]
    return data.to_uint8(images)


def main(argv=None, prog: str = "keras-vae export") -> int:
    args = build_parser(prog).parse_args(argv)

    def work():
        common.check_model(args.model or args.preset, "--model" if args.model else "--preset")
        # TensorFlow loads here, after the flags: a fast --help.
        from keras_vae import sources
        from keras_vae.export.writer import export_all

        source = sources.open_source(args.model or args.preset)
        if source.preset_dir and not args.output_dir:
            raise UsageError(
                f"{source.name} is a preset: pass --output-dir too (a preset's folder "
                "belongs to the package, not to its exports)."
            )
        images = calibration_images(args, source)
        out_dir = args.output_dir or source.run_dir or os.path.dirname(os.path.abspath(args.model))
        # A run's exports also get generate_gmm (its GMM sampler, fitted once), as
        # do a preset's that ships one.
        gmm = source.gmm() if source.has_gmm else None
        paths = export_all(
            source.model, out_dir, args.model_name, images, tflite=not args.no_tflite, gmm=gmm
        )
        print(json.dumps(paths, indent=2))

    return common.run(work, verbose=args.verbose)
