"""`keras-vae generate`: new images from a trained model or a preset, as PNG files."""

from __future__ import annotations

import argparse

from keras_vae import choices
from keras_vae.cli import common

HELP = "New images as PNG files, from a run or a preset."
EXAMPLES = [
    "keras-vae generate --model fashion_mnist_conv --count 64 --grid new_clothes.png",
    "keras-vae generate --model runs/RUN --count 16 --out new_designs/ --sampler gmm",
    "keras-vae generate --model runs/RUN --label Sneaker --temperature 0.8 --seed 0 --grid s.png",
]


def build_parser(prog: str = "keras-vae generate") -> argparse.ArgumentParser:
    parser = common.parser(
        common.prog_name(prog),
        "Generate new images from a trained model as PNG files: one per image in --out, "
        "and/or one grid in --grid.",
        EXAMPLES,
    )
    model = parser.add_argument_group("Model")
    model.add_argument(
        "--model",
        required=True,
        help=f"A run directory written by train, a .keras file, or {common.PRESET_HELP}",
    )
    sampling = parser.add_argument_group("Sampling")
    sampling.add_argument(
        "--count",
        type=common.bounded_int(1, common.MAX_GENERATE),
        default=64,
        help="Images to generate (default 64).",
    )
    sampling.add_argument(
        "--label",
        help="Conditional models: the class to draw, by name (e.g. Sneaker) or index "
        "(default: cycle through the classes).",
    )
    sampling.add_argument(
        "--temperature",
        type=common.positive_float,
        default=1.0,
        help="Scale of the sampler's standard normal noise; below 1 gives more typical, "
        "less varied images (default 1).",
    )
    sampling.add_argument(
        "--sampler",
        choices=choices.SAMPLERS,
        default="prior",
        help="prior: the model's prior. gmm: a Gaussian mixture fitted to the training "
        "images' posterior means (fitted once, kept in the run directory; needs a run "
        "directory or a preset that ships one). Default: prior.",
    )
    sampling.add_argument(
        "--seed",
        type=common.bounded_int(0),
        help="Seed: the same seed writes identical files.",
    )
    output = parser.add_argument_group("Output")
    output.add_argument(
        "--out", help="A new (or empty) folder for one PNG per image: 00000.png, ..."
    )
    output.add_argument("--grid", help="A .png file for all the images in one grid.")
    common.add_verbose(output)
    return parser


def main(argv=None, prog: str = "keras-vae generate") -> int:
    args = build_parser(prog).parse_args(argv)

    def work():
        common.check_model(args.model)
        from keras_vae import generation  # TensorFlow loads here

        generation.run(args)

    return common.run(work, verbose=args.verbose)
