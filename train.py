"""Train a VAE: `python train.py --dataset fashion_mnist`, an alias of `keras-vae train`."""

import sys

from keras_vae.cli import train

main = train.main

if __name__ == "__main__":
    sys.exit(train.main(prog="python train.py"))
