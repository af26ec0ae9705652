"""Convolutional encoder and decoder for a given image shape.

The architecture is the TensorFlow CVAE tutorial's, generalised: stride-2
convolutions halve the image until it is at most 8 pixels high (two for 28x28
and 32x32, three for 64x64), and the decoder mirrors them with transposed
convolutions.
"""

from __future__ import annotations

import keras

# The smallest feature map the encoder shrinks to, and the largest it stops at.
_MIN_SIDE = 4
_STOP_SIDE = 8


def num_downsamplings(image_shape: tuple[int, int, int]) -> int:
    """How many stride-2 stages an image of `image_shape` gets.

    Raises:
        ValueError: if the networks cannot take the shape.
    """
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(
            "Invalid value received for argument `image_shape`. Expected "
            f"(height, width, channels). Received: image_shape={image_shape}"
        )
    height, width, _ = image_shape
    stages = 0
    while max(height, width) > _STOP_SIDE or stages < 2:
        if height % 2 or width % 2 or min(height, width) // 2 < _MIN_SIDE:
            raise ValueError(
                f"The networks cannot take images of shape {tuple(image_shape)}: "
                "height and width must halve evenly down to 4-8 pixels "
                "(e.g. 28x28, 32x32, 64x64). Resize the data, e.g. "
                "`--image-size 64` on the command line."
            )
        height, width, stages = height // 2, width // 2, stages + 1
    return stages


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
    if num_classes:
        label = keras.Input(shape=(num_classes,), name="label")
        x = keras.layers.Concatenate(dtype=dtype)([x, label])
        inputs = [inputs, label]
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
    if num_classes:
        label = keras.Input(shape=(num_classes,), name="label")
        x = keras.layers.Concatenate(dtype=dtype)([inputs, label])
        inputs = [inputs, label]
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
