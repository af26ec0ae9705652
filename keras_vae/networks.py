"""Encoder and decoder networks: a name -> architecture registry.

- `conv` (the default): the TensorFlow CVAE tutorial's, generalised: stride-2
  convolutions halve the image until it is at most 8 pixels high (two for
  28x28 and 32x32, three for 64x64), and the decoder mirrors them with
  transposed convolutions.
- `gated_mlp`: the VampPrior paper's "VAE" networks (Tomczak & Welling 2018,
  jmtomczak/vae_vampprior): two `GatedDense` layers of `hidden_units` in the
  encoder and, mirrored, in the decoder; He initialisation; the posterior
  log-variance clamped to [-6, 2].

Every encoder maps images `(batch, H, W, C)` in [0, 1] (and, for a
conditional model, a one-hot label) to `(batch, 2 * latent_dim)`: the
posterior mean, then the raw log-variance. Every decoder maps latents (and
the label) to the likelihood's parameters `(batch, H, W, C * params)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras

from keras_vae.errors import UsageError

# The smallest feature map the encoder shrinks to, and the largest it stops at.
_MIN_SIDE = 4
_STOP_SIDE = 8


def num_downsamplings(image_shape: tuple[int, int, int]) -> int:
    """How many stride-2 stages an image of `image_shape` gets.

    Raises:
        ValueError: if the networks cannot take the shape.
    """
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise UsageError(
            "Invalid value received for argument `image_shape`. Expected "
            f"(height, width, channels). Received: image_shape={image_shape}"
        )
    height, width, _ = image_shape
    stages = 0
    while max(height, width) > _STOP_SIDE or stages < 2:
        if height % 2 or width % 2 or min(height, width) // 2 < _MIN_SIDE:
            raise UsageError(
                f"The networks cannot take images of shape {tuple(image_shape)}: "
                "height and width must halve evenly down to 4-8 pixels "
                "(e.g. 28x28, 32x32, 64x64). Resize the data, e.g. "
                "`--image-size 64` on the command line."
            )
        height, width, stages = height // 2, width // 2, stages + 1
    return stages


def _join_label(inputs, x, num_classes: int, dtype):
    """For a conditional model, a one-hot label input joined to `x`: `(inputs, x)`."""
    if not num_classes:
        return inputs, x
    label = keras.Input(shape=(num_classes,), name="label")
    return [inputs, label], keras.layers.Concatenate(dtype=dtype)([x, label])


def build_encoder(
    image_shape: tuple[int, int, int],
    latent_dim: int,
    base_filters: int = 32,
    num_classes: int = 0,
    dtype=None,
) -> keras.Model:
    """Images `(batch, H, W, C)` in [0, 1] -> `(batch, 2 * latent_dim)`.

    The output holds the posterior mean and the raw log-variance, in that order.
    With `num_classes`, a second input, the one-hot label, joins the image
    features before the last layer. `dtype` is the layers' dtype policy
    (None: the global policy).
    """
    stages = num_downsamplings(image_shape)
    inputs = keras.Input(shape=image_shape, name="image")
    x = inputs
    for i in range(stages):
        x = keras.layers.Conv2D(
            base_filters * 2**i, 3, strides=2, padding="same", activation="relu", dtype=dtype
        )(x)
    x = keras.layers.Flatten(dtype=dtype)(x)
    inputs, x = _join_label(inputs, x, num_classes, dtype)
    outputs = keras.layers.Dense(2 * latent_dim, name="posterior_params", dtype=dtype)(x)
    return keras.Model(inputs, outputs, name="encoder")


def build_decoder(
    image_shape: tuple[int, int, int],
    latent_dim: int,
    params_per_channel: int = 1,
    base_filters: int = 32,
    num_classes: int = 0,
    dtype=None,
) -> keras.Model:
    """Latents `(batch, latent_dim)` -> likelihood parameters.

    The output is `(batch, H, W, C * params_per_channel)`, unconstrained.
    With `num_classes`, the one-hot label is a second input, joined to z.
    `dtype` is the layers' dtype policy (None: the global policy).
    """
    stages = num_downsamplings(image_shape)
    height, width, channels = image_shape
    side_h, side_w = height // 2**stages, width // 2**stages
    inputs = keras.Input(shape=(latent_dim,), name="z")
    x = inputs
    inputs, x = _join_label(inputs, x, num_classes, dtype)
    x = keras.layers.Dense(side_h * side_w * base_filters, activation="relu", dtype=dtype)(x)
    x = keras.layers.Reshape((side_h, side_w, base_filters), dtype=dtype)(x)
    for i in reversed(range(stages)):
        x = keras.layers.Conv2DTranspose(
            base_filters * 2**i, 3, strides=2, padding="same", activation="relu", dtype=dtype
        )(x)
    outputs = keras.layers.Conv2DTranspose(
        channels * params_per_channel, 3, padding="same", name="likelihood_params", dtype=dtype
    )(x)
    return keras.Model(inputs, outputs, name="decoder")


@keras.saving.register_keras_serializable(package="keras_vae")
class GatedDense(keras.layers.Layer):
    """A gated dense layer (Dauphin et al. 2017), as the VampPrior paper uses it.

    #### Mathematical details

        h = (x W + b) * sigmoid(x V + c)

    Args:
        units: int. Output size.
        kernel_initializer: the initializer of W and V. Defaults to
            `"he_normal"` (the paper's He initialisation).
    """

    def __init__(self, units: int, kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        self.kernel = self.add_weight(
            shape=(fan_in, self.units), initializer=self.kernel_initializer, name="kernel"
        )
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")
        self.gate_kernel = self.add_weight(
            shape=(fan_in, self.units), initializer=self.kernel_initializer, name="gate_kernel"
        )
        self.gate_bias = self.add_weight(shape=(self.units,), initializer="zeros", name="gate_bias")

    def call(self, inputs):
        h = keras.ops.matmul(inputs, self.kernel) + self.bias
        gate = keras.ops.sigmoid(keras.ops.matmul(inputs, self.gate_kernel) + self.gate_bias)
        return h * gate

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


def check_flat_image_shape(image_shape) -> None:
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise UsageError(
            "Invalid value received for argument `image_shape`. Expected "
            f"(height, width, channels). Received: image_shape={image_shape}"
        )


def build_gated_mlp_encoder(
    image_shape, latent_dim: int, hidden_units: int = 300, num_classes: int = 0, dtype=None
) -> keras.Model:
    """Images -> `(batch, 2 * latent_dim)` through two `GatedDense(hidden_units)`."""
    check_flat_image_shape(image_shape)
    inputs = keras.Input(shape=image_shape, name="image")
    x = keras.layers.Flatten(dtype=dtype)(inputs)
    inputs, x = _join_label(inputs, x, num_classes, dtype)
    for _ in range(2):
        x = GatedDense(hidden_units, dtype=dtype)(x)
    outputs = keras.layers.Dense(
        2 * latent_dim, kernel_initializer="he_normal", name="posterior_params", dtype=dtype
    )(x)
    return keras.Model(inputs, outputs, name="encoder")


def build_gated_mlp_decoder(
    image_shape,
    latent_dim: int,
    params_per_channel: int = 1,
    hidden_units: int = 300,
    num_classes: int = 0,
    dtype=None,
) -> keras.Model:
    """Latents -> `(batch, H, W, C * params_per_channel)`, the encoder mirrored."""
    check_flat_image_shape(image_shape)
    height, width, channels = image_shape
    inputs = keras.Input(shape=(latent_dim,), name="z")
    x = inputs
    inputs, x = _join_label(inputs, x, num_classes, dtype)
    for _ in range(2):
        x = GatedDense(hidden_units, dtype=dtype)(x)
    x = keras.layers.Dense(
        height * width * channels * params_per_channel,
        kernel_initializer="he_normal",
        name="likelihood_params",
        dtype=dtype,
    )(x)
    outputs = keras.layers.Reshape((height, width, channels * params_per_channel), dtype=dtype)(x)
    return keras.Model(inputs, outputs, name="decoder")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A registered pair of networks.

    Args:
        name: str. The registry key (`--architecture`).
        build_encoder: `(image_shape, latent_dim, width, num_classes, dtype)`
            -> encoder `keras.Model`.
        build_decoder: `(image_shape, latent_dim, params_per_channel, width,
            num_classes, dtype)` -> decoder `keras.Model`.
        width_argument: str. The `VAE` argument that sets `width`
            (`base_filters` or `hidden_units`).
        log_var_range: `(low, high)`: the posterior log-variance is clipped
            to it.
        check_image_shape: raises `ValueError` for shapes the networks cannot take.
    """

    name: str
    build_encoder: Callable
    build_decoder: Callable
    width_argument: str
    log_var_range: tuple
    check_image_shape: Callable


ARCHITECTURES = {
    # exp(-10) to exp(10) spans every useful posterior scale and keeps exp()
    # and its gradient finite in float32.
    "conv": Architecture(
        "conv", build_encoder, build_decoder, "base_filters", (-10.0, 10.0), num_downsamplings
    ),
    "gated_mlp": Architecture(
        "gated_mlp",
        build_gated_mlp_encoder,
        build_gated_mlp_decoder,
        "hidden_units",
        (-6.0, 2.0),  # the paper's Hardtanh(-6, 2)
        check_flat_image_shape,
    ),
}


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise UsageError(
            "Invalid value received for argument `architecture`. Expected one of "
            f"{list(ARCHITECTURES)}. Received: architecture={name!r}"
        )
    return ARCHITECTURES[name]
