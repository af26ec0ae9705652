"""`python serve_signature.py ...`: an alias of `keras-vae serve ...`.

    python serve_signature.py list MODEL
    python serve_signature.py run MODEL --signature score --images a.png b.png
    python serve_signature.py rest --signature score --images a.png [--url URL]
    python serve_signature.py grpc --signature score --images a.png --target HOST:8500

With a .tflite file, `run` never imports TensorFlow.
"""

import sys

from keras_vae.cli.serve import main, predict_request, rest_body  # noqa: F401  (the CLI's API)

if __name__ == "__main__":
    sys.exit(main(prog="python serve_signature.py"))
