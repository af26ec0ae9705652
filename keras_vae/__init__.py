"""keras-vae: variational autoencoders in Keras 3 with TFP distributions.

`import keras_vae` imports the model (TensorFlow, TFP) and registers its
classes, so that `keras.models.load_model` reloads a saved `VAE`. The one
exception is the start of the package's own command lines: they parse their
flags, and answer `--help`, before TensorFlow loads, and import the model
themselves afterwards; until then the names below load on first use. That
is also what keeps `serve_signature.py run MODEL.tflite` (and
`keras-vae-serve`) free of TensorFlow: the LiteRT runner,
`keras_vae.export.runner`, needs only numpy and LiteRT, but imported from a
program of your own it comes after this file, which loads the model.
"""

import os
import sys

__version__ = "0.1.0"
__all__ = [
    "VAE",
    "HVAE",
    "available_likelihoods",
    "available_priors",
    "register_likelihood",
    "register_prior",
]
_HOMES = {
    "VAE": "keras_vae.vae",
    "HVAE": "keras_vae.hvae",
    "available_likelihoods": "keras_vae.likelihoods",
    "register_likelihood": "keras_vae.likelihoods",
    "available_priors": "keras_vae.priors",
    "register_prior": "keras_vae.priors",
}
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPTS = {
    os.path.join(_REPO, *name)
    for name in [("train.py",), ("serve_signature.py",), ("export", "__main__.py")]
}


def _starting_a_command_line() -> bool:
    """`python -m keras_vae.X` (argv[0] is "-m" while Python finds X), a
    `keras-vae-*` console script, or the repository's train.py,
    serve_signature.py or `python -m export`."""
    argv0 = sys.argv[0] if sys.argv else ""
    return (
        argv0 == "-m"
        or os.path.basename(argv0).startswith("keras-vae")
        or os.path.abspath(argv0) in _SCRIPTS
    )


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module 'keras_vae' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)


if not _starting_a_command_line():
    import keras_vae.optimizers  # noqa: E402, F401  (registers AdamNormGrad for load_model)
    from keras_vae.hvae import HVAE  # noqa: E402
    from keras_vae.likelihoods import available_likelihoods, register_likelihood  # noqa: E402
    from keras_vae.priors import available_priors, register_prior  # noqa: E402
    from keras_vae.vae import VAE  # noqa: E402
