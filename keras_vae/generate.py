"""`python -m keras_vae.generate`: an alias of `keras-vae generate` (keras_vae/cli/generate.py).

The library module is `keras_vae.generation`; this one only starts the command.
"""

import sys

from keras_vae.cli import generate

if __name__ == "__main__":
    sys.exit(generate.main(prog="python -m keras_vae.generate"))
