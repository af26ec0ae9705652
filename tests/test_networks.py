"""keras_vae/networks.py: the architectures, GatedDense, and a gated_mlp VAE end to end."""

import keras
import numpy as np
import pytest
import scipy.special
import tensorflow as tf
from conftest import assert_saving_round_trip, random_images

from keras_vae import evaluation, networks
from keras_vae.export import runner
from keras_vae.export.writer import export_all
from keras_vae.optimizers import AdamNormGrad
from keras_vae.vae import VAE


def test_gated_dense_is_the_papers_formula():
    layer = networks.GatedDense(5)
    x = np.random.default_rng(0).normal(size=(3, 7)).astype(np.float32)
    layer(x)
    # W and V side by side in one kernel; non-zero biases, so that b and c
    # are checked too.
    w, v = np.split(layer.kernel.numpy(), 2, axis=-1)
    layer.bias.assign(np.concatenate([np.full(5, 0.3), np.full(5, -0.2)]).astype(np.float32))
    b, c = np.split(layer.bias.numpy(), 2)
    got = layer(x).numpy()
    want = (x @ w + b) * scipy.special.expit(x @ v + c)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # He initialisation: the kernel's spread follows sqrt(2 / fan_in).
    big = networks.GatedDense(400)
    big.build((None, 800))
    assert abs(np.std(big.kernel.numpy()) / np.sqrt(2 / 800) - 1) < 0.15


@pytest.mark.parametrize(
    "likelihood, prior, classes",
    [
        ("bernoulli", "standard_normal", 0),
        ("gaussian", "vamp", 0),
        ("continuous_bernoulli", "mixture", 3),
    ],
)
def test_gated_mlp_vae_trains_and_round_trips(likelihood, prior, classes, tmp_path):
    model = VAE(
        architecture="gated_mlp",
        hidden_units=32,
        latent_dim=5,
        likelihood=likelihood,
        prior=prior,
        prior_components=4,
        num_classes=classes,
        seed=0,
    )
    assert [type(layer).__name__ for layer in model.encoder.layers].count("GatedDense") == 2
    images = random_images(64)
    labels = np.arange(64) % classes if classes else None
    model.compile(AdamNormGrad(1e-3))
    data = (images, labels) if classes else images
    model.fit(tf.data.Dataset.from_tensor_slices(data).batch(32), epochs=1, verbose=0)
    inputs = (images[:4], labels[:4]) if classes else images[:4]
    reloaded = assert_saving_round_trip(model, inputs, tmp_path)
    assert isinstance(reloaded.optimizer, AdamNormGrad)
    _, log_var = model.encode(images[:4] * 0, labels=None if not classes else labels[:4])
    assert -6.0 <= float(tf.reduce_min(log_var)) and float(tf.reduce_max(log_var)) <= 2.0


def test_adam_norm_grad_takes_steps_of_adams_size_whatever_the_gradient_scale():
    moved = []
    for scale in (1e-4, 1e4):
        v = keras.Variable(np.ones(3, np.float32))
        opt = AdamNormGrad(0.1)
        opt.apply([tf.constant([3.0, 4.0, 0.0]) * scale], [v])
        moved.append(v.numpy())
    np.testing.assert_allclose(moved[0], moved[1], rtol=1e-5)
    assert moved[0][0] < 1.0 and moved[0][2] == 1.0


def test_gated_mlp_exports_the_same_signatures(tmp_path):
    model = VAE(architecture="gated_mlp", hidden_units=32, latent_dim=4, seed=0)
    images = (random_images(40, seed=1) * 255).astype(np.uint8)
    paths = export_all(model, str(tmp_path), "vae", images)
    z = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    want = model.decode(z)["mean"].numpy()
    x = images[:3].astype(np.float32) / 255.0
    score = model.negative_elbo(x, sample=False)["loss"].numpy()
    for path in (paths["saved_model"], paths["tflite"]["float32"]):
        opened = runner.open_model(path)
        np.testing.assert_allclose(opened.run("decode", {"z": z})["mean"], want, atol=1e-5)
        got = opened.run("score", {"images": images[:3]})["negative_elbo"]
        np.testing.assert_allclose(got, score, rtol=1e-5)


def test_gated_mlp_iw_bound_is_below_its_elbo():
    model = VAE(architecture="gated_mlp", hidden_units=32, latent_dim=4, seed=0)
    result = evaluation.evaluate(model, random_images(20), iw_samples=50, verbose=0)
    assert result["iw_nll_nats"] < result["negative_elbo_nats"]
    assert result["num_images"] == 20


def test_gated_dense_loads_weights_saved_in_the_four_variable_layout(tmp_path):
    # Presets and runs written before the fused kernel hold W, b, V, c apart.
    layer = networks.GatedDense(3)
    x = np.random.default_rng(0).random((4, 5)).astype("float32")
    layer(x)
    rng = np.random.default_rng(1)
    w, v = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    b, c = rng.normal(size=3), rng.normal(size=3)
    layer.load_own_variables({"0": w, "1": b, "2": v, "3": c})
    expected = (x @ w + b) / (1 + np.exp(-(x @ v + c)))
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-5)
    assert tuple(layer.kernel.shape) == (5, 6)


def test_fused_adam_takes_the_steps_of_keras_adam():
    from keras_vae.optimizers import Adam

    rng = np.random.default_rng(0)
    start = rng.normal(size=(6, 4)).astype("float32")
    grads = [rng.normal(size=(6, 4)).astype("float32") for _ in range(5)]
    results = []
    for optimizer in (keras.optimizers.Adam(1e-2), Adam(1e-2)):
        variable = keras.Variable(start)
        for g in grads:
            optimizer.apply_gradients([(tf.constant(g), variable)])
        results.append(np.asarray(variable))
    assert np.abs(results[1] - start).max() > 1e-2  # it moved
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-6)


def test_tensorboard_pictures_are_drawn_about_fifty_times_a_run():
    from keras_vae.training import picture_interval

    assert picture_interval(10) == 1 and picture_interval(2000) == 40


def test_steps_per_execution_divides_the_epoch():
    from keras_vae.training import steps_per_execution

    assert [steps_per_execution(n) for n in (500, 79, 16, 1)] == [20, 1, 16, 1]
