"""Latent priors p(z): a name -> Keras layer registry.

A prior is a Keras layer (so a learned prior owns its weights and saves with
the model) whose `distribution()` returns a TFP distribution over `(latent_dim,)`
vectors, and whose `from_noise(noise, uniform)` writes a sample as a function
of standard normal noise (and, for mixtures, a uniform that picks the
component), returning `{"z": ...}` (plus `"component"` for mixtures): the
exported signatures and `keras_vae.generation` sample through it. Register a new one
with `@register_prior("name")` on the class.
"""

from __future__ import annotations

import contextlib
import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_vae import choices
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
    name: str,
    latent_dim: int,
    image_shape=None,
    num_components: int | None = None,
    pseudo_inputs: str = "sigmoid",
) -> keras.layers.Layer:
    """Builds the registered prior called `name` for `latent_dim`.

    `image_shape` and `num_components` are passed on to priors that use them
    (mixtures); `num_components=None` keeps the prior's own default.
    `pseudo_inputs` is the VampPrior's form of its pseudo-inputs (see
    `VampPrior`); other priors ignore it.
    """
    if name not in _REGISTRY:
        raise UsageError(
            "Invalid value received for argument `prior`. Expected one of "
            f"{available_priors()}. Received: prior={name!r}"
        )
    kwargs = {"image_shape": image_shape}
    if name == "vamp":
        kwargs["pseudo_inputs"] = pseudo_inputs
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


# Set by `portable_densities()`.
_PORTABLE = False


@contextlib.contextmanager
def portable_densities():
    """Within it, mixture densities take TFP's own float32 form: for graphs
    that run where float64 does not (the exported signatures, for LiteRT).
    TPUs, which have no float64 either, always get that form."""
    global _PORTABLE
    before, _PORTABLE = _PORTABLE, True
    try:
        yield
    finally:
        _PORTABLE = before


class DiagonalGaussianMixture(tfd.MixtureSameFamily):
    """`MixtureSameFamily` of `MultivariateNormalDiag` components whose
    `log_prob` is two matrix products instead of a `(..., K, latent)` tensor.

    #### Mathematical details

    sum_d (z_d - loc_kd)^2 / scale_kd^2 = z^2 . p_k - 2 z . (loc_k p_k) + loc_k^2 . p_k
    with p_k = 1 / scale_k^2: for N points and K components, two
    `(N, latent) x (latent, K)` products. TFP's own `log_prob` broadcasts every
    point against every component, which is memory-bound: for the VampPrior's
    500 components it is most of the importance-weighted bound's time
    (`benchmarks/mixture_log_prob.py`). The expansion cancels where z is near
    a narrow component, so it runs in float64, which keeps it within 1e-5
    nats of a float64 reference, as close as TFP's float32 form. Sampling,
    mixtures with a batch shape and `portable_densities()` graphs use TFP's.
    """

    def _log_prob(self, x):
        portable = _PORTABLE or tf.config.list_logical_devices("TPU")
        if portable or self.batch_shape.rank != 0:
            return super()._log_prob(x)
        return mixture_log_prob(x, self.mixture_distribution, self.components_distribution)


def mixture_log_prob(x, mixture, components):
    """log sum_k w_k N(x; loc_k, diag(scale_k^2)) by the expansion above, in
    float64; returned in `x`'s dtype, shape `x.shape[:-1]`."""
    x = tf.convert_to_tensor(x)
    loc = tf.cast(tf.convert_to_tensor(components.loc), tf.float64)
    scale = tf.cast(components.scale.diag, tf.float64)
    latent = tf.shape(loc)[-1]
    precision = tf.math.reciprocal(tf.square(scale))  # (K, latent)
    flat = tf.reshape(tf.cast(x, tf.float64), [-1, latent])
    squared_distance = (
        tf.matmul(tf.square(flat), precision, transpose_b=True)
        - 2.0 * tf.matmul(flat, loc * precision, transpose_b=True)
        + tf.reduce_sum(tf.square(loc) * precision, axis=-1)
    )  # (N, K)
    log_normaliser = tf.reduce_sum(tf.math.log(scale), axis=-1) + 0.5 * tf.cast(
        latent, tf.float64
    ) * math.log(2 * math.pi)
    log_weights = tf.nn.log_softmax(tf.cast(mixture.logits_parameter(), tf.float64))
    log_prob = tf.reduce_logsumexp(log_weights - log_normaliser - 0.5 * squared_distance, axis=-1)
    return tf.cast(tf.reshape(log_prob, tf.shape(x)[:-1]), x.dtype)


class _MixturePrior(keras.layers.Layer):
    """A mixture of diagonal Gaussians given by `mixture_parameters()`."""

    noise_inputs = ("noise", "uniform")  # uniform picks the component

    def mixture_parameters(self):
        """`(logits (K,), locs (K, latent), scales (K, latent))`, float32."""
        raise NotImplementedError

    def distribution(self) -> tfd.Distribution:
        logits, locs, scales = self.mixture_parameters()
        return DiagonalGaussianMixture(
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

    p(z) = (1/K) sum_k q(z | u_k), with K learned images u_k = f(raw_k) in
    [0, 1]. The VAE binds its encoder with `bind(encode)`; KL is the
    one-sample Monte Carlo estimate.

    `pseudo_inputs` is the form of f and the start of raw:
    - `"sigmoid"`: f = sigmoid, raw ~ N(0, 0.1): grey images near 0.5.
    - `"hardtanh"`: f = clip to [0, 1], raw ~ N(0.05, 0.01): near-black
      images, as the paper's code (jmtomczak/vae_vampprior,
      sajadn/Exemplar-VAE: a bias-free linear layer with a Hardtanh(0, 1) on
      an identity matrix, weights N(0.05, 0.01)). A pixel clipped at 0 or 1
      gets no gradient there, as in that code.
    """

    forms = {
        "sigmoid": (tf.sigmoid, 0.0, 0.1),
        "hardtanh": (lambda raw: tf.clip_by_value(raw, 0.0, 1.0), 0.05, 0.01),
    }

    def __init__(
        self,
        latent_dim: int,
        num_components: int = 50,
        image_shape=None,
        pseudo_inputs: str = "sigmoid",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if image_shape is None:
            raise UsageError("The VampPrior needs the image shape of its pseudo-inputs.")
        if pseudo_inputs not in choices.PSEUDO_INPUTS:
            raise UsageError(
                "Invalid value received for argument `pseudo_inputs`. Expected one of "
                f"{list(choices.PSEUDO_INPUTS)}. Received: pseudo_inputs={pseudo_inputs!r}"
            )
        self.latent_dim = latent_dim
        self.num_components = num_components
        self.image_shape = tuple(int(d) for d in image_shape)
        self.pseudo_inputs_form = pseudo_inputs
        self._encode = None

    def build(self, input_shape=None):
        _, mean, stddev = self.forms[self.pseudo_inputs_form]
        self.raw_pseudo_inputs = self.add_weight(
            shape=(self.num_components, *self.image_shape),
            initializer=keras.initializers.RandomNormal(mean=mean, stddev=stddev),
            name="raw_pseudo_inputs",
        )
        self.built = True

    def bind(self, encode):
        self._encode = encode

    def pseudo_inputs(self):
        form, _, _ = self.forms[self.pseudo_inputs_form]
        return form(tf.cast(self.raw_pseudo_inputs, tf.float32))

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
            "pseudo_inputs": self.pseudo_inputs_form,
        }
