"""`keras-vae prepare`: decode a folder of images (or an array file) once, into a
dataset on disk that every later command streams."""

from __future__ import annotations

import os

from keras_vae import config as config_lib
from keras_vae.cli import common
from keras_vae.errors import UsageError

HELP = "Prepare a folder of images once, so that commands stream it."
EXAMPLES = [
    "keras-vae prepare ~/photos --image-size 64",
    "keras-vae train --dataset ~/photos --image-size 64",
    "keras-vae prepare ~/photos --image-size 64 --processes 1 --force",
]
OPTIONS = ("image_size", "channels", "test_fraction", "data_dir")


def build_parser(prog: str = "keras-vae prepare"):
    parser = common.parser(
        common.prog_name(prog),
        "Decode a folder of images (in any depth of subfolders) or a .npz/.npy file once, "
        "into a TFDS dataset of TFRecord shards that train, evaluate and visualize then "
        "stream. They prepare a folder of 5,000 images or more themselves on first use, "
        "and again when it changes; this command does it ahead, with every core, for any "
        "size. Give the same --image-size, --channels and --test-fraction as the training "
        "run: each combination is prepared apart.",
        EXAMPLES,
    )
    parser.add_argument("path", metavar="PATH", help="A folder of images or a .npz/.npy file.")
    config_lib.build_parser(parser, only=OPTIONS)
    work = parser.add_argument_group("Preparing")
    work.add_argument(
        "--processes",
        type=common.bounded_int(1, 256),
        default=None,
        help="Processes decoding images (default: one per core).",
    )
    work.add_argument(
        "--force",
        action="store_true",
        default=False,
        help="Prepare again even if an up-to-date prepared dataset exists.",
    )
    common.add_verbose(work)
    return parser


def main(argv=None, prog: str = "keras-vae prepare") -> int:
    given = vars(build_parser(prog).parse_args(argv))

    def work():
        options = {k: given[k] for k in OPTIONS if k in given}
        config = config_lib.TrainConfig(dataset=given["path"], **options)  # checks the values
        if not os.path.exists(os.path.expanduser(config.dataset)):
            raise UsageError(
                f"{given['path']}: no such folder or file. `keras-vae prepare` takes a folder "
                "of images or a .npz/.npy file; TFDS datasets are prepared by TFDS itself."
            )
        from keras_vae import prepared

        source = prepared.Options(
            config.dataset, config.image_size, config.channels, config.test_fraction,
            config.data_dir,
        )  # fmt: skip
        fresh = not given["force"] and prepared.is_fresh(source)
        found = prepared.ensure(
            source, processes=given["processes"], any_size=True, again=given["force"]
        )
        if fresh:
            splits = sorted(found["splits"].items(), key=lambda kv: kv[0] != "train")
            counts = ", ".join(f"{k} {v:,}" for k, v in splits)
            print(f"{source.path}: up to date ({counts} images) in {source.slot}.")

    return common.run(work, verbose=given.get("verbose", False))
