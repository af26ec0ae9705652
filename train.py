"""Train a VAE: `python train.py --dataset fashion_mnist`. See `--help`."""

import sys

from keras_vae import config as config_lib


def main(argv=None) -> int:
    parser = config_lib.build_parser(
        description="Train a convolutional VAE on a TFDS image dataset and write "
        "the model, metrics, TensorBoard logs and pictures to a run directory."
    )
    try:
        config = config_lib.parse_config(argv, parser)
        from keras_vae import training  # Imports TensorFlow: after --help.

        training.train(config)
    except (ValueError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
