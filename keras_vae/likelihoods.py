"""Pixel likelihoods p(x | z): a name -> TFP distribution registry.

The decoder emits `params_per_channel * C` numbers per pixel; a registered
likelihood turns them into a TFP distribution over a whole image (an
`Independent` over height, width and channels). The loss, the scores and the
export signatures all go through this one registry, so adding a likelihood is
one small function and one `@register_likelihood` line:

    @register_likelihood("laplace", params_per_channel=2)
    def laplace(params):
        loc, raw_scale = tf.split(params, 2, axis=-1)
        return tfd.Laplace(loc, tf.nn.softplus(raw_scale) + 1e-3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae.errors import UsageError

tfd = tfp.distributions

# Keeps a learned Gaussian scale away from zero, where log-density blows up.
MIN_GAUSSIAN_SCALE = 1e-3


@dataclasses.dataclass(frozen=True)
class Likelihood:
    """A registered pixel likelihood.

    Args:
        name: str. The registry key, used on the command line and in configs.
        params_per_channel: int. Decoder outputs needed per image channel.
        make_pixel_distribution: callable. Maps float32 decoder outputs
            `(batch, H, W, C * params_per_channel)` to a TFP distribution with
            batch shape `(batch, H, W, C)` (one scalar per pixel).
    """

    name: str
    params_per_channel: int
    make_pixel_distribution: Callable[[tf.Tensor], tfd.Distribution]

    def distribution(self, params: tf.Tensor) -> tfd.Distribution:
        """The image distribution: event shape `(H, W, C)`, batch `(batch,)`."""
        params = tf.cast(params, tf.float32)
        return tfd.Independent(self.make_pixel_distribution(params), reinterpreted_batch_ndims=3)


_REGISTRY: dict[str, Likelihood] = {}


def register_likelihood(name: str, params_per_channel: int = 1):
    """Decorator that registers `fn(params) -> per-pixel distribution`."""

    def decorator(fn):
        if name in _REGISTRY:
            raise UsageError(f"Likelihood {name!r} is already registered.")
        _REGISTRY[name] = Likelihood(name, params_per_channel, fn)
        return fn

    return decorator


def get_likelihood(name: str) -> Likelihood:
    """Returns the registered likelihood called `name`."""
    if name not in _REGISTRY:
        raise UsageError(
            "Invalid value received for argument `likelihood`. Expected one of "
            f"{available_likelihoods()}. Received: likelihood={name!r}"
        )
    return _REGISTRY[name]


def available_likelihoods() -> list[str]:
    return sorted(_REGISTRY)


@register_likelihood("bernoulli")
def bernoulli(logits):
    # float32 samples, and log_prob from logits (softplus, never log(sigmoid)),
    # which is defined for intensities in [0, 1], not only for {0, 1}.
    return tfd.Bernoulli(logits=logits, dtype=tf.float32)


@register_likelihood("continuous_bernoulli")
def continuous_bernoulli(logits):
    """The normalised Bernoulli for [0, 1] intensities (Loaiza-Ganem 2019)."""
    return tfd.ContinuousBernoulli(logits=logits, dtype=tf.float32)


@register_likelihood("gaussian", params_per_channel=2)
def gaussian(params):
    """A Gaussian whose per-pixel scale the decoder learns.

    #### Mathematical details

    loc, raw = split(params); scale = softplus(raw) + 1e-3
    """
    loc, raw_scale = tf.split(params, 2, axis=-1)
    return tfd.Normal(loc=loc, scale=tf.nn.softplus(raw_scale) + MIN_GAUSSIAN_SCALE)
