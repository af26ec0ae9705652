"""`keras-vae train`: train a VAE and write a self-describing run directory."""

from __future__ import annotations

from keras_vae import config as config_lib
from keras_vae.cli import common

HELP = "Train a VAE and write its run directory."
EXAMPLES = [
    "keras-vae train --dataset fashion_mnist --epochs 10",
    "keras-vae train --protocol vampprior --prior vamp --prior-components 500",
    "keras-vae train --dataset ~/photos --image-size 64 --output-dir runs/photos",
    "keras-vae train --resume --output-dir runs/photos --epochs 20",
]


def build_parser(prog: str = "keras-vae train"):
    parser = common.parser(
        common.prog_name(prog),
        "Train a VAE on a TFDS image dataset, a folder of images or an array file, and "
        "write the model, metrics, TensorBoard logs, pictures and exports to a run "
        "directory. A --protocol sets a published setup's defaults beneath your flags.",
        EXAMPLES,
        usage="%(prog)s [-h] [--dataset NAME|PATH] [--protocol NAME] [--output-dir DIR] [FLAG ...]",
    )
    config_lib.build_parser(parser)
    output = next(g for g in parser._action_groups if g.title == "Output")
    common.add_verbose(output)
    return parser


def main(argv=None, prog: str = "keras-vae train") -> int:
    given = vars(build_parser(prog).parse_args(argv))  # argparse errors exit here

    def work():
        config = config_lib.config_from_flags(given)
        if config_lib.dataset_is_path(config.dataset):
            # Checked before TensorFlow loads: bad data fails at once. A small
            # source is read (and cached for the run in this process), a large
            # one prepared once (keras_vae.prepared).
            from keras_vae import prepared  # numpy and PIL only, until it writes

            prepared.open_source(
                config.dataset,
                config.image_size,
                config.channels,
                config.test_fraction,
                config.data_dir,
            )
        from keras_vae import training  # TensorFlow loads here, after the flags

        training.train(config)

    return common.run(work, verbose=given.get("verbose", False))
