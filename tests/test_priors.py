import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import assert_saving_round_trip, random_images

from keras_vae import priors
from keras_vae.vae import VAE


@pytest.mark.parametrize(
    "prior, options",
    [("mixture", {}), ("vamp", {}), ("vamp", {"pseudo_inputs": "hardtanh"})],
    ids=["mixture", "vamp", "vamp-hardtanh"],
)
def test_learned_priors_train_and_round_trip(prior, options, real_images, tmp_path):
    keras.utils.set_random_seed(0)
    model = VAE(latent_dim=6, prior=prior, prior_components=5, seed=0, **options)
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
    _check_export(model, real_images, tmp_path)


def _check_export(model, real_images, tmp_path):
    """The SavedModel and LiteRT signatures of a mixture-prior model match it."""
    from keras_vae.export import export_all
    from keras_vae.export.runner import open_model
    from keras_vae.samplers import GaussianMixtureSampler

    pixels = (real_images[:40] * 255).astype(np.uint8)
    # A set GMM sampler: two tight components far apart, weights 0.3 and 0.7.
    d = model.latent_dim
    gmm = GaussianMixtureSampler(
        [0.3, 0.7], [[-4.0] * d, [4.0] * d], np.stack([np.eye(d) * 0.01] * 2)
    )
    paths = export_all(model, str(tmp_path / "export"), "vae", pixels, gmm=gmm)
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((5, model.latent_dim)).astype(np.float32)
    uniform = np.array([0.0, 0.1, 0.5, 0.9, 0.999], np.float32)
    # The component from the inverse CDF, and z, computed here in numpy.
    logits, locs, scales = (t.numpy() for t in model.prior_layer.mixture_parameters())
    cdf = np.cumsum(np.exp(logits) / np.exp(logits).sum())
    component = np.minimum(np.searchsorted(cdf, uniform, side="right"), len(cdf) - 1)
    z = locs[component] + scales[component] * noise
    terms = model.negative_elbo(real_images[:3], sample=False)
    for path, tolerance in (
        (paths["saved_model"], 1e-5),
        (paths["tflite"]["float32"], 1e-4),
        (paths["tflite"]["float16"], 2e-2),
    ):
        runner = open_model(path)
        assert set(runner.signatures["generate_from_noise"].inputs) == {"noise", "uniform"}
        generated = runner.run("generate_from_noise", {"noise": noise, "uniform": uniform})
        np.testing.assert_array_equal(generated["component"], component)
        np.testing.assert_allclose(generated["z"], z, atol=tolerance * 10)
        np.testing.assert_allclose(
            generated["images"], model.decode(z)["mean"].numpy(), atol=tolerance * 10
        )
        drawn = runner.run("generate_gmm", {"count": np.array(400, np.int32)})
        assert abs(drawn["component"].mean() - 0.7) < 0.1
        np.testing.assert_allclose(drawn["z"], gmm.means[drawn["component"]], atol=0.6)
        np.testing.assert_allclose(
            drawn["images"], model.decode(drawn["z"])["mean"].numpy(), atol=tolerance * 10
        )
        scored = runner.run("score", {"images": pixels[:3]})
        np.testing.assert_allclose(
            scored["negative_elbo"], terms["loss"].numpy(), rtol=tolerance, atol=tolerance
        )
        assert runner.run("generate", {"count": np.array(4, np.int32)})["images"].shape == (
            4,
            28,
            28,
            1,
        )
        with pytest.raises(ValueError, match=r"values must lie in \[0, 1\)"):
            runner.run("generate_from_noise", {"noise": noise[:1], "uniform": [1.5]})


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
    # from_noise (what export samples through) has the prior's distribution.
    draws = 20_000
    noise = tf.random.stateless_normal((draws, 2), seed=(1, 2))
    uniform = tf.random.stateless_uniform((draws,), seed=(3, 4))
    drawn = layer.from_noise(noise, uniform)
    samples, component = drawn["z"], drawn["component"]
    counts = np.bincount(component.numpy(), minlength=3) / draws
    np.testing.assert_allclose(counts, weights, atol=0.02)
    np.testing.assert_allclose(samples.numpy().mean(0), weights @ locs, atol=0.05)
    np.testing.assert_allclose(
        samples.numpy().mean(0), prior.sample(draws, seed=5).numpy().mean(0), atol=0.08
    )
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
    # Each component is the diagonal Gaussian posterior at its pseudo-input, by hand.
    m, v = mean.numpy(), np.exp(log_var.numpy())
    by_hand = -0.5 * (np.log(2 * np.pi * v) + (z.numpy() - m) ** 2 / v).sum(axis=1)
    np.testing.assert_allclose(each, by_hand, rtol=1e-5)
    assert component.log_prob(z).numpy()[0] == pytest.approx(by_hand[0], rel=1e-5)


def test_the_papers_pseudo_inputs_start_near_black_and_round_trip(tmp_path):
    """`pseudo_inputs="hardtanh"`: clip(raw, 0, 1) with raw ~ N(0.05, 0.01), as
    the paper's code; clipped pixels get no gradient; the form is part of the
    config, and a config saved without it (before it existed) is the sigmoid."""
    keras.utils.set_random_seed(0)
    model = VAE(latent_dim=3, prior="vamp", prior_components=200, pseudo_inputs="hardtanh")
    model.compile("adam")
    layer = model.prior_layer
    raw = layer.raw_pseudo_inputs.numpy()
    assert abs(raw.mean() - 0.05) < 1e-3 and abs(raw.std() - 0.01) < 1e-3
    layer.raw_pseudo_inputs.assign(np.linspace(-0.5, 1.5, raw.size).reshape(raw.shape))
    np.testing.assert_allclose(
        layer.pseudo_inputs().numpy(), np.clip(layer.raw_pseudo_inputs.numpy(), 0, 1)
    )
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(layer.pseudo_inputs())
    grad = tape.gradient(total, layer.raw_pseudo_inputs).numpy()
    raw = layer.raw_pseudo_inputs.numpy()
    inside = (raw > 0) & (raw < 1)
    assert (grad[inside] == 1).all() and (grad[~inside] == 0).all()
    config = model.get_config()
    assert config["pseudo_inputs"] == "hardtanh"
    reloaded = assert_saving_round_trip(model, random_images(4), tmp_path)
    assert reloaded.prior_layer.pseudo_inputs_form == "hardtanh"
    del config["pseudo_inputs"]
    assert VAE.from_config(config).prior_layer.pseudo_inputs_form == "sigmoid"
    sigmoid = VAE(latent_dim=3, prior="vamp", prior_components=200).prior_layer
    assert abs(sigmoid.pseudo_inputs().numpy().mean() - 0.5) < 0.01


def test_prior_errors():
    with pytest.raises(ValueError, match="Received: prior_components=0"):
        VAE(prior="mixture", prior_components=0)
    with pytest.raises(ValueError, match="`free_bits` needs a per-dimension KL"):
        VAE(prior="vamp", free_bits=0.5)
    with pytest.raises(ValueError, match="Received: pseudo_inputs='tanh'"):
        VAE(prior="vamp", pseudo_inputs="tanh")
    assert priors.available_priors() == ["mixture", "standard_normal", "vamp"]
    assert np.isfinite(
        VAE(prior="vamp", latent_dim=2).negative_elbo(random_images(2))["loss"]
    ).all()


def _random_mixture(dtype, components=50, latent=8, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=components)
    locs = rng.normal(size=(components, latent))
    scales = np.exp(rng.uniform(-3, 1, size=(components, latent)))  # the clamp's range
    return tuple(tf.constant(v, dtype) for v in (logits, locs, scales))


def test_mixture_log_prob_matches_tfp_in_value_and_gradient():
    """The matrix-product density is TFP's `MixtureSameFamily` density, values and
    gradients, also at points next to narrow components (where its expansion
    cancels), against a float64 reference; `portable_densities()` is TFP's form."""
    tfd = priors.tfd

    def mixtures(dtype, cls):
        logits, locs, scales = (tf.Variable(v) for v in _random_mixture(dtype))
        mixture = cls(tfd.Categorical(logits=logits), tfd.MultivariateNormalDiag(locs, scales))
        return mixture, [logits, locs, scales]

    reference, _ = mixtures(tf.float64, tfd.MixtureSameFamily)
    near = reference.sample([6, 50], seed=1)  # (6, 50, latent), each near some component
    far = tf.random.stateless_normal([3, 8], seed=(1, 1), dtype=tf.float64) * 4
    expected = reference.log_prob(near).numpy()
    z = tf.Variable(tf.cast(near, tf.float32))
    values, gradients = {}, {}
    for cls in (tfd.MixtureSameFamily, priors.DiagonalGaussianMixture):
        mixture, parameters = mixtures(tf.float32, cls)
        with tf.GradientTape() as tape:
            values[cls] = mixture.log_prob(z)
            total = tf.reduce_sum(values[cls])
        gradients[cls] = [g.numpy() for g in tape.gradient(total, [z, *parameters])]
    fast = values[priors.DiagonalGaussianMixture]
    assert fast.dtype == tf.float32 and fast.shape == (6, 50)
    np.testing.assert_allclose(fast.numpy(), expected, atol=2e-5)
    # No less exact than TFP's own float32 form.
    tfp_error = np.abs(values[tfd.MixtureSameFamily].numpy() - expected).max()
    assert np.abs(fast.numpy() - expected).max() <= 2 * tfp_error + 1e-6
    # Gradients, to the point and to the parameters (what training follows).
    for ours, theirs in zip(*gradients.values(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3)
    mixture, _ = mixtures(tf.float32, priors.DiagonalGaussianMixture)
    np.testing.assert_allclose(
        mixture.log_prob(tf.cast(far, tf.float32)).numpy(), reference.log_prob(far), rtol=1e-6
    )
    # For graphs without float64 (exported signatures), TFP's own form.
    with priors.portable_densities():
        graph = tf.function(mixture.log_prob).get_concrete_function(z).graph
        portable = mixture.log_prob(z).numpy()
    dtypes = {t.dtype for op in graph.get_operations() for t in op.outputs}
    assert tf.float64 not in dtypes
    np.testing.assert_array_equal(portable, values[tfd.MixtureSameFamily].numpy())
    graph = tf.function(mixture.log_prob).get_concrete_function(z).graph
    assert tf.float64 in {t.dtype for op in graph.get_operations() for t in op.outputs}
    # A mixture with a batch shape is left to TFP.
    logits, locs, scales = _random_mixture(tf.float32, components=5, latent=2)
    batched = priors.DiagonalGaussianMixture(
        tfd.Categorical(logits=tf.stack([logits, logits])),
        tfd.MultivariateNormalDiag(tf.stack([locs, locs + 1]), tf.stack([scales, scales])),
    )
    point = tf.zeros([4, 2, 2])
    np.testing.assert_allclose(
        batched.log_prob(point).numpy(),
        tfd.MixtureSameFamily(
            batched.mixture_distribution, batched.components_distribution
        ).log_prob(point),
        rtol=1e-6,
    )
