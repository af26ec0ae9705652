"""The decoder in other forms of the same function, sharing or copying its weights.

- `as_convolutions`: no transposed convolution (the `.tflite` exports; LiteRT
  runs it faster at batch 1).
- `fused_for_inference`: bias and activation fused by XLA, the output layer
  as a matmul plus a tap sum (the IW bound on CPU, about 1.4x faster).

Both are used through `VAE.with_decoder(form)`, so that the model's own
methods run with the other form.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


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


def fused_for_inference(decoder: keras.Model) -> keras.Model:
    """The same decoder function, faster to evaluate in TensorFlow on CPU.

    For inference only (the importance-weighted bound evaluates the decoder
    millions of times). It shares `decoder`'s weights, so it stays right
    while the model trains on. Two rewrites, each the same function:

    - a transposed convolution with an activation keeps oneDNN's
      transposed convolution but adds the bias and applies the activation
      in one XLA-compiled pass (TF would make two passes over the output,
      and its elementwise bfloat16 kernels are slow);
    - a stride-1 "same" transposed convolution with an odd kernel (the
      output layer) becomes one matrix product to its kh * kw * filters
      taps and an XLA-compiled sum of the shifted taps. oneDNN computes a
      convolution with a handful of output channels at a few percent of
      its matmul rate.

    Other layers are kept as they are. On 2 CPU cores (AVX512-BF16) the
    default 28x28 decoder runs about 1.4x faster (float32 and bfloat16)
    (`benchmarks/iw_speed.py`).
    """

    def convert(layer):
        if (
            type(layer) is keras.layers.Conv2DTranspose
            and layer.data_format == "channels_last"
            and layer.output_padding is None
        ):
            if _TapSumConvolution.applies_to(layer):
                return _TapSumConvolution(layer)
            if layer.activation is not keras.activations.linear:
                return _FusedActivationConvolution(layer)
        return layer

    return keras.models.clone_model(decoder, clone_function=convert)


class _SharedTransposedConvolution(keras.layers.Layer):
    """Computes `layer`'s function with `layer`'s own (shared) variables."""

    def __init__(self, layer, **kwargs):
        super().__init__(name=f"{layer.name}_fused", dtype=layer.dtype_policy, **kwargs)
        self.layer = layer

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def _bias(self, dtype):
        layer = self.layer
        return tf.cast(layer.bias, dtype) if layer.use_bias else tf.zeros([], dtype)


class _FusedActivationConvolution(_SharedTransposedConvolution):
    def call(self, inputs):
        layer = self.layer
        shape = tf.concat([tf.shape(inputs)[:1], layer.compute_output_shape(inputs.shape)[1:]], 0)
        outputs = tf.nn.conv2d_transpose(
            inputs,
            tf.cast(layer.kernel, inputs.dtype),
            shape,
            layer.strides,
            layer.padding.upper(),
            dilations=layer.dilation_rate,
        )
        return _xla_bias_activation(outputs, self._bias(inputs.dtype), layer.activation)


class _TapSumConvolution(_SharedTransposedConvolution):
    """#### Mathematical details

    A stride-1 transposed convolution with kernel w (kh, kw, out, in) and
    "same" padding p = (k - 1) / 2 per axis is
    y[i, j] = sum_{a, b} x[i + p - a, j + p - b] w[a, b]: the products
    x @ w[a, b] for every tap at once (one matmul to kh * kw * out columns),
    then a sum of kh * kw shifted slices of the zero-padded result.
    """

    @staticmethod
    def applies_to(layer):
        return (
            layer.padding == "same"
            and tuple(layer.strides) == (1, 1)
            and tuple(layer.dilation_rate) == (1, 1)
            and all(k % 2 for k in layer.kernel_size)
        )

    def call(self, inputs):
        layer = self.layer
        kh, kw = layer.kernel_size
        filters = layer.filters
        kernel = tf.cast(layer.kernel, inputs.dtype)  # (kh, kw, out, in)
        channels = tf.shape(kernel)[3]
        taps = tf.reshape(tf.transpose(kernel, [3, 0, 1, 2]), [channels, kh * kw * filters])
        products = tf.matmul(tf.reshape(inputs, [-1, channels]), taps)
        products = tf.reshape(products, tf.concat([tf.shape(inputs)[:3], [kh * kw * filters]], 0))
        return _xla_tap_sum(
            products, self._bias(inputs.dtype), (kh, kw), filters, layer.activation, inputs.dtype
        )


@tf.function(jit_compile=True, reduce_retracing=True)
def _xla_bias_activation(outputs, bias, activation):
    return activation(outputs + bias)


@tf.function(jit_compile=True, reduce_retracing=True)
def _xla_tap_sum(products, bias, kernel_size, filters, activation, dtype):
    kh, kw = kernel_size
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    height, width = tf.shape(products)[1], tf.shape(products)[2]
    # The sum and the bias in float32, rounded to the policy's dtype once.
    padded = tf.pad(tf.cast(products, tf.float32), [[0, 0], [ph, ph], [pw, pw], [0, 0]])
    total = 0.0
    for a in range(kh):
        for b in range(kw):
            tap = (a * kw + b) * filters
            # y[i] takes x[i + p - a]: row i + 2p - a of the padded products.
            total += padded[
                :,
                2 * ph - a : 2 * ph - a + height,
                2 * pw - b : 2 * pw - b + width,
                tap : tap + filters,
            ]
    return activation(tf.cast(total + tf.cast(bias, tf.float32), dtype))
