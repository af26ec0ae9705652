"""`python -m keras_vae.visualize`: an alias of `keras-vae visualize` (keras_vae/cli/visualize.py).

The library module is `keras_vae.pictures`; this one only starts the command.
"""

import sys

from keras_vae.cli import visualize

if __name__ == "__main__":
    sys.exit(visualize.main(prog="python -m keras_vae.visualize"))
