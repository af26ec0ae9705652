import copy
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

from keras_vae import data, evaluation  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from float32 and a clean Keras session."""
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
    yield
    keras.mixed_precision.set_global_policy("float32")


def require_fashion_mnist() -> str:
    """The official Fashion-MNIST files; required in CI, skipped elsewhere."""
    path = data.DEBIAN_FASHION_MNIST_DIR
    if not os.path.isfile(os.path.join(path, "t10k-images-idx3-ubyte.gz")):
        message = (
            f"real Fashion-MNIST files not found in {path}: `apt-get install dataset-fashion-mnist`"
        )
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run the real-data tests)")
        pytest.skip(message)
    return path


@pytest.fixture
def fashion_mnist_dir():
    return require_fashion_mnist()


@pytest.fixture(scope="module")
def real_images():
    """3000 Fashion-MNIST training images, binarized once (seeded)."""
    require_fashion_mnist()
    raw, _ = data.load("fashion_mnist", "train[:3000]", data_dir="/nonexistent")
    return np.concatenate([b.numpy() for b in data.pipeline(raw, 500, binarize="static")])


def random_images(n, shape=(28, 28, 1), seed=0):
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


def assert_saving_round_trip(model, images, tmp_path):
    """The shared harness: `.keras` and `get_config` round trips of a VAE."""
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model(images).numpy(), reloaded(images).numpy())
    for a, b in zip(model.weights, reloaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    if model.optimizer is not None and model.optimizer.built:
        assert int(reloaded.optimizer.iterations) == int(model.optimizer.iterations)
        for a, b in zip(model.optimizer.variables, reloaded.optimizer.variables, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    clone = type(model).from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    return reloaded


class GaussianToy:
    """The shared half of the toy models with a known log p(x) (one- and
    two-level linear Gaussians): N(0, I) prior on the top level's
    `latent_dim`, diagonal Gaussian posteriors, and p(x|z) = N(decoder(z),
    s^2 I) with a Keras `decoder`, so the evaluation's decoder forms apply."""

    def __init__(self, seed, decoder, s):
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.decoder, self.s = decoder, s

    def posterior(self, mean, log_var):
        return tfp.distributions.MultivariateNormalDiag(mean, tf.exp(0.5 * log_var))

    def prior_distribution(self):
        dims = self.latent_dim
        return tfp.distributions.MultivariateNormalDiag(tf.zeros(dims), tf.ones(dims))

    def likelihood_distribution(self, z, training=False, labels=None):
        normal = tfp.distributions.Normal(self.decoder(z), self.s)
        return tfp.distributions.Independent(normal, 1)

    def with_decoder(self, decoder):
        other = copy.copy(self)
        other.decoder = decoder
        return other

    def next_seed(self):
        return tf.cast(self.seed_generator.next(), tf.int32)


def assert_iw_bound_converges_from_above(model, x, true_nll: float, tolerance: float):
    """-L_K for K = 1, 10, 100, 2000 stays above -log p(x) (within Monte Carlo
    error), shrinks as K grows, ends within `tolerance` of it, and the ELBO
    (K = 1) is clearly looser."""
    bounds = [
        float(
            evaluation.importance_weighted_nll(model, tf.constant(x), k, chunk=50_000)
            .numpy()
            .mean()
        )
        for k in (1, 10, 100, 2000)
    ]
    assert min(bounds) > true_nll - 0.02, (bounds, true_nll)  # a bound: never below
    assert all(b < a + 0.02 for a, b in zip(bounds, bounds[1:], strict=False)), (
        bounds
    )  # tighter with K
    assert abs(bounds[-1] - true_nll) < tolerance, (bounds, true_nll)
    assert bounds[0] - true_nll > 0.1, (bounds, true_nll)
