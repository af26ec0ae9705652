import atexit
import copy
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Folders the tests prepare go to a cache of the test session's own, never ~/.cache.
if "KERAS_VAE_CACHE_DIR" not in os.environ:
    os.environ["KERAS_VAE_CACHE_DIR"] = tempfile.mkdtemp(prefix="keras_vae_test_cache_")
    atexit.register(shutil.rmtree, os.environ["KERAS_VAE_CACHE_DIR"], True)

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


# The tests that start subprocesses or train on real data: marked `slow`, so
# that `pytest -m "not slow"` is a quick loop. CI runs them all. (Measured with
# `pytest --durations`: each of these took 4 s or more on 2 CPU cores.)
SLOW_MODULES = {
    "test_train.py",
    "test_distribute.py",
    "test_packaging.py",
    "test_quality.py",
    # Their module fixtures train and export models (10-35 s each).
    "test_generate.py",
    "test_visualize.py",
    "test_export.py",
}
SLOW_TESTS = {
    "test_conditional_cli_run_exports_label_signatures",
    "test_conditional_model_trains_round_trips_and_generates_classes",
    "test_each_old_entry_point_runs_its_command",
    "test_importing_the_package_loads_no_tensorflow_and_still_registers_the_model",
    "test_help_loads_no_tensorflow",
    "test_evaluate_cli_updates_metrics",
    "test_objectives_train_round_trip_and_export",
    "test_export_cli_errors",
    "test_killed_export_leaves_previous_version_intact",
    "test_layout_and_versions",
    "test_saved_model_cli_runs_every_signature",
    "test_a_second_train_on_a_busy_run_directory_writes_nothing",
    "test_a_second_writer_is_refused_naming_the_first",
    "test_folder_run_trains_and_names_its_classes",
    "test_rgb_faces_of_mixed_sizes_train_at_image_size_and_generate_rgb",
    "test_two_level_cli_run_reports_the_bound_over_both_latents",
    "test_two_level_model_trains_round_trips_and_exports",
    "test_gated_mlp_exports_the_same_signatures",
    "test_a_model_trained_with_adamnormgrad_reloads_in_a_command_line",
    "test_shipped_preset_reproduces_its_recorded_bound_in_a_fresh_process",
    "test_learned_priors_train_and_round_trip",
    "test_same_seed_same_losses_and_training_lowers_loss",
    "test_every_picture_has_its_size_and_is_not_blank",
    "test_the_traversal_picture_labels_its_rows_and_columns",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.originalname if hasattr(item, "originalname") else item.name
        if item.path.name in SLOW_MODULES or name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
