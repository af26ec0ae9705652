"""`python -m keras_vae.evaluate`: an alias of `keras-vae evaluate` (keras_vae/cli/evaluate.py).

The library module is `keras_vae.evaluation`; this one only starts the command.
"""

import sys

from keras_vae.cli import evaluate

if __name__ == "__main__":
    sys.exit(evaluate.main(prog="python -m keras_vae.evaluate"))
