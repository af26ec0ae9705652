"""Convolutional encoder and decoder for a given image shape.

The architecture is the TensorFlow CVAE tutorial's, generalised: stride-2
convolutions halve the image until it is at most 8 pixels high (two for 28x28
and 32x32, three for 64x64), and the decoder mirrors them with transposed
convolutions.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

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


def as_convolutions(decoder: keras.Model) -> keras.Model:
    """The same decoder function with no transposed convolution in it.

    Each `Conv2DTranspose` (3x3, "same", stride 1 or 2) becomes a plain
    convolution, followed for stride 2 by `depth_to_space` (the "sub-pixel"
    form: each of the 4 output phases is a 2x2 convolution of the input).
    The weights are rearranged, not learned: outputs match to float32
    rounding. LiteRT's XNNPACK runs this form about 1.6x faster at batch 1
    (a dynamic-batch TRANSPOSE_CONV needs a runtime output-shape tensor);
    TensorFlow runs the transposed form faster at large batches, so only the
    `.tflite` exports use it.
    """

    def convert(layer):
        if isinstance(layer, keras.layers.Conv2DTranspose):
            return SubpixelConvolution.from_transposed(layer)
        return layer  # shared, weights and all

    return keras.models.clone_model(decoder, clone_function=convert)


class SubpixelConvolution(keras.layers.Layer):
    """A 3x3 "same" `Conv2DTranspose` (stride 1 or 2) computed as a convolution.

    #### Mathematical details

    Per axis, a stride-2 transposed convolution with taps (w0, w1, w2) gives
    y[2m] = w0 x[m] + w2 x[m-1] and y[2m+1] = w1 x[m]: a 2x2 convolution over
    x padded by one row and column at the start, with 4 x filters outputs
    (one per output phase) rearranged by `depth_to_space(2)`. Stride 1 is the
    convolution with the spatially flipped kernel.
    """

    def __init__(self, kernel, bias, strides, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_value = np.asarray(kernel, np.float32)
        self.bias_value = np.asarray(bias, np.float32)
        self.strides = int(strides)
        self.activation = keras.activations.get(activation)

    @classmethod
    def from_transposed(cls, layer):
        stride = layer.strides[0]
        if (
            layer.padding != "same"
            or layer.strides[0] != layer.strides[1]
            or stride not in (1, 2)
            or (stride == 2 and tuple(layer.kernel_size) != (3, 3))
            or tuple(layer.dilation_rate) != (1, 1)
        ):
            raise ValueError(
                f"Cannot rewrite {layer.name}: only 'same' transposed convolutions with "
                "stride 1, or stride 2 and a 3x3 kernel, have a convolution form here."
            )
        kernel, bias = (np.asarray(w, np.float32) for w in layer.get_weights())
        filters = kernel.shape[2]  # kernel: (kh, kw, out, in)
        if stride == 1:
            weights = kernel[::-1, ::-1].transpose(0, 1, 3, 2)
        else:
            taps = {0: {1: 0, 0: 2}, 1: {1: 1}}  # phase -> {window row: kernel tap}
            weights = np.zeros((2, 2, kernel.shape[3], 4 * filters), np.float32)
            for a in (0, 1):
                for b in (0, 1):
                    phase = slice((2 * a + b) * filters, (2 * a + b + 1) * filters)
                    for row, tap_h in taps[a].items():
                        for col, tap_w in taps[b].items():
                            weights[row, col, :, phase] = kernel[tap_h, tap_w].T
            bias = np.tile(bias, 4)
        return cls(
            weights,
            bias,
            stride,
            layer.activation,
            name=f"{layer.name}_as_convolution",
            dtype=layer.dtype_policy,
        )

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=self.kernel_value.shape,
            initializer=keras.initializers.Constant(self.kernel_value),
            trainable=False,
            name="kernel",
        )
        self.bias = self.add_weight(
            shape=self.bias_value.shape,
            initializer=keras.initializers.Constant(self.bias_value),
            trainable=False,
            name="bias",
        )

    def call(self, inputs):
        kernel = tf.cast(self.kernel, inputs.dtype)
        bias = tf.cast(self.bias, inputs.dtype)
        if self.strides == 2:
            padded = tf.pad(inputs, [[0, 0], [1, 0], [1, 0], [0, 0]])
            outputs = tf.nn.depth_to_space(tf.nn.conv2d(padded, kernel, 1, "VALID") + bias, 2)
        else:
            outputs = tf.nn.conv2d(inputs, kernel, 1, "SAME") + bias
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        channels = self.kernel_value.shape[-1] // self.strides**2
        scale = self.strides
        return (
            batch,
            None if height is None else height * scale,
            None if width is None else width * scale,
            channels,
        )
