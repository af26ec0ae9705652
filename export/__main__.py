"""`python -m export`: an alias of `keras-vae export`, from a checkout."""

import sys

from keras_vae.cli import export

if __name__ == "__main__":
    sys.exit(export.main(prog="python -m export"))
