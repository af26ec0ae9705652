"""`python -m keras_vae COMMAND ...`: the same as `keras-vae COMMAND ...`."""

import sys

from keras_vae.cli import main

if __name__ == "__main__":
    sys.exit(main())
