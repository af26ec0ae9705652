"""Inspect, run and serve the signatures of an exported keras-vae model.

    python serve_signature.py list MODEL
    python serve_signature.py run MODEL --signature score --images a.png b.png
    python serve_signature.py rest --signature score --images a.png [--url URL]
    python serve_signature.py grpc --signature score --images a.png --target HOST:8500

A thin CLI over `keras_vae/export/serve.py`, which is also installed as the
console script `keras-vae-serve`. With a .tflite file, `run` never imports
TensorFlow.
"""

import sys

from keras_vae.export.serve import main, predict_request, rest_body  # noqa: F401  (the CLI's API)

if __name__ == "__main__":
    sys.exit(main())
