"""`python -m export`: export a trained model for TF Serving and LiteRT."""

from __future__ import annotations

import argparse
import json
import os
import sys

CALIBRATION_IMAGES = 200


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a trained keras-vae model: the next SavedModel version "
        "under OUT/saved_model/NAME/ (for TF Serving) and OUT/tflite/*.tflite (LiteRT).",
    )
    parser.add_argument(
        "--model",
        required=True,
        help="A run directory written by train.py, or a .keras file.",
    )
    parser.add_argument(
        "--output-dir",
        help="Where the exports go (default: the run directory or the .keras file's).",
    )
    parser.add_argument("--model-name", default="vae", help="TF Serving model name (default: vae).")
    parser.add_argument(
        "--calibration-images",
        help=".npy of uint8 images (n, H, W, C) for warm-up and int8 calibration "
        "(default: the run's test split).",
    )
    parser.add_argument("--no-tflite", action="store_true", help="Write the SavedModel only.")
    return parser


def resolve_model_path(path: str) -> tuple[str, str | None]:
    """(`.keras` file, run directory or None) for a run directory or a file."""
    if os.path.isdir(path):
        model_file = os.path.join(path, "model.keras")
        if not os.path.isfile(model_file):
            raise ValueError(
                f"{path} holds no model.keras: is it a finished train.py run directory? "
                "Pass the run directory or a .keras file to --model."
            )
        return model_file, path
    if path.endswith(".keras") and os.path.isfile(path):
        return path, None
    raise ValueError(f"--model {path}: no such run directory or .keras file.")


def calibration_images(args, run_dir, model):
    import numpy as np

    if args.calibration_images:
        return np.load(args.calibration_images)
    if run_dir is None:
        if args.no_tflite:
            return None
        raise ValueError(
            "A bare .keras file does not say which data it was trained on: pass "
            "--calibration-images images.npy (uint8, n x H x W x C) or --no-tflite."
        )
    from keras_vae import training
    from keras_vae.config import TrainConfig

    config = TrainConfig.from_json_file(os.path.join(run_dir, training.CONFIG_FILE))
    return training.to_uint8(training.load_test_examples(config, CALIBRATION_IMAGES)[0])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model_file, run_dir = resolve_model_path(args.model)
        import keras

        import keras_vae  # noqa: F401  (registers VAE for load_model)
        from export import export_all

        model = keras.models.load_model(model_file)
        images = calibration_images(args, run_dir, model)
        out_dir = args.output_dir or run_dir or os.path.dirname(os.path.abspath(model_file))
        paths = export_all(model, out_dir, args.model_name, images, tflite=not args.no_tflite)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(paths, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
