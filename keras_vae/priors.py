"""Latent priors p(z): a name -> Keras layer registry.

A prior is a Keras layer (so a learned prior owns its weights and saves with
the model) whose `distribution()` returns a TFP distribution over `(latent_dim,)`
vectors, and whose `from_noise(noise, uniform)` writes a sample as a function
of standard normal noise (and, for mixtures, a uniform that picks the
component), returning `{"z": ...}` (plus `"component"` for mixtures): the
exported signatures and `keras_vae.generate` sample through it. Register a new one
with `@register_prior("name")` on the class.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae.errors import UsageError

tfd = tfp.distributions

_REGISTRY: dict[str, type] = {}


def register_prior(name: str):
    """Class decorator: registers a prior layer under `name`."""

    def decorator(cls):
        if name in _REGISTRY:
            raise UsageError(f"Prior {name!r} is already registered.")
        _REGISTRY[name] = cls
        return keras.saving.register_keras_serializable(package="keras_vae")(cls)

    return decorator


def available_priors() -> list[str]:
    return sorted(_REGISTRY)


def get_prior(
    name: str, latent_dim: int, image_shape=None, num_components: int | None = None
) -> keras.layers.Layer:
    """Builds the registered prior called `name` for `latent_dim`.

    `image_shape` and `num_components` are passed on to priors that use them
    (mixtures); `num_components=None` keeps the prior's own default.
    """
    if name not in _REGISTRY:
        raise UsageError(
            "Invalid value received for argument `prior`. Expected one of "
            f"{available_priors()}. Received: prior={name!r}"
        )
    kwargs = {"image_shape": image_shape}
    if num_components is not None:
        if int(num_components) < 1:
            raise UsageError(
                "Invalid value received for argument `prior_components`. Expected a "
                f"positive integer. Received: prior_components={num_components}"
            )
        kwargs["num_components"] = int(num_components)
    return _REGISTRY[name](latent_dim=latent_dim, name=f"prior_{name}", **kwargs)


@register_prior("standard_normal")
class StandardNormalPrior(keras.layers.Layer):
    """N(0, I) over `(latent_dim,)`, with no weights.

    A `MultivariateNormalDiag`, the same family as the posterior, so TFP has
    the KL divergence in closed form.
    """

    def __init__(self, latent_dim: int, **kwargs):
        kwargs.pop("image_shape", None)
        kwargs.pop("num_components", None)
        super().__init__(**kwargs)
        self.latent_dim = latent_dim

    # The inputs of `from_noise` (the exported `generate_from_noise`'s).
    noise_inputs = ("noise",)

    def distribution(self) -> tfd.Distribution:
        return tfd.MultivariateNormalDiag(
            loc=tf.zeros([self.latent_dim]), scale_diag=tf.ones([self.latent_dim])
        )

    def from_noise(self, noise, uniform=None) -> dict:
        """A prior sample as a function of its randomness: `{"z": noise}`.

        Every prior takes the same `(noise, uniform)` and returns a dict
        with `z`; `uniform` (which mixtures use to pick a component) is
        ignored here.
        """
        del uniform
        return {"z": tf.convert_to_tensor(noise)}

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


class _MixturePrior(keras.layers.Layer):
    """A mixture of diagonal Gaussians given by `mixture_parameters()`."""

    noise_inputs = ("noise", "uniform")  # uniform picks the component

    def mixture_parameters(self):
        """`(logits (K,), locs (K, latent), scales (K, latent))`, float32."""
        raise NotImplementedError

    def distribution(self) -> tfd.Distribution:
        logits, locs, scales = self.mixture_parameters()
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=logits),
            components_distribution=tfd.MultivariateNormalDiag(loc=locs, scale_diag=scales),
        )

    def from_noise(self, noise, uniform):
        """A prior sample as a function of its randomness (what export uses).

        Args:
            noise: float32 `(batch, latent)`, standard normal.
            uniform: float32 `(batch,)` in [0, 1): picks the component by
                inverting the mixture weights' cumulative distribution.

        Returns:
            `{"z": loc_c + scale_c * noise, "component": c}` (int32 `c`).
        """
        logits, locs, scales = self.mixture_parameters()
        component = pick_component(tf.nn.softmax(logits), uniform)
        z = tf.gather(locs, component) + tf.gather(scales, component) * noise
        return {"z": z, "component": component}


def pick_component(weights, uniform):
    """int32 component per `uniform` value, by the inverse CDF of `weights`.

    Core ops only (no searchsorted), so that exported signatures stay TFLite
    builtins.
    """
    cdf = tf.cumsum(tf.cast(weights, tf.float32))
    uniform = tf.convert_to_tensor(uniform, tf.float32)
    return tf.reduce_sum(tf.cast(uniform[:, None] >= cdf[None, :-1], tf.int32), axis=1)


@register_prior("mixture")
class MixtureOfGaussiansPrior(_MixturePrior):
    """A learned mixture of `num_components` diagonal Gaussians.

    #### Mathematical details

    p(z) = sum_k softmax(logits)_k N(z; loc_k, diag(scale_k^2)),
    scale_k = softplus(raw_k) + 1e-4. KL(q || p) has no closed form: the VAE
    uses the one-sample Monte Carlo estimate log q(z|x) - log p(z).
    """

    def __init__(self, latent_dim: int, num_components: int = 10, **kwargs):
        kwargs.pop("image_shape", None)
        super().__init__(**kwargs)
        self.latent_dim = latent_dim
        self.num_components = num_components

    def build(self, input_shape=None):
        k, d = self.num_components, self.latent_dim
        self.logits = self.add_weight(shape=(k,), initializer="zeros", name="logits")
        self.locs = self.add_weight(
            shape=(k, d), initializer=keras.initializers.RandomNormal(stddev=1.0), name="locs"
        )
        # softplus(0.5413) = 1: components start as unit Gaussians.
        self.raw_scales = self.add_weight(
            shape=(k, d), initializer=keras.initializers.Constant(0.5413), name="raw_scales"
        )
        self.built = True

    def mixture_parameters(self):
        scales = tf.nn.softplus(tf.cast(self.raw_scales, tf.float32)) + 1e-4
        return tf.cast(self.logits, tf.float32), tf.cast(self.locs, tf.float32), scales

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "num_components": self.num_components,
        }


@register_prior("vamp")
class VampPrior(_MixturePrior):
    """The VampPrior (Tomczak & Welling 2018): the posterior at learned pseudo-inputs.

    #### Mathematical details

    p(z) = (1/K) sum_k q(z | u_k), u_k = sigmoid(raw_k) learned images. The
    VAE binds its encoder with `bind(encode)`; KL is the one-sample Monte
    Carlo estimate.
    """

    def __init__(self, latent_dim: int, num_components: int = 50, image_shape=None, **kwargs):
        super().__init__(**kwargs)
        if image_shape is None:
            raise UsageError("The VampPrior needs the image shape of its pseudo-inputs.")
        self.latent_dim = latent_dim
        self.num_components = num_components
        self.image_shape = tuple(int(d) for d in image_shape)
        self._encode = None

    def build(self, input_shape=None):
        self.raw_pseudo_inputs = self.add_weight(
            shape=(self.num_components, *self.image_shape),
            initializer=keras.initializers.RandomNormal(stddev=0.1),
            name="raw_pseudo_inputs",
        )
        self.built = True

    def bind(self, encode):
        self._encode = encode

    def pseudo_inputs(self):
        return tf.sigmoid(tf.cast(self.raw_pseudo_inputs, tf.float32))

    def mixture_parameters(self):
        if self._encode is None:
            raise UsageError("VampPrior.bind(encode) must be called before use.")
        mean, log_var = self._encode(self.pseudo_inputs())
        return tf.zeros([self.num_components]), mean, tf.exp(0.5 * log_var)

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "num_components": self.num_components,
            "image_shape": list(self.image_shape),
        }
