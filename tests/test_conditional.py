"""The conditional VAE: labels in, chosen classes out, through export too."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from conftest import REPO, assert_saving_round_trip, require_fashion_mnist

from keras_vae import data
from keras_vae.config import TrainConfig
from keras_vae.export import runner
from keras_vae.vae import VAE


@pytest.fixture(scope="module")
def labelled():
    require_fashion_mnist()
    raw, _ = data.load("fashion_mnist", "train[:3000]", data_dir="/nonexistent")
    pairs = [(x.numpy(), y.numpy()) for x, y in data.pipeline(raw, 500, with_labels=True)]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def test_conditional_model_trains_round_trips_and_generates_classes(labelled, tmp_path):
    images, labels = labelled
    keras.utils.set_random_seed(0)
    model = VAE(latent_dim=4, num_classes=10, seed=0)
    model.compile("adam")
    before = model.evaluate(images, labels, batch_size=500, verbose=0, return_dict=True)["loss"]
    model.fit(images, labels, batch_size=100, epochs=2, verbose=0)
    after = model.evaluate(images, labels, batch_size=500, verbose=0, return_dict=True)["loss"]
    assert after < before - 100
    reloaded = assert_saving_round_trip(model, (images[:4], labels[:4]), tmp_path)
    assert reloaded.num_classes == 10
    boots = model.sample_prior(labels=[9] * 5)
    assert boots["images"].shape == (5, 28, 28, 1)
    # The draws are decoded with the asked class, not another.
    np.testing.assert_allclose(
        boots["images"], model.decode(boots["z"], labels=[9] * 5)["mean"], atol=1e-6
    )
    shirts = model.decode(boots["z"], labels=[1] * 5)["mean"]
    assert np.abs(boots["images"] - shirts).max() > 0.1
    # Decoded from the same z, two classes give different pictures.
    z = tf.zeros((1, 4))
    assert (
        np.abs(model.decode(z, labels=[9])["mean"] - model.decode(z, labels=[1])["mean"]).max()
        > 0.1
    )
    # The label carries information: scoring with the right label beats a wrong one.
    right = model.negative_elbo(images[:200], sample=False, labels=labels[:200])["loss"].numpy()
    wrong = model.negative_elbo(images[:200], sample=False, labels=(labels[:200] + 5) % 10)["loss"]
    assert right.mean() < wrong.numpy().mean()


def test_conditional_errors(labelled):
    images, labels = labelled
    model = VAE(latent_dim=2, num_classes=10)
    with pytest.raises(ValueError, match="This VAE is conditional .num_classes=10.: pass `labels`"):
        model.encode(images[:2])
    with pytest.raises(
        ValueError,
        match=r"Label out of range: expected integers in \[0, 10\). Received: labels from 3 to 12",
    ):
        model.negative_elbo(images[:2], labels=[3, 12])
    with pytest.raises(ValueError, match="no VampPrior for a conditional model"):
        VAE(num_classes=3, prior="vamp")
    with tfds.testing.mock_data(num_examples=4):
        config = TrainConfig(dataset="celeb_a", image_size=32, conditional=True)
        with pytest.raises(ValueError, match="`--conditional` needs labels, and dataset 'celeb_a'"):
            data.load_datasets(config)


def test_conditional_cli_run_exports_label_signatures(tmp_path):
    require_fashion_mnist()
    out = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "train.py"),
            "--conditional",
            "--epochs",
            "1",
            "--train-split",
            "train[:4000]",
            "--test-split",
            "test[:500]",
            "--num-images",
            "8",
            "--iw-samples",
            "5",
            "--latent-dim",
            "4",
            "--output-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_config"]["num_classes"] == 10
    assert metrics["evaluation"]["iw_nll_nats"] < metrics["test"]["negative_elbo_nats"]
    samples = tf.io.decode_png(tf.io.read_file(str(out / "samples.png"))).numpy()
    height, width = 10 * 29 + 1, 8 * 29 + 1  # one row per class, 8 samples each
    factor = -(-512 // max(height, width))
    assert samples.shape[:2] == (height * factor, width * factor)
    assert "one row per class: T-shirt/top, Trouser" in (out / "report.html").read_text()
    for path in (metrics["exports"]["saved_model"], metrics["exports"]["tflite"]["float32"]):
        model = runner.open_model(path)
        assert set(model.signatures["score"].inputs) == {"images", "labels"}
        assert set(model.signatures["generate"].inputs) == {"labels"}
        generated = model.run("generate", {"labels": np.array([9, 9, 0], np.int32)})
        assert generated["images"].shape == (3, 28, 28, 1)
        with pytest.raises(ValueError, match="class indices >= 0"):
            model.run("generate", {"labels": np.array([-1], np.int32)})
        scored = model.run(
            "score",
            {"images": np.zeros((2, 28, 28, 1), np.uint8), "labels": np.array([1, 2], np.int32)},
        )
        assert np.isfinite(scored["negative_elbo"]).all()
