"""`--dataset PATH`: folders of images and .npz/.npy arrays, read into the same
splits as TFDS data; every kind of bad input refused with the path and the fix."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from keras_vae import cli, data
from keras_vae.errors import UsageError


def write_png(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    array = np.asarray(array, np.uint8)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array, mode).save(path)


def image(value, shape=(28, 28, 1)):
    return np.full(shape, value, np.uint8)


def elements(ds):
    items = list(ds.as_numpy_iterator())
    labels = np.array([e["label"] for e in items]) if "label" in items[0] else None
    return np.stack([e["image"] for e in items]), labels


def test_class_subfolders_at_any_depth_become_labels(tmp_path):
    for i in range(10):  # "bags" one level down, "shoes" two levels down
        write_png(str(tmp_path / "bags" / f"{i}.png"), image(10))
        write_png(str(tmp_path / "shoes" / "left" / f"{i}.jpg"), image(240))
    (tmp_path / "notes.txt").write_text("not an image")  # files that are not images: ignored
    train, info = data.load(str(tmp_path), "train", test_fraction=0.2)
    test, _ = data.load(str(tmp_path), "test", test_fraction=0.2)
    assert info.class_names == ["bags", "shoes"] and info.image_shape == (28, 28, 1)
    assert info.source == str(tmp_path)
    (x_train, y_train), (x_test, y_test) = elements(train), elements(test)
    assert len(x_train) == 16 and len(x_test) == 4
    # Each image keeps its folder's label (bags are dark, shoes bright; JPEG is lossy).
    for x, y in ((x_train, y_train), (x_test, y_test)):
        assert np.all((x.mean(axis=(1, 2, 3)) > 128) == (y == 1))
    # The hold-out is seeded: the same split on every load, whatever --seed is.
    np.testing.assert_array_equal(
        elements(data.load(str(tmp_path), "test", test_fraction=0.2)[0])[0], x_test
    )
    # TFDS split strings select from the local splits.
    both, _ = data.load(str(tmp_path), "train[:3]+test[:1]", test_fraction=0.2)
    assert len(elements(both)[0]) == 4


def test_train_and_test_subfolders_are_the_splits(tmp_path):
    for split, n in (("train", 6), ("test", 3)):
        for name in ("a", "b"):
            for i in range(n):
                write_png(str(tmp_path / split / name / f"{i}.png"), image(i))
    train, info = data.load(str(tmp_path), "train")
    test, _ = data.load(str(tmp_path), "test")
    assert info.class_names == ["a", "b"]
    assert len(elements(train)[0]) == 12 and len(elements(test)[0]) == 6


def test_unlabelled_folder_and_channels(tmp_path):
    write_png(str(tmp_path / "grey.png"), image(100))
    write_png(str(tmp_path / "rgba.png"), np.full((28, 28, 4), (255, 0, 0, 7), np.uint8))
    write_png(str(tmp_path / "rgb.png"), np.full((28, 28, 3), (0, 0, 255), np.uint8))
    train, info = data.load(str(tmp_path), "train+test", test_fraction=0.3)
    x, labels = elements(train)
    # One RGB image makes the dataset RGB; grey is repeated, alpha dropped.
    assert info.class_names == [] and labels is None and x.shape == (3, 28, 28, 3)
    assert {tuple(p) for p in x[:, 0, 0]} == {(100, 100, 100), (255, 0, 0), (0, 0, 255)}
    grey, info = data.load(str(tmp_path), "train+test", test_fraction=0.3, channels=1)
    assert info.image_shape == (28, 28, 1)
    # tf.image.rgb_to_grayscale's weights: red 0.2989, blue 0.114.
    assert sorted(elements(grey)[0][:, 0, 0, 0]) == [29, 76, 100]


def test_mixed_sizes_need_image_size(tmp_path):
    write_png(str(tmp_path / "small.png"), image(50, (20, 30, 3)))
    write_png(str(tmp_path / "large.png"), image(50, (70, 64, 3)))
    with pytest.raises(UsageError, match="different sizes.*20x30.*--image-size"):
        data.load(str(tmp_path), "train", test_fraction=0.5)
    ds, info = data.load(str(tmp_path), "train+test", test_fraction=0.5, image_size=64)
    assert info.image_shape == (64, 64, 3)
    np.testing.assert_array_equal(elements(ds)[0], 50)


def test_array_files(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 8, 8), dtype=np.uint8)  # rank 3: grey
    labels = np.arange(20) % 2
    path = str(tmp_path / "set.npz")
    np.savez(path, images=images, labels=labels, class_names=np.array(["even", "odd"]))
    train, info = data.load(path, "train")
    test, _ = data.load(path, "test")
    assert info.class_names == ["even", "odd"] and info.image_shape == (8, 8, 1)
    (x_train, y_train), (x_test, y_test) = elements(train), elements(test)
    assert len(x_test) == 2 and len(x_train) == 18
    # Every image keeps its own label through the seeded hold-out.
    index = {images[i].tobytes(): i for i in range(20)}
    for x, y in ((x_train, y_train), (x_test, y_test)):
        np.testing.assert_array_equal([labels[index[im[..., 0].tobytes()]] for im in x], y)
    keras_style = str(tmp_path / "keras.npz")
    np.savez(
        keras_style,
        x_train=images[:15],
        y_train=labels[:15],
        x_test=images[15:],
        y_test=labels[15:],
    )
    test, info = data.load(keras_style, "test")
    assert info.class_names == ["0", "1"]
    np.testing.assert_array_equal(elements(test)[1], labels[15:])
    npy = str(tmp_path / "rgb.npy")
    np.save(npy, rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8))
    assert data.load(npy, "train")[1].image_shape == (8, 8, 3)


def bad_inputs(tmp_path):
    """(what, --dataset, the message's key words) for each bad input."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("hello")
    write_png(str(tmp_path / "corrupt" / "ok.png"), image(3))
    (tmp_path / "corrupt" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    write_png(str(tmp_path / "truncated" / "ok.png"), image(3))
    write_png(
        str(tmp_path / "truncated" / "cut.png"),
        np.random.default_rng(0).integers(0, 255, (28, 28, 1)),
    )
    whole = (tmp_path / "truncated" / "cut.png").read_bytes()
    (tmp_path / "truncated" / "cut.png").write_bytes(whole[: len(whole) // 2])
    np.savez(str(tmp_path / "float.npz"), images=np.zeros((4, 8, 8, 1), np.float32))
    np.savez(str(tmp_path / "rank.npz"), images=np.zeros((4, 8), np.uint8))
    np.savez(str(tmp_path / "keys.npz"), pixels=np.zeros((4, 8, 8, 1), np.uint8))
    np.savez(
        str(tmp_path / "labels.npz"),
        images=np.zeros((4, 8, 8, 1), np.uint8),
        labels=np.zeros(3, np.int64),
    )
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 broken")
    return [
        ("missing", str(tmp_path / "nowhere"), "no such file or folder"),
        ("empty folder", str(tmp_path / "empty"), "folder is empty"),
        ("no images", str(tmp_path / "texts"), "holds 1 file.*but no images.*\\.png"),
        (
            "corrupt image",
            str(tmp_path / "corrupt"),
            "bad.png: not a readable image.*Remove or replace",
        ),
        ("truncated image", str(tmp_path / "truncated"), "cut.png: not a readable image"),
        ("float array", str(tmp_path / "float.npz"), "float32 values; expected uint8"),
        ("wrong rank", str(tmp_path / "rank.npz"), "shape \\(4, 8\\); expected \\(N, H, W, C\\)"),
        (
            "unknown keys",
            str(tmp_path / "keys.npz"),
            "found the arrays \\['pixels'\\], expected `images`",
        ),
        ("label count", str(tmp_path / "labels.npz"), "must be 4 non-negative integer labels"),
        ("broken file", str(tmp_path / "broken.npz"), "not a readable .npz file"),
    ]


def test_bad_input_is_refused_with_the_path_and_leaves_no_run_directory(tmp_path, capsys):
    for what, dataset, message in bad_inputs(tmp_path):
        out = tmp_path / f"run-{what.replace(' ', '-')}"
        code = cli.main(["train", "--dataset", dataset, "--epochs", "1", "--output-dir", str(out)])
        err = capsys.readouterr().err
        assert code == 2, (what, err)
        assert os.path.basename(dataset) in err, (what, err)
        assert re.search(message, err), (what, err)
        assert not out.exists(), what


def test_bad_data_is_refused_before_tensorflow_loads(tmp_path):
    """The folder is read (numpy and PIL) before TensorFlow: bad data fails at once."""
    (tmp_path / "clothes").mkdir()
    (tmp_path / "clothes" / "bad.png").write_bytes(b"not a png")
    done = subprocess.run(
        [sys.executable, "-X", "importtime", os.path.join(REPO, "train.py")]
        + ["--dataset", str(tmp_path / "clothes"), "--output-dir", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 2 and "bad.png: not a readable image" in done.stderr
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "keras_vae.local_data" in imported  # the importtime listing is there
    assert "tensorflow" not in imported and "keras" not in imported
    assert not (tmp_path / "run").exists()
