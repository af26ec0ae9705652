"""keras-vae: variational autoencoders in Keras 3 with TFP distributions."""

import warnings

# TFP imports distutils; keep that noise out of users' logs and of pytest.
warnings.filterwarnings("ignore", category=DeprecationWarning, module="tensorflow_probability")

from keras_vae.likelihoods import available_likelihoods, register_likelihood  # noqa: E402
from keras_vae.priors import available_priors, register_prior  # noqa: E402
from keras_vae.vae import VAE  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "VAE",
    "available_likelihoods",
    "available_priors",
    "register_likelihood",
    "register_prior",
]
