"""Train a VAE: `python train.py --dataset fashion_mnist`. See `--help`."""

import sys

from keras_vae import cli

main = cli.train

if __name__ == "__main__":
    sys.exit(cli.train())
