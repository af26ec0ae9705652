import gzip
import os
import shutil
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_vae import data
from keras_vae.vae import VAE


def test_tfds_path_with_mock_data_trains():
    with tfds.testing.mock_data(num_examples=16):
        ds, info = data.load("cifar10", "train")
        assert info.source == "tfds"
        assert info.image_shape == (32, 32, 3)
        assert info.num_classes == 10
        assert ds.element_spec["image"].dtype == tf.uint8
        batches = data.pipeline(ds, 8, shuffle=True, seed=0)
        images = next(iter(batches)).numpy()
    assert images.shape == (8, 32, 32, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    model = VAE(image_shape=info.image_shape, latent_dim=4)
    model.compile("adam")
    history = model.fit(batches, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_mock_celeb_a_resized_and_label_free():
    with tfds.testing.mock_data(num_examples=4):
        ds, info = data.load("celeb_a", "test")
        assert info.class_names == []  # celeb_a has attributes, no class label
        assert "label" not in ds.element_spec
        images = next(iter(data.pipeline(ds, 4, image_size=64))).numpy()
    assert images.shape == (4, 64, 64, 3)
    assert data.output_image_shape(info, 64) == (64, 64, 3)


def test_binarization_modes():
    images = np.full((6, 28, 28, 1), 128, np.uint8)
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": np.arange(6)})
    static = data.pipeline(ds, 6, binarize="static", shuffle=True, seed=1)
    first, second = (next(iter(static)).numpy() for _ in range(2))
    assert set(np.unique(first)) == {0.0, 1.0}
    assert abs(first.mean() - 128 / 255) < 0.02
    # Static: the same pixels every epoch (order aside).
    np.testing.assert_array_equal(
        np.sort(first.sum(axis=(1, 2, 3))), np.sort(second.sum(axis=(1, 2, 3)))
    )
    dynamic = data.pipeline(ds, 6, binarize="dynamic", seed=1)
    a, b = (next(iter(dynamic)).numpy() for _ in range(2))
    assert set(np.unique(a)) == {0.0, 1.0}
    assert (a != b).mean() > 0.3  # fresh pixels each time an image is seen
    again = next(iter(data.pipeline(ds, 6, binarize="dynamic", seed=1))).numpy()
    np.testing.assert_array_equal(a, again)  # ...and reproducible from the seed
    images_labels = next(iter(data.pipeline(ds, 6, with_labels=True)))
    np.testing.assert_array_equal(images_labels[1].numpy(), np.arange(6))
    with pytest.raises(ValueError, match=r"Expected one of \['none', 'dynamic', 'static'\]"):
        data.pipeline(ds, 6, binarize="yes")


def test_unknown_dataset_and_no_image_feature_fail_fast():
    start = time.time()
    with pytest.raises(ValueError, match="Unknown dataset 'no_such_dataset'"):
        data.load("no_such_dataset", "train")
    with pytest.raises(ValueError, match="'imdb_reviews' has no image feature"):
        data.load("imdb_reviews", "train")
    with pytest.raises(ValueError, match="'cifar10' is not prepared .*--download"):
        data.load("cifar10", "train", data_dir="/nonexistent-tfds-dir")
    assert time.time() - start < 30  # not TFDS's minutes of download retries


def test_real_fashion_mnist_local_copy(fashion_mnist_dir, tmp_path, monkeypatch):
    # A temporary directory of this process's own: under pytest-xdist the other
    # worker's autograph files land in the shared /tmp meanwhile.
    own_temp = tmp_path / "tmp"
    own_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own_temp))
    temp_entries = set(os.listdir(tempfile.gettempdir()))
    ds, info = data.load("fashion_mnist", "test[:100]", data_dir="/nonexistent-tfds-dir")
    # TFDS's empty mkdtemp("tfds") per unprepared builder is cleaned up.
    assert set(os.listdir(tempfile.gettempdir())) - temp_entries == set()
    assert info.source == fashion_mnist_dir
    assert info.class_names[9] == "Ankle boot"
    assert ds.element_spec["image"].shape == (28, 28, 1)
    assert ds.element_spec["image"].dtype == tf.uint8
    assert ds.element_spec["label"].dtype == tf.int64
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 100
    # The first test image of the official release is an ankle boot (label 9).
    assert examples[0]["label"] == 9
    assert 0 < examples[0]["image"].mean() < 255
    both, _ = data.load("fashion_mnist", "train[:10]+test[:5]", data_dir="/nonexistent-tfds-dir")
    assert len(list(both)) == 15


@pytest.mark.parametrize("damage", ["missing", "truncated", "altered"])
def test_damaged_local_files_are_named(fashion_mnist_dir, tmp_path, damage):
    for name in os.listdir(fashion_mnist_dir):
        shutil.copy(os.path.join(fashion_mnist_dir, name), tmp_path)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    if damage == "missing":
        target.unlink()
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:1000])
    else:
        raw = bytearray(gzip.decompress(target.read_bytes()))
        raw[100] = (raw[100] + 1) % 10
        target.write_bytes(gzip.compress(bytes(raw)))
    expected = {"missing": "Missing", "truncated": "Corrupted", "altered": "do not match"}[damage]
    with pytest.raises(ValueError, match=f"{expected}.*apt-get install --reinstall") as error:
        data.load(
            "fashion_mnist", "test", data_dir="/nonexistent-tfds-dir", local_dir=str(tmp_path)
        )
    assert str(target) in str(error.value)
