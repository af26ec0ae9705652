"""`python -m export`: runs `keras_vae.export.__main__` (see `--help`)."""

import sys

from keras_vae.export.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
