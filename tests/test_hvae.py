"""keras_vae/hvae.py: the two-level models (hvae, conv_hvae): the bound over
both latents, training on real data, saving, presets and export."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import (
    REPO,
    GaussianToy,
    assert_iw_bound_converges_from_above,
    assert_saving_round_trip,
    random_images,
    require_fashion_mnist,
)

from keras_vae import data
from keras_vae.config import TrainConfig
from keras_vae.errors import UsageError
from keras_vae.export import runner
from keras_vae.export.writer import export_all
from keras_vae.hvae import HVAE
from keras_vae.networks import z1_encoder_parts
from keras_vae.optimizers import AdamNormGrad
from keras_vae.vae import VAE

tfd = tfp.distributions


class TwoLevelLinearGaussian(GaussianToy):
    """z2 ~ N(0, I), z1 | z2 ~ N(A z2 + a, diag(t^2)), x | z1, z2 ~ N(W1 z1 +
    W2 z2 + b, s^2 I): log p(x) is known exactly (x is Gaussian).

    q(z2|x) and q(z1|x,z2) are the exact conditionals' means with the
    *diagonals* of their covariances, so q != p(z1, z2 | x) and the bounds are
    strict. `HVAE._log_weights` is run on it unchanged.
    """

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.latent_dim, d, n = 2, 2, 5
        self.a_mat = rng.normal(size=(d, d))
        self.a = rng.normal(size=d)
        self.t = np.array([0.7, 1.3])
        self.w1, self.w2 = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        self.b, self.s = rng.normal(size=n), 0.5
        # x | z2 ~ N(M z2 + mx, C), z1 integrated out.
        self.m = self.w1 @ self.a_mat + self.w2
        self.mx = self.w1 @ self.a + self.b
        self.c = self.w1 @ np.diag(self.t**2) @ self.w1.T + self.s**2 * np.eye(n)
        c_inv = np.linalg.inv(self.c)
        self.p2 = np.linalg.inv(np.eye(d) + self.m.T @ c_inv @ self.m)
        self.gain2 = self.p2 @ self.m.T @ c_inv
        self.p1 = np.linalg.inv(np.diag(self.t**-2) + self.w1.T @ self.w1 / self.s**2)
        decoder = keras.Sequential([keras.Input((2 * d,)), keras.layers.Dense(n)])
        decoder.set_weights([np.concatenate([self.w1.T, self.w2.T]), self.b])  # W1 z1 + W2 z2 + b
        super().__init__(seed, decoder, self.s)

    def _f(self, array):
        return tf.constant(np.asarray(array, np.float32))

    def _diag_log_var(self, cov, like):
        return tf.math.log(tf.broadcast_to(self._f(np.diag(cov)), tf.shape(like)))

    def encode_top(self, x, training=False, labels=None):
        mean = tf.matmul(tf.cast(x, tf.float32) - self._f(self.mx), self._f(self.gain2.T))
        return mean, self._diag_log_var(self.p2, mean)

    def prior_z1_params(self, z2, training=False):
        mean = tf.matmul(z2, self._f(self.a_mat.T)) + self._f(self.a)
        return mean, tf.math.log(tf.broadcast_to(self._f(self.t**2), tf.shape(mean)))

    def encode_z1(self, x, z2, training=False):
        prior_mean, _ = self.prior_z1_params(z2)
        residual = tf.cast(x, tf.float32) - tf.matmul(z2, self._f(self.w2.T)) - self._f(self.b)
        precision_mean = prior_mean * self._f(self.t**-2) + tf.matmul(
            residual, self._f(self.w1 / self.s**2)
        )
        mean = tf.matmul(precision_mean, self._f(self.p1.T))
        return mean, self._diag_log_var(self.p1, mean)

    def log_importance_weights(self, images, num_samples, labels=None):
        x = tf.cast(images, tf.float32)
        return HVAE._log_weights(self, x, *self.encode_top(x), num_samples)

    _encode_z1_samples = HVAE._encode_z1_tiled  # through this toy's own `encode_z1`

    def true_log_likelihood(self, x):
        cov = self.m @ self.m.T + self.c
        scale = tf.linalg.cholesky(self._f(cov))
        return tfd.MultivariateNormalTriL(self._f(self.mx), scale).log_prob(x)


def test_two_level_iw_bound_converges_to_the_true_likelihood_from_above():
    toy = TwoLevelLinearGaussian()
    x = (toy.mx + np.random.default_rng(1).normal(size=(200, 5)) * 2.0).astype(np.float32)
    true_nll = -float(tf.reduce_mean(toy.true_log_likelihood(x)))
    assert_iw_bound_converges_from_above(toy, x, true_nll, tolerance=0.03)


def _small(architecture="hvae", **kwargs):
    return HVAE(
        architecture=architecture, latent_dim=3, hidden_units=24, base_filters=4, seed=0, **kwargs
    )


def test_the_elbo_and_the_one_sample_weights_estimate_the_same_bound():
    """`negative_elbo` (closed-form KL of z1 given z2) and -log w with K=1
    (log-ratios) are two unbiased estimates of one -ELBO; the IW bound is below."""
    model, n = _small(), 10_000
    images = np.repeat(random_images(2, seed=2), n, axis=0)
    elbo = model.negative_elbo(images)["loss"].numpy().reshape(2, n)
    weights = model.log_importance_weights(images[::n], n).numpy()  # (n, 2)
    # Equal means, within 5 standard errors of the two estimates' difference.
    error = np.sqrt(elbo.var(axis=1) / n + weights.var(axis=0) / n)
    difference = elbo.mean(axis=1) + weights.mean(axis=0)
    assert np.all(np.abs(difference) < 5 * error), (difference, error)
    iw = -(tf.reduce_logsumexp(weights, axis=0) - np.log(float(n))).numpy()
    assert np.all(iw < elbo.mean(axis=1) - 5 * error)


@pytest.mark.parametrize("architecture", ["hvae", "conv_hvae"])
def test_the_bound_reads_each_image_once_with_the_z1_encoders_own_weights(architecture):
    """The IW bound runs q(z1|x,z2)'s image part once per image and its z2
    part per sample: the same parameters as the whole network on tiled images."""
    model, k = _small(architecture), 4
    x = random_images(3, seed=5)
    z2 = tf.random.stateless_normal([k * 3, model.latent_dim], seed=[0, 1])
    want = model._encode_z1_tiled(x, z2, k)
    got = model._encode_z1_samples(x, z2, k)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    features, head = z1_encoder_parts(model.encoder_z1)
    assert features(x).shape[0] == 3  # one row per image, not per sample
    parts = {id(v) for v in features.weights + head.weights}
    assert parts == {id(v) for v in model.encoder_z1.weights}  # shared, none new


def test_the_deterministic_score_is_the_two_level_elbo_at_the_means():
    """`negative_elbo(sample=False)`: z2 and z1 at their posterior means,
    decoded from the code [z1, z2], plus both KLs, from the model's parts."""
    model = _small()
    x = random_images(3, seed=4)
    mean2, log_var2 = model.encode_top(x)
    mean1, log_var1 = model.encode_z1(x, mean2)
    prior_mean1, prior_log_var1 = model.prior_z1_params(mean2)

    def kl(m, lv, pm, plv):  # diagonal Gaussians, closed form
        return 0.5 * np.sum(plv - lv + (np.exp(lv) + (m - pm) ** 2) / np.exp(plv) - 1, axis=-1)

    logits = model.decoder(np.concatenate([mean1, mean2], -1)).numpy().reshape(3, -1)
    flat = x.reshape(3, -1)
    reconstruction = np.sum(np.logaddexp(0, logits) - flat * logits, axis=-1)
    want = reconstruction + kl(mean1, log_var1, prior_mean1, prior_log_var1)
    want += kl(mean2, log_var2, 0.0, 0.0)
    got = model.negative_elbo(x, sample=False)
    np.testing.assert_allclose(got["loss"], want, rtol=1e-4)
    np.testing.assert_allclose(got["reconstruction"], reconstruction, rtol=1e-4)


def test_one_level_class_refuses_two_level_architectures_and_back():
    with pytest.raises(UsageError, match="HVAE"):
        VAE(architecture="hvae")
    with pytest.raises(UsageError, match="VAE"):
        HVAE(architecture="gated_mlp")
    assert VAE.class_for({"architecture": "conv_hvae"}) is HVAE
    assert VAE.class_for({"architecture": "gated_mlp"}) is VAE
    with pytest.raises(UsageError, match="conditional"):
        _small(num_classes=3)
    with pytest.raises(UsageError, match="free_bits"):
        _small(free_bits=0.5)
    for flags in ({"conditional": True}, {"free_bits": 0.1}):
        with pytest.raises(UsageError, match="--architecture hvae"):
            TrainConfig(architecture="hvae", **flags)


@pytest.fixture(scope="module")
def real_images():  # fewer than conftest's: two-level steps are slower
    require_fashion_mnist()
    config = TrainConfig(binarize="static", train_split="train[:256]")
    return data.load_train_images(config)[0]


@pytest.mark.parametrize(
    "architecture, likelihood, prior, objective",
    [
        ("hvae", "bernoulli", "vamp", "iwae"),
        ("conv_hvae", "continuous_bernoulli", "mixture", "elbo"),
    ],
)
def test_two_level_model_trains_round_trips_and_exports(
    architecture, likelihood, prior, objective, real_images, tmp_path
):
    model = _small(
        architecture, likelihood=likelihood, prior=prior, prior_components=4, objective=objective
    )
    model.compile(AdamNormGrad(1e-3))
    before = model.negative_elbo(real_images, sample=False)["loss"].numpy().mean()
    model.fit(real_images, batch_size=32, epochs=1, verbose=0)
    after = model.negative_elbo(real_images, sample=False)["loss"].numpy().mean()
    assert after < before  # one epoch of 8 steps on real data lowers the loss
    reloaded = assert_saving_round_trip(model, real_images[:4], tmp_path)
    assert isinstance(reloaded, HVAE)
    assert z1_encoder_parts(reloaded.encoder_z1) is not None  # the reloaded bound reads x once
    np.testing.assert_array_equal(
        reloaded.encoder_z1.get_weights()[0], model.encoder_z1.get_weights()[0]
    )
    # A preset of it comes back as the same two-level model through VAE.
    preset = model.save_to_preset(str(tmp_path / "preset"))
    again = VAE.from_preset(preset)
    assert isinstance(again, HVAE)
    np.testing.assert_allclose(again(real_images[:4]), model(real_images[:4]), atol=1e-6)
    if architecture != "conv_hvae":
        return  # the CLI test below exports an hvae
    # Export: the same signatures as a one-level model, over the code (z1, z2).
    images = (real_images[:40] * 255).astype(np.uint8)
    paths = export_all(model, str(tmp_path / "export"), "vae", images)
    z = np.random.default_rng(0).standard_normal((3, model.code_dim)).astype(np.float32)
    want_decode = model.decode(z)["mean"].numpy()
    score = model.negative_elbo(images[:3] / 255.0, sample=False)["loss"].numpy()
    noise = {"noise": z}
    if "uniform" in model.prior_layer.noise_inputs:
        noise["uniform"] = np.array([0.1, 0.5, 0.9], np.float32)
    want_noise = model.decode(model.code_from_noise(**noise)["z"])["mean"].numpy()
    for path in (paths["saved_model"], paths["tflite"]["float32"]):
        opened = runner.open_model(path)
        assert set(opened.signatures) >= {"decode", "score", "generate", "generate_from_noise"}
        got = opened.run("decode", {"z": z})["mean"]
        np.testing.assert_allclose(got, want_decode, atol=1e-5)
        got = opened.run("score", {"images": images[:3]})["negative_elbo"]
        np.testing.assert_allclose(got, score, rtol=1e-5, atol=1e-4)
        got = opened.run("generate_from_noise", noise)["images"]
        np.testing.assert_allclose(got, want_noise, atol=1e-5)
        assert opened.run("generate", {"count": np.array(5, np.int32)})["images"].shape[0] == 5


def test_two_level_cli_run_reports_the_bound_over_both_latents(tmp_path):
    """`--architecture hvae` end to end: train, IW bound, pictures, export."""
    require_fashion_mnist()
    out = str(tmp_path / "run")
    args = ["--architecture", "hvae", "--latent-dim", "4", "--hidden-units", "32"]
    args += ["--binarize", "dynamic", "--train-split", "train[:1000]", "--test-split"]
    args += ["test[:100]", "--iw-samples", "20", "--num-images", "8", "--epochs", "1"]
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), *args, "--output-dir", out],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    evaluation = metrics["evaluation"]
    assert evaluation["iw_nll_nats"] < evaluation["negative_elbo_nats"]
    assert len(evaluation["kl_per_dim_to_standard_normal_nats"]) == 8  # z1 and z2
    assert metrics["model_config"]["architecture"] == "hvae"
    model = keras.models.load_model(os.path.join(out, "model.keras"))
    assert isinstance(model, HVAE) and model.code_dim == 8
    opened = runner.open_model(os.path.join(out, "tflite", "vae", "1", "vae_float32.tflite"))
    assert opened.signatures["decode"].inputs["z"].shape == (None, 8)
    assert os.path.exists(os.path.join(out, "traversals.png"))
