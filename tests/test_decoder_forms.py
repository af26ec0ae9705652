"""keras_vae/decoder_forms.py: the other forms compute the decoder's function."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vae import decoder_forms, networks


@pytest.mark.parametrize(
    "shape, params, classes", [((28, 28, 1), 1, 0), ((32, 32, 3), 2, 0), ((64, 64, 3), 1, 3)]
)
def test_decoder_as_convolutions_is_the_same_function(shape, params, classes):
    decoder = networks.build_decoder(shape, 6, params, 8, classes)
    rng = np.random.default_rng(0)
    # Weights of a trained network's scale, so that every tap matters.
    decoder.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in decoder.weights])
    converted = decoder_forms.as_convolutions(decoder)
    assert not any(isinstance(x, keras.layers.Conv2DTranspose) for x in converted.layers)
    z = tf.constant(rng.standard_normal((4, 6)), tf.float32)
    inputs = [z, tf.one_hot([0, 1, 2, 0], classes)] if classes else z
    want = decoder(inputs).numpy()
    assert np.abs(want).max() > 1.0
    np.testing.assert_allclose(converted(inputs).numpy(), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="Cannot rewrite"):
        decoder_forms.SubpixelConvolution.from_transposed(
            keras.layers.Conv2DTranspose(2, 5, strides=2, padding="same")
        )


@pytest.mark.parametrize(
    "shape, params, classes", [((28, 28, 1), 1, 0), ((32, 32, 3), 2, 0), ((64, 64, 3), 1, 3)]
)
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_decoder_is_the_same_function_and_shares_weights(shape, params, classes, policy):
    decoder = networks.build_decoder(shape, 6, params, 8, classes, dtype=policy)
    rng = np.random.default_rng(0)
    decoder.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in decoder.weights])
    fused = decoder_forms.fused_for_inference(decoder)
    kinds = [type(layer).__name__ for layer in fused.layers]
    assert kinds.count("_TapSumConvolution") == 1  # the output layer
    assert kinds.count("_FusedActivationConvolution") == len(kinds) - kinds.index("Reshape") - 2
    assert not fused.weights or all(
        any(w is v for v in decoder.weights) for w in fused.weights
    )  # no copies
    z = tf.constant(rng.standard_normal((4, 6)), tf.float32)
    inputs = [z, tf.one_hot([0, 1, 2, 0], classes)] if classes else z

    def check():
        want = tf.cast(decoder(inputs), tf.float32).numpy()
        got = tf.cast(tf.function(fused)(inputs), tf.float32).numpy()
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.abs(want).max() > 1.0
        if policy == "float32":
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        else:  # a few bfloat16 roundings (8-bit significand) at the output's scale
            np.testing.assert_allclose(got, want, rtol=0, atol=2**-6 * np.abs(want).max())

    check()
    last = decoder.get_layer("likelihood_params")
    last.kernel.assign(last.kernel * 2.0 + 0.1)  # training goes on: the form follows
    check()

    # A layer outside the rewrites' cases is kept as it is.
    odd = keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same", output_padding=1)
    clone = decoder_forms.fused_for_inference(keras.Sequential([keras.Input((4, 4, 3)), odd]))
    assert clone.layers[-1] is odd
