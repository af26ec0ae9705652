"""FID, precision and recall in a small classifier's feature space."""

import keras
import numpy as np
import pytest
from conftest import require_fashion_mnist

from keras_vae import data, quality
from keras_vae.vae import VAE


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((20_000, 3))
    b = rng.standard_normal((20_000, 3)) * 2.0 + np.array([1.0, 0.0, 0.0])
    # ||mu||^2 + Tr(I + 4I - 2 (4I)^1/2) = 1 + 3 * (1 + 4 - 4) = 4.
    assert quality.frechet_distance(a, b) == pytest.approx(4.0, rel=0.03)
    assert quality.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_precision_and_recall_see_mode_dropping():
    rng = np.random.default_rng(0)
    real = np.concatenate([rng.normal(-5, 1, (500, 2)), rng.normal(5, 1, (500, 2))])
    same = np.concatenate([rng.normal(-5, 1, (500, 2)), rng.normal(5, 1, (500, 2))])
    one_mode = rng.normal(5, 1, (1000, 2))
    precision, recall = quality.precision_recall(real, same)
    assert precision > 0.9 and recall > 0.9
    precision, recall = quality.precision_recall(real, one_mode)
    assert precision > 0.9 and 0.4 < recall < 0.6  # every sample real, half the modes


@pytest.fixture(scope="module")
def fashion():
    require_fashion_mnist()

    def images(split):
        raw, _ = data.load("fashion_mnist", split, data_dir="/nonexistent")
        pairs = [(x.numpy(), y.numpy()) for x, y in data.pipeline(raw, 1000, with_labels=True)]
        return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])

    return images("train[:6000]"), images("test[:2000]")


def test_fid_orders_halves_samples_and_noise(fashion):
    (train_x, train_y), (test_x, test_y) = fashion
    classifier, accuracy = quality.train_classifier(train_x, train_y, test_x, test_y, 10)
    assert accuracy > 0.7
    extractor = quality.feature_extractor(classifier)
    first, second = (quality.features(extractor, half) for half in np.split(test_x, 2))
    noise = np.random.default_rng(0).random((1000, 28, 28, 1), dtype=np.float32)
    keras.utils.set_random_seed(0)
    vae = VAE(latent_dim=16, seed=0)
    vae.compile(keras.optimizers.Adam(1e-3))
    vae.fit(train_x, batch_size=128, epochs=3, verbose=0)
    samples = vae.sample_prior(1000)["images"].numpy()
    halves = quality.compare(first, second)
    versus_noise = quality.compare(first, quality.features(extractor, noise))
    versus_samples = quality.compare(first, quality.features(extractor, samples))
    assert halves["fid"] * 5 < versus_samples["fid"] < versus_noise["fid"]
    assert halves["precision"] > 0.8 and halves["recall"] > 0.8
    # Noise collapses to one small region of feature space: it may sit inside the
    # real support (precision 0.56 seen), but covers none of it (recall 0.0 seen).
    assert versus_noise["recall"] < 0.05 < halves["recall"]
    for result in (halves, versus_noise, versus_samples):
        assert 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1
