"""Latent priors p(z): a name -> Keras layer registry.

A prior is a Keras layer (so a learned prior owns its weights and saves with
the model) whose `distribution()` returns a TFP distribution over `(latent_dim,)`
vectors. Register a new one with `@register_prior("name")` on the class.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

_REGISTRY: dict[str, type] = {}


def register_prior(name: str):
    """Class decorator: registers a prior layer under `name`."""

    def decorator(cls):
        if name in _REGISTRY:
            raise ValueError(f"Prior {name!r} is already registered.")
        _REGISTRY[name] = cls
        return keras.saving.register_keras_serializable(package="keras_vae")(cls)

    return decorator


def available_priors() -> list[str]:
    return sorted(_REGISTRY)


def get_prior(name: str, latent_dim: int) -> keras.layers.Layer:
    """Builds the registered prior called `name` for `latent_dim`."""
    if name not in _REGISTRY:
        raise ValueError(
            "Invalid value received for argument `prior`. Expected one of "
            f"{available_priors()}. Received: prior={name!r}"
        )
    return _REGISTRY[name](latent_dim=latent_dim, name=f"prior_{name}")


@register_prior("standard_normal")
class StandardNormalPrior(keras.layers.Layer):
    """N(0, I) over `(latent_dim,)`, with no weights.

    A `MultivariateNormalDiag`, the same family as the posterior, so TFP has
    the KL divergence in closed form.
    """

    def __init__(self, latent_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = latent_dim

    def distribution(self) -> tfd.Distribution:
        return tfd.MultivariateNormalDiag(
            loc=tf.zeros([self.latent_dim]), scale_diag=tf.ones([self.latent_dim])
        )

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}
