import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_saving_round_trip, random_images, require_fashion_mnist

from keras_vae import data, priors
from keras_vae.vae import VAE


@pytest.fixture(scope="module")
def real_images():
    require_fashion_mnist()
    raw, _ = data.load("fashion_mnist", "train[:3000]", data_dir="/nonexistent")
    return np.concatenate([b.numpy() for b in data.pipeline(raw, 500, binarize="static")])


@pytest.mark.parametrize("prior", ["mixture", "vamp"])
def test_learned_priors_train_and_round_trip(prior, real_images, tmp_path):
    keras.utils.set_random_seed(0)
    model = VAE(latent_dim=6, prior=prior, prior_components=5, seed=0)
    model.compile("adam")
    before = model.evaluate(real_images, batch_size=500, verbose=0, return_dict=True)["loss"]
    initial_prior = [w.numpy().copy() for w in model.prior_layer.weights]
    model.fit(real_images, batch_size=100, epochs=2, verbose=0)
    after = model.evaluate(real_images, batch_size=500, verbose=0, return_dict=True)["loss"]
    assert after < before - 100
    # The prior's own weights are learned.
    assert any(
        not np.allclose(a, w.numpy())
        for a, w in zip(initial_prior, model.prior_layer.weights, strict=True)
    )
    reloaded = assert_saving_round_trip(model, real_images[:4], tmp_path)
    np.testing.assert_array_equal(
        model.negative_elbo(real_images[:8], sample=False)["kl"].numpy(),
        reloaded.negative_elbo(real_images[:8], sample=False)["kl"].numpy(),
    )


def test_mixture_prior_density_and_monte_carlo_kl():
    model = VAE(latent_dim=2, prior="mixture", prior_components=3)
    prior = model.prior_distribution()
    z = tf.constant([[0.3, -1.0]])
    layer = model.prior_layer
    weights = tf.nn.softmax(layer.logits).numpy()
    scales = tf.nn.softplus(layer.raw_scales).numpy() + 1e-4
    locs = layer.locs.numpy()
    from scipy.stats import norm

    expected = np.log(
        sum(weights[k] * norm(locs[k], scales[k]).pdf(z.numpy()[0]).prod() for k in range(3))
    )
    assert prior.log_prob(z).numpy()[0] == pytest.approx(expected, rel=1e-5)
    # No closed-form KL for a mixture: the one-sample estimate log q(z) - log p(z).
    posterior = model.posterior(tf.zeros((1, 2)), tf.zeros((1, 2)))
    kl = model.kl_divergence(posterior, z).numpy()[0]
    assert kl == pytest.approx(float(posterior.log_prob(z)[0] - prior.log_prob(z)[0]), rel=1e-6)


def test_vamp_prior_is_the_posterior_at_its_pseudo_inputs():
    model = VAE(latent_dim=3, prior="vamp", prior_components=4)
    mean, log_var = model.encode(model.prior_layer.pseudo_inputs())
    component = model.posterior(mean[:1], log_var[:1])
    z = tf.constant([[0.1, 0.2, -0.3]])
    mixture = model.prior_distribution().log_prob(z).numpy()[0]
    each = model.posterior(mean, log_var).log_prob(z).numpy()
    assert mixture == pytest.approx(np.log(np.mean(np.exp(each))), rel=1e-5)
    assert component.log_prob(z).numpy()[0] == pytest.approx(each[0])


def test_prior_errors():
    with pytest.raises(ValueError, match="Received: prior_components=0"):
        VAE(prior="mixture", prior_components=0)
    with pytest.raises(ValueError, match="`free_bits` needs a per-dimension KL"):
        VAE(prior="vamp", free_bits=0.5)
    assert priors.available_priors() == ["mixture", "standard_normal", "vamp"]
    from export.signatures import signature_functions

    with pytest.raises(ValueError, match="standard_normal prior only"):
        signature_functions(VAE(prior="mixture", latent_dim=2))
    assert np.isfinite(
        VAE(prior="vamp", latent_dim=2).negative_elbo(random_images(2))["loss"]
    ).all()
