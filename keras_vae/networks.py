"""Encoder and decoder networks: a name -> architecture registry.

- `conv` (the default): the TensorFlow CVAE tutorial's, generalised: stride-2
  convolutions halve the image until it is at most 8 pixels high (two for
  28x28 and 32x32, three for 64x64), and the decoder mirrors them with
  transposed convolutions.
- `gated_mlp`: the VampPrior paper's "VAE" networks (Tomczak & Welling 2018,
  jmtomczak/vae_vampprior): two `GatedDense` layers of `hidden_units` in the
  encoder and, mirrored, in the decoder; He initialisation; the posterior
  log-variance clamped to [-6, 2].
- `hvae` and `conv_hvae`: the same paper's two-level models (HVAE and
  ConvHVAE, `keras_vae.hvae.HVAE`), z2 on top with the prior, z1 below it:
  q(z2|x), q(z1|x,z2), p(z1|z2) and p(x|z1,z2). `hvae` uses `GatedDense`
  layers of `hidden_units`; `conv_hvae` reads and writes images with
  `GatedConv2D` stacks of `base_filters` and 2 * `base_filters` channels.

Every encoder maps images `(batch, H, W, C)` in [0, 1] (and, for a
conditional model, a one-hot label) to `(batch, 2 * latent_dim)`: the
posterior mean, then the raw log-variance. Every decoder maps latents (and
the label) to the likelihood's parameters `(batch, H, W, C * params)`. A
two-level model's decoder takes the code `concat([z1, z2])`, `(batch, 2 *
latent_dim)`, and its two extra networks map `[image, z2]` and `z2` to the
parameters of q(z1|x,z2) and p(z1|z2), `(batch, 2 * latent_dim)` each.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable

import keras
import numpy as np

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

    W and V are stored side by side as one `kernel` `(fan_in, 2 * units)`, b
    and c as one `bias`: one matrix product of twice the width per call
    instead of two, and half the variables for the optimizer to update.
    Weights saved in the older layout (W, b, V, c as four variables) load
    as they are.

    Args:
        units: int. Output size.
        kernel_initializer: the initializer of W and V. Defaults to
            `"he_normal"` (the paper's He initialisation; its scale depends
            on the fan-in only, so W and V are drawn as two such kernels).
    """

    def __init__(self, units: int, kernel_initializer="he_normal", **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        self.kernel = self.add_weight(
            shape=(fan_in, 2 * self.units), initializer=self.kernel_initializer, name="kernel"
        )
        self.bias = self.add_weight(shape=(2 * self.units,), initializer="zeros", name="bias")

    def call(self, inputs):
        both = keras.ops.matmul(inputs, self.kernel) + self.bias  # (batch, 2 * units)
        h, gate = keras.ops.split(both, 2, axis=-1)
        return h * keras.ops.sigmoid(gate)

    def load_own_variables(self, store):
        if len(store.keys()) == 4:  # the older layout: W, b, V, c
            kernel, bias, gate_kernel, gate_bias = (store[str(i)] for i in range(4))
            store = {
                "0": np.concatenate([kernel, gate_kernel], axis=-1),
                "1": np.concatenate([bias, gate_bias], axis=-1),
            }
        super().load_own_variables(store)

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


# --- two-level models (the VampPrior paper's HVAE and ConvHVAE) -------------

# The paper's width of the dense layers between the levels.
HVAE_HIDDEN_UNITS = 300


@keras.saving.register_keras_serializable(package="keras_vae")
class GatedConv2D(keras.layers.Layer):
    """A gated convolution (Dauphin et al. 2017), as the VampPrior paper's
    ConvHVAE uses it: h = conv(x) * sigmoid(conv_gate(x)), "same" padding.

    Args:
        filters: int. Output channels.
        kernel_size: int. Square kernel side.
        strides: int. Defaults to `1`.
    """

    def __init__(self, filters: int, kernel_size: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size, self.strides = int(filters), int(kernel_size), int(strides)
        options = dict(padding="same", kernel_initializer="he_normal", dtype=self.dtype_policy)
        self.conv = keras.layers.Conv2D(filters, kernel_size, strides, name="h", **options)
        self.gate = keras.layers.Conv2D(filters, kernel_size, strides, name="gate", **options)

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.gate.build(input_shape)

    def call(self, inputs):
        return self.conv(inputs) * keras.ops.sigmoid(self.gate(inputs))

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
        }


@keras.saving.register_keras_serializable(package="keras_vae")
class LatentSlice(keras.layers.Layer):
    """`code[:, start:start + size]`: one level's latents out of the code."""

    def __init__(self, start: int, size: int, **kwargs):
        super().__init__(**kwargs)
        self.start, self.size = int(start), int(size)

    def call(self, inputs):
        return inputs[:, self.start : self.start + self.size]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "size": self.size}


def check_conv_hvae_image_shape(image_shape) -> None:
    check_flat_image_shape(image_shape)
    if image_shape[0] % 4 or image_shape[1] % 4:
        raise UsageError(
            f"conv_hvae cannot take images of shape {tuple(image_shape)}: height and "
            "width must be multiples of 4 (two stride-2 stages). Resize the data, e.g. "
            "`--image-size 28`, or use `--architecture hvae`."
        )


def _params(x, latent_dim, name, dtype):
    return keras.layers.Dense(
        2 * latent_dim, kernel_initializer="he_normal", name=name, dtype=dtype
    )(x)


def _conv_features(image, base_filters, dtype):
    """The ConvHVAE's image reader: 5 gated convolutions (7, 3/2, 5, 3/2, 3),
    then flattened to 6 channels at a quarter of the side."""
    x = image
    for filters, kernel, stride in [(1, 7, 1), (1, 3, 2), (2, 5, 1), (2, 3, 2)]:
        x = GatedConv2D(base_filters * filters, kernel, stride, dtype=dtype)(x)
    x = GatedConv2D(6, 3, dtype=dtype)(x)
    return keras.layers.Flatten(dtype=dtype)(x)


def _image_features(image, width, dtype, conv):
    if conv:
        return _conv_features(image, width, dtype)
    return GatedDense(width, dtype=dtype)(keras.layers.Flatten(dtype=dtype)(image))


def _build_hvae_encoder(conv):
    def build(image_shape, latent_dim, width, num_classes=0, dtype=None):
        """Images -> q(z2|x) parameters `(batch, 2 * latent_dim)`."""
        del num_classes  # refused by HVAE
        (check_conv_hvae_image_shape if conv else check_flat_image_shape)(image_shape)
        image = keras.Input(shape=image_shape, name="image")
        x = _image_features(image, width, dtype, conv)
        if not conv:
            x = GatedDense(width, dtype=dtype)(x)
        return keras.Model(image, _params(x, latent_dim, "posterior_params", dtype), name="encoder")

    return build


def _build_hvae_z1_encoder(conv):
    def build(image_shape, latent_dim, width, dtype=None):
        """`[image, z2]` -> q(z1|x,z2) parameters `(batch, 2 * latent_dim)`."""
        image = keras.Input(shape=image_shape, name="image")
        z2 = keras.Input(shape=(latent_dim,), name="z2")
        from_x = _image_features(image, width, dtype, conv)
        units = int(from_x.shape[-1]) if conv else width
        from_z2 = GatedDense(units, dtype=dtype)(z2)
        joint = keras.layers.Concatenate(dtype=dtype)([from_x, from_z2])
        x = GatedDense(HVAE_HIDDEN_UNITS if conv else width, dtype=dtype)(joint)
        return keras.Model(
            [image, z2], _params(x, latent_dim, "z1_posterior_params", dtype), name="encoder_z1"
        )

    return build


# encoder_z1 -> its parts, built once; an entry goes when its network does.
_Z1_PARTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def z1_encoder_parts(encoder_z1):
    """q(z1|x,z2)'s network as its two parts, sharing its layers (and weights):
    `image -> features` and `[features, z2] -> parameters`, or None for a
    network not built by `_build_hvae_z1_encoder` (no one join of the two).

    The importance-weighted bound draws K samples of z2 per image; with the
    parts it reads each image once instead of K times."""
    if encoder_z1 not in _Z1_PARTS:
        joins = [x for x in encoder_z1.layers if isinstance(x, keras.layers.Concatenate)]
        parts = None
        if len(joins) == 1 and len(encoder_z1.inputs) == 2:
            from_x = joins[0].input[0]
            image, z2 = encoder_z1.inputs
            parts = (keras.Model(image, from_x), keras.Model([from_x, z2], encoder_z1.outputs[0]))
        _Z1_PARTS[encoder_z1] = parts
    return _Z1_PARTS[encoder_z1]


def build_hvae_z1_prior(latent_dim, width=HVAE_HIDDEN_UNITS, dtype=None):
    """z2 -> p(z1|z2) parameters `(batch, 2 * latent_dim)`: two `GatedDense`."""
    z2 = keras.Input(shape=(latent_dim,), name="z2")
    x = z2
    for _ in range(2):
        x = GatedDense(width, dtype=dtype)(x)
    return keras.Model(z2, _params(x, latent_dim, "z1_prior_params", dtype), name="prior_z1")


def _build_hvae_decoder(conv):
    def build(image_shape, latent_dim, params_per_channel=1, width=300, num_classes=0, dtype=None):
        """The code `concat([z1, z2])` -> p(x|z1,z2) parameters."""
        del num_classes
        height, width_px, channels = image_shape
        code = keras.Input(shape=(2 * latent_dim,), name="z")
        levels = [LatentSlice(i * latent_dim, latent_dim, dtype=dtype)(code) for i in range(2)]
        outputs = height * width_px * channels * params_per_channel
        if conv:  # each level becomes an image-sized map; gated convolutions join them
            maps = [
                keras.layers.Reshape(image_shape, dtype=dtype)(
                    GatedDense(height * width_px * channels, dtype=dtype)(z)
                )
                for z in levels
            ]
            x = keras.layers.Concatenate(dtype=dtype)(maps)
            for _ in range(3):
                x = GatedConv2D(2 * width, 3, dtype=dtype)(x)
            x = keras.layers.Conv2D(
                channels * params_per_channel, 1, name="likelihood_params", dtype=dtype
            )(x)
            return keras.Model(code, x, name="decoder")
        joint = keras.layers.Concatenate(dtype=dtype)(
            [GatedDense(width, dtype=dtype)(z) for z in levels]
        )
        x = GatedDense(width, dtype=dtype)(joint)
        x = keras.layers.Dense(
            outputs, kernel_initializer="he_normal", name="likelihood_params", dtype=dtype
        )(x)
        x = keras.layers.Reshape((height, width_px, channels * params_per_channel), dtype=dtype)(x)
        return keras.Model(code, x, name="decoder")

    return build


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
        levels: int. Stochastic levels: 1, or 2 for `keras_vae.hvae.HVAE`.
        build_z1_encoder: two levels: `(image_shape, latent_dim, width,
            dtype)` -> q(z1|x,z2) network, inputs `[image, z2]`.
        build_z1_prior: two levels: `(latent_dim, dtype)` -> p(z1|z2) network.
    """

    name: str
    build_encoder: Callable
    build_decoder: Callable
    width_argument: str
    log_var_range: tuple
    check_image_shape: Callable
    levels: int = 1
    build_z1_encoder: Callable | None = None
    build_z1_prior: Callable | None = None


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
    **{
        name: Architecture(
            name,
            _build_hvae_encoder(conv),
            _build_hvae_decoder(conv),
            "base_filters" if conv else "hidden_units",
            (-6.0, 2.0),
            check_conv_hvae_image_shape if conv else check_flat_image_shape,
            levels=2,
            build_z1_encoder=_build_hvae_z1_encoder(conv),
            build_z1_prior=build_hvae_z1_prior,
        )
        for name, conv in [("hvae", False), ("conv_hvae", True)]
    },
}


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise UsageError(
            "Invalid value received for argument `architecture`. Expected one of "
            f"{list(ARCHITECTURES)}. Received: architecture={name!r}"
        )
    return ARCHITECTURES[name]
