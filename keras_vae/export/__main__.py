"""`python -m keras_vae.export`: an alias of `keras-vae export` (keras_vae/cli/export.py)."""

import sys

from keras_vae.cli import export

if __name__ == "__main__":
    sys.exit(export.main(prog="python -m keras_vae.export"))
