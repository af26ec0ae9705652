"""`keras-vae visualize`: draw a run's pictures and write its report.html."""

from __future__ import annotations

import argparse

from keras_vae import choices
from keras_vae.cli import common

HELP = "Redraw a run's pictures and its report.html."
EXAMPLES = [
    "keras-vae visualize --model runs/RUN",
    "keras-vae visualize --model runs/RUN --pictures traversals manifold --traversal-dims 4",
    "keras-vae visualize --model runs/RUN --shifted-dataset mnist",
]


def build_parser(prog: str = "keras-vae visualize") -> argparse.ArgumentParser:
    parser = common.parser(
        common.prog_name(prog),
        "Draw pictures of a trained model into its run directory and write report.html.",
        EXAMPLES,
    )
    model = parser.add_argument_group("Model")
    model.add_argument("--model", required=True, help="A run directory written by train.")
    pictures = parser.add_argument_group("Pictures")
    pictures.add_argument(
        "--pictures",
        nargs="+",
        choices=choices.PICTURES,
        default=list(choices.PICTURES),
        metavar="NAME",
        help=f"Any of {', '.join(choices.PICTURES)} (default: all).",
    )
    pictures.add_argument(
        "--traversal-dims",
        type=common.bounded_int(1),
        default=8,
        help="Rows of the traversal picture (default 8).",
    )
    pictures.add_argument(
        "--num-images",
        type=common.bounded_int(1),
        default=64,
        help="Images in the grids (default 64).",
    )
    data = parser.add_argument_group("Data")
    data.add_argument(
        "--shifted-dataset",
        help="A TFDS dataset with the same image shape to score against the test set "
        "(e.g. mnist for a Fashion-MNIST model); skipped if not available.",
    )
    common.add_verbose(parser.add_argument_group("Output"))
    return parser


def main(argv=None, prog: str = "keras-vae visualize") -> int:
    args = build_parser(prog).parse_args(argv)

    def work():
        common.check_model(args.model)
        from keras_vae import pictures  # TensorFlow loads here

        data = pictures.load_run_picture_data(
            args.model, args.num_images, args.traversal_dims, args.shifted_dataset
        )
        report = pictures.update_run_pictures(data, args.model, args.pictures)
        print(f"Report: {report}")

    return common.run(work, verbose=args.verbose)
