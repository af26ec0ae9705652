import keras
import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp
from conftest import assert_saving_round_trip, random_images

import keras_vae
from keras_vae import likelihoods, precision
from keras_vae.vae import VAE

tfd = tfp.distributions


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (64, 64, 3)])
@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli", "gaussian"])
def test_shapes(shape, likelihood):
    model = VAE(image_shape=shape, latent_dim=5, likelihood=likelihood)
    images = random_images(3, shape)
    mean, log_var = model.encode(images)
    assert mean.shape == log_var.shape == (3, 5)
    decoded = model.decode(mean)
    assert decoded["mean"].shape == (3, *shape)
    params = likelihoods.get_likelihood(likelihood).params_per_channel
    assert decoded["logits"].shape == (3, *shape[:2], shape[2] * params)
    assert model(images).shape == (3, *shape)
    terms = model.negative_elbo(images)
    for name in ("loss", "reconstruction", "kl"):
        assert terms[name].shape == (3,)
        assert np.isfinite(terms[name].numpy()).all()
    assert model.sample_prior(4)["images"].shape == (4, *shape)


def test_analytic_kl_matches_monte_carlo():
    model = VAE(latent_dim=4, seed=0)
    mean = tf.constant([[0.5, -1.0, 2.0, 0.0]])
    log_var = tf.constant([[-1.0, 0.5, 0.0, -3.0]])
    posterior = model.posterior(mean, log_var)
    analytic = model.kl_divergence(posterior, None).numpy()[0]
    z = posterior.sample(200_000, seed=(1, 2))
    monte_carlo = (posterior.log_prob(z) - model.prior_distribution().log_prob(z)).numpy()
    # Independent closed form: 0.5 * sum(var + mean^2 - 1 - log_var).
    closed = 0.5 * np.sum(np.exp(log_var) + mean**2 - 1.0 - log_var)
    np.testing.assert_allclose(analytic, closed, rtol=1e-5)
    stderr = monte_carlo.std() / np.sqrt(monte_carlo.size)
    assert abs(monte_carlo.mean() - analytic) < 4 * stderr


def test_bernoulli_term_is_summed_binary_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 28, 28, 1)).astype(np.float32) * 3
    x = rng.random((2, 28, 28, 1)).astype(np.float32)  # intensities, not only {0, 1}
    log_prob = likelihoods.get_likelihood("bernoulli").distribution(logits).log_prob(x)
    p = scipy.special.expit(logits.astype(np.float64))
    bce = -(x * np.log(p) + (1 - x) * np.log1p(-p)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(-log_prob.numpy(), bce, rtol=1e-5)


def test_gaussian_likelihood_matches_scipy():
    rng = np.random.default_rng(1)
    params = rng.normal(size=(2, 4, 4, 2)).astype(np.float32)
    x = rng.random((2, 4, 4, 1)).astype(np.float32)
    log_prob = likelihoods.get_likelihood("gaussian").distribution(params).log_prob(x)
    loc, raw = params[..., :1], params[..., 1:]
    scale = np.log1p(np.exp(raw)) + likelihoods.MIN_GAUSSIAN_SCALE
    expected = scipy.stats.norm(loc, scale).logpdf(x).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(log_prob.numpy(), expected, rtol=1e-4)


def test_deterministic_negative_elbo_and_terms_add_up():
    model = VAE(latent_dim=3)
    images = random_images(4)
    a = model.negative_elbo(images, sample=False)
    b = model.negative_elbo(images, sample=False)
    np.testing.assert_array_equal(a["loss"].numpy(), b["loss"].numpy())
    np.testing.assert_allclose(
        a["loss"].numpy(), (a["reconstruction"] + a["kl"]).numpy(), rtol=1e-6
    )


def _fit_losses(seed):
    keras.utils.set_random_seed(seed)
    model = VAE(latent_dim=4, seed=seed)
    model.compile(optimizer="adam")
    history = model.fit(random_images(256, seed=3), batch_size=64, epochs=2, verbose=0)
    return model, history.history["loss"]


def test_same_seed_same_losses_and_training_lowers_loss(tmp_path):
    model, first = _fit_losses(7)
    _, second = _fit_losses(7)
    assert first == second
    _, other = _fit_losses(8)
    assert other != first
    assert first[-1] < first[0]
    assert_saving_round_trip(model, random_images(4), tmp_path)


def test_beta_weights_kl_in_objective_only():
    images = random_images(64)
    logs, weights = {}, {}
    for beta in (0.0, 1.0):
        keras.utils.set_random_seed(0)
        model = VAE(latent_dim=2, beta=beta, seed=0)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        logs[beta] = model.train_on_batch(images, return_dict=True)
        weights[beta] = model.encoder.get_layer("posterior_params").get_weights()[0]
        # `loss` is the negative ELBO whatever beta is.
        np.testing.assert_allclose(
            logs[beta]["loss"], logs[beta]["reconstruction"] + logs[beta]["kl"], rtol=1e-5
        )
    # The same initial weights and noise: the reported loss is the same ...
    np.testing.assert_allclose(logs[0.0]["loss"], logs[1.0]["loss"], rtol=1e-5)
    # ... but beta entered the gradient: one step moves the encoder differently.
    assert np.abs(weights[0.0] - weights[1.0]).max() > 1e-4


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_distributions_float32(policy, tmp_path):
    keras.mixed_precision.set_global_policy(policy)
    model = VAE(latent_dim=4, seed=0)
    model.compile(optimizer="adam")
    assert model.encoder.layers[1].compute_dtype == policy.split("_")[1]
    mean, log_var = model.encode(random_images(2))
    assert mean.dtype == log_var.dtype == tf.float32
    history = model.fit(random_images(128), batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.negative_elbo(random_images(2))["loss"].dtype == tf.float32
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    # Reloaded under another global policy, the networks still compute as trained...
    keras.mixed_precision.set_global_policy("float32")
    images = random_images(4)
    reloaded = assert_saving_round_trip(model, images, tmp_path)
    assert reloaded.decoder.layers[-1].compute_dtype == policy.split("_")[1]
    # ...and `with_policy` gives a float32 copy (what export uses).
    full = precision.with_policy(reloaded, "float32")
    assert {layer.compute_dtype for layer in full.decoder.layers[1:]} == {"float32"}
    np.testing.assert_allclose(full(images).numpy(), model(images).numpy(), atol=0.05)


def test_bad_arguments_are_named():
    with pytest.raises(
        ValueError, match=r"Expected one of \['bernoulli'.*Received: likelihood='x'"
    ):
        VAE(likelihood="x")
    with pytest.raises(ValueError, match="Received: prior='x'"):
        VAE(prior="x")
    with pytest.raises(ValueError, match="Received: latent_dim=0"):
        VAE(latent_dim=0)
    with pytest.raises(ValueError, match=r"cannot take images of shape \(30, 30, 1\)"):
        VAE(image_shape=(30, 30, 1))


def test_registering_a_likelihood_is_one_function():
    name = "test_laplace"

    @keras_vae.register_likelihood(name, params_per_channel=2)
    def laplace(params):
        loc, raw = tf.split(params, 2, axis=-1)
        return tfd.Laplace(loc, tf.nn.softplus(raw) + 1e-3)

    model = VAE(latent_dim=2, likelihood=name)
    assert model.decode(tf.zeros((1, 2)))["logits"].shape == (1, 28, 28, 2)
    assert np.isfinite(model.negative_elbo(random_images(2))["loss"].numpy()).all()
    with pytest.raises(ValueError, match="already registered"):
        keras_vae.register_likelihood(name)(laplace)
