"""Image datasets -> tf.data pipelines.

Every source yields the same elements as `tfds.load`: dicts with a uint8
`image` `(H, W, C)` and, where the dataset has one, an int64 `label`.

Sources:
1. A path (`config.dataset_is_path`): a folder of image files in any depth
   of subfolders, or a `.npz`/`.npy` file of uint8 images. See `load_local`.
2. TFDS, from `data_dir` (prepared data, or a download when `download=True`).
3. Fashion-MNIST only: the official IDX files as Debian's
   `dataset-fashion-mnist` package installs them, parsed by TFDS's own MNIST
   builder and checked against the official contents' sha256.
Anything else fails at once with a message that says what to do, instead of
TFDS's minutes of download retries on a machine without internet.

Local arrays of every source have the base splits "train" and "test"; a
TFDS split string (`"train[:90%]"`, `"train[:10]+test[:5]"`) selects from
them with TFDS's own `ReadInstruction`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import os
import shutil
import sys
import tempfile
import types

import keras
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from export.images import read_image
from keras_vae import choices
from keras_vae.config import check_dataset_path, dataset_is_path
from keras_vae.errors import UsageError

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# sha256 of the *decompressed* official files (Debian's gzip headers differ
# from upstream's, so the .gz checksums that TFDS registers cannot match).
FASHION_MNIST_FILES = {
    "train": (
        (
            "train-images-idx3-ubyte.gz",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        60000,
    ),
    "test": (
        (
            "t10k-images-idx3-ubyte.gz",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        (
            "t10k-labels-idx1-ubyte.gz",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
        10000,
    ),
}
BINARIZE_MODES = choices.BINARIZE_MODES
# The files a folder dataset reads: keras.utils.image_dataset_from_directory's list.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# A folder or array without its own test split holds out a fraction chosen
# with this fixed seed, so train, evaluate and visualize see the same split
# whatever `--seed` is.
SPLIT_SEED = 0


@dataclasses.dataclass
class DatasetInfo:
    """What the rest of the package needs to know about a loaded dataset."""

    name: str
    image_shape: tuple  # (H, W, C) of the raw images
    class_names: list  # empty when the dataset has no label feature
    source: str  # "tfds", or the local directory or file read

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _image_and_label_keys(builder, name):
    features = builder.info.features
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    if not images:
        raise UsageError(
            f"Dataset {name!r} has no image feature (its features are "
            f"{sorted(features)}). Choose an image dataset such as "
            "fashion_mnist, mnist, kmnist, cifar10 or celeb_a."
        )
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    return images[0], (labels[0] if labels else None)


def load(
    name: str,
    split: str,
    data_dir: str | None = None,
    download: bool = False,
    local_dir: str = DEBIAN_FASHION_MNIST_DIR,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    test_fraction: float = 0.1,
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Loads one split of an image dataset as `{"image", "label"}` dicts.

    Args:
        name: str. A TFDS dataset name, e.g. `"fashion_mnist"`, or a path:
            a folder of images or a `.npz`/`.npy` file (see `load_local`).
        split: str. A TFDS split, slices included (`"train[:50000]"`).
        data_dir: str or None. TFDS data directory. Defaults to TFDS's own.
        download: bool. Let TFDS download and prepare the dataset (needs
            internet). Defaults to `False`.
        local_dir: str. Where to find the official Fashion-MNIST files.
        image_size: int or None. Paths only: resize images of mixed sizes to
            this square size as they are read (the pipeline resizes the rest).
        channels: int or None. 1 (grey) or 3 (RGB); None keeps the data's own.
        test_fraction: float. Paths without their own test split: the share
            held out as "test".

    Raises:
        UsageError: unknown dataset, no image feature, data not available, a
            missing or corrupted local file, or a bad image or array.
    """
    if dataset_is_path(name):
        arrays, class_names = load_local(name, image_size, channels, test_fraction)
        ds = _slice_arrays(split, arrays, name)
        image_shape = tuple(ds.element_spec["image"].shape)
        return ds, DatasetInfo(name, image_shape, list(class_names), name)
    with _tfds_scratch_dir():
        ds, info = _load(name, split, data_dir, download, local_dir)
    if channels and info.image_shape[-1] != channels:
        convert = tf.image.grayscale_to_rgb if channels == 3 else tf.image.rgb_to_grayscale
        ds = ds.map(
            lambda ex: {**ex, "image": convert(ex["image"])}, num_parallel_calls=tf.data.AUTOTUNE
        )
        info = dataclasses.replace(info, image_shape=(*info.image_shape[:-1], channels))
    return ds, info


@contextlib.contextmanager
def _tfds_scratch_dir():
    """Runs TFDS with a private temporary directory, removed afterwards.

    TFDS builds every builder of an unprepared dataset with a new, never
    removed `mkdtemp("tfds")` (`DatasetInfo.initialize_from_bucket`): two
    empty /tmp directories per offline load, thousands over a test suite.
    """
    scratch = tempfile.mkdtemp(prefix="keras_vae_tfds_")
    previous, tempfile.tempdir = tempfile.tempdir, scratch
    try:
        yield
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(scratch, ignore_errors=True)


def _load(name, split, data_dir, download, local_dir):
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise UsageError(
            f"Unknown dataset {name!r}: TFDS has no dataset by that name "
            f"({str(e).splitlines()[0]}). Pass a TFDS image dataset name such "
            "as fashion_mnist, mnist, kmnist, cifar10 or celeb_a."
        ) from None
    image_key, label_key = _image_and_label_keys(builder, name)
    class_names = list(builder.info.features[label_key].names) if label_key else []
    try:
        ds = tfds.load(name, split=split, data_dir=data_dir, download=download)
        source = "tfds"
    except AssertionError:  # TFDS's "could not find data ... not prepared".
        if name != "fashion_mnist" or not os.path.isdir(local_dir):
            raise UsageError(_not_available_message(name, builder)) from None
        ds = _load_local_fashion_mnist(split, local_dir)
        source = local_dir

    def standardise(example):
        out = {"image": example[image_key]}
        if label_key:
            out["label"] = tf.cast(example[label_key], tf.int64)
        return out

    ds = ds.map(standardise, num_parallel_calls=tf.data.AUTOTUNE)
    image_shape = tuple(ds.element_spec["image"].shape)
    return ds, DatasetInfo(name, image_shape, class_names, source)


def _not_available_message(name, builder):
    hint = ""
    if name == "fashion_mnist":
        hint = (
            " Or install the official files with `apt-get install "
            f"dataset-fashion-mnist` (they go to {DEBIAN_FASHION_MNIST_DIR})."
        )
    return (
        f"Dataset {name!r} is not prepared in {builder.data_dir_root} and "
        "downloading is off. Pass `--download` on a machine with internet "
        "(TFDS then keeps it in the data directory), or point `--data-dir` at "
        f"a TFDS data directory that holds it.{hint}"
    )


def _load_local_fashion_mnist(split, local_dir):
    """The official IDX files, parsed by TFDS's MNIST builder."""
    readers = {
        k: functools.partial(_read_fashion_mnist_split, k, local_dir) for k in ("train", "test")
    }
    sizes = {k: v[2] for k, v in FASHION_MNIST_FILES.items()}
    return _slice_arrays(split, readers, "the local Fashion-MNIST files", sizes)


def _slice_arrays(split: str, arrays: dict, what: str, sizes: dict | None = None):
    """A TFDS split string over in-memory splits -> a dataset of `{"image", "label"}`.

    `arrays` maps each base split to `(images, labels or None)`, or, with
    `sizes` given, to a function that returns them (called only for the
    splits the string names).
    """
    if sizes is None:
        sizes = {k: len(v[0]) for k, v in arrays.items()}
    try:
        instruction = tfds.core.ReadInstruction.from_spec(split)
        absolute = instruction.to_absolute(
            {k: types.SimpleNamespace(num_examples=n) for k, n in sizes.items()}
        )
    except (ValueError, AssertionError) as e:
        raise UsageError(
            f"Invalid split {split!r} for {what}: {e}. Expected a TFDS split over "
            f"{sorted(sizes)}, e.g. 'train[:90%]'."
        ) from None
    parts = []
    for part in absolute:
        source = arrays[part.splitname]
        images, labels = source() if callable(source) else source
        start = part.from_ or 0
        stop = part.to if part.to is not None else len(images)
        parts.append((images[start:stop], None if labels is None else labels[start:stop]))
    elements = {"image": np.concatenate([p[0] for p in parts])}
    if parts[0][1] is not None:
        elements["label"] = np.concatenate([p[1] for p in parts])
    return tf.data.Dataset.from_tensor_slices(elements)


@functools.lru_cache(maxsize=2)  # train, validation and test of one run parse once
def _read_fashion_mnist_split(split, local_dir):
    builder = tfds.builder("fashion_mnist")
    (image_file, image_sha), (label_file, label_sha), count = FASHION_MNIST_FILES[split]
    with tempfile.TemporaryDirectory(prefix="fashion_mnist_") as tmp:
        paths = []
        for filename, sha in ((image_file, image_sha), (label_file, label_sha)):
            paths.append(_decompress_verified(os.path.join(local_dir, filename), sha, tmp))
        examples = [ex for _, ex in builder._generate_examples(count, *paths)]
    images = np.stack([ex["image"] for ex in examples]).astype(np.uint8)
    labels = np.array([ex["label"] for ex in examples], dtype=np.int64)
    return images, labels


def _decompress_verified(path, sha256, out_dir):
    fix = (
        " Reinstall the official files (`apt-get install --reinstall "
        "dataset-fashion-mnist`) or use a prepared TFDS copy via `--data-dir`."
    )
    if not os.path.isfile(path):
        raise UsageError(f"Missing Fashion-MNIST file {path}.{fix}")
    target = os.path.join(out_dir, os.path.basename(path)[: -len(".gz")])
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
    except (OSError, EOFError) as e:
        raise UsageError(f"Corrupted Fashion-MNIST file {path} ({e}).{fix}") from None
    if digest.hexdigest() != sha256:
        raise UsageError(
            f"Corrupted Fashion-MNIST file {path}: its contents do not match the "
            f"official release (sha256 {digest.hexdigest()}, expected {sha256}).{fix}"
        )
    return target


def load_local(path, image_size=None, channels=None, test_fraction=0.1):
    """A folder of images or a `.npz`/`.npy` file -> uint8 splits and class names.

    - **A folder**: every `IMAGE_EXTENSIONS` file in any depth of
      subfolders, read by `export.images.read_image` (the reader of
      `serve_signature.py`: 16-bit, palette, 1-bit and alpha images by
      their PIL mode). Where every image sits in a first-level subfolder
      and there are two or more, those are the classes, named after the
      folders. `train/` and `test/` subfolders are the splits.
    - **A `.npz`**: `images` (or `x`) with optional integer `labels` (or
      `y`) and `class_names`; or `x_train`, `x_test` (+ `y_train`,
      `y_test`), as `keras.datasets` returns them. **A `.npy`**: images.
      uint8 pixels of rank 4 `(N, H, W, C)`, C = 1, 3 or 4, or rank 3
      `(N, H, W)` for grey.
    - Without its own test split, `test_fraction` of the images (at least
      one) is held out with `SPLIT_SEED`.
    - Channels follow the data (RGB if any image is RGB; alpha dropped), or
      `channels`. Images of mixed sizes need `image_size`.

    Returns:
        `({"train": (images, labels or None), "test": (...)}, class_names)`.

    Raises:
        UsageError: naming the path and the fix, for a missing path, an
            empty folder, a folder without images, an unreadable image, a
            bad array, mixed sizes without `image_size`, or too few images.
    """
    check_dataset_path(path)
    path = os.path.abspath(os.path.expanduser(path))
    stamp = os.stat(path).st_mtime_ns
    return _load_local(path, stamp, image_size, channels, float(test_fraction))


@functools.lru_cache(maxsize=2)  # one run reads its train, test and pictures from one parse
def _load_local(path, _stamp, image_size, channels, test_fraction):
    if os.path.isdir(path):
        splits, class_names = _read_folder(path, image_size)
    elif path.endswith((".npz", ".npy")):
        splits, class_names = _read_array_file(path)
    else:
        raise UsageError(
            f"--dataset {path}: not a folder, .npz or .npy file. Pass a folder of images "
            "(in any depth of subfolders) or a .npz/.npy file of uint8 images (N, H, W, C)."
        )
    if "test" not in splits:
        splits = _hold_out(path, *splits["all"], test_fraction)
    target = channels or (3 if any(x.shape[-1] >= 3 for x, _ in splits.values()) else 1)
    splits = {k: (_with_channels(x, target), y) for k, (x, y) in splits.items()}
    sizes = {x.shape[1:3] for x, _ in splits.values()}
    if len(sizes) > 1 and not image_size:
        raise UsageError(
            f"--dataset {path}: the splits have images of different sizes "
            f"{sorted(sizes)}; pass --image-size SIZE to resize them all to SIZE x SIZE."
        )
    return splits, class_names


def _hold_out(path, images, labels, fraction):
    n = len(images)
    n_test = max(1, round(n * fraction))
    if n_test >= n:
        raise UsageError(
            f"--dataset {path}: {n} image(s) cannot be split into training and test "
            f"images with --test-fraction {fraction}; add images, or give the data "
            "train/ and test/ subfolders (x_train and x_test in a .npz)."
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    test, train = order[:n_test], order[n_test:]
    pick = lambda index: None if labels is None else labels[index]  # noqa: E731
    return {"train": (images[train], pick(train)), "test": (images[test], pick(test))}


def _with_channels(images, channels):
    """uint8 (N, H, W, C) with C in 1, 3, 4 -> C = `channels` (alpha dropped)."""
    images = images[..., :3]
    if images.shape[-1] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    weights = np.array([0.2989, 0.587, 0.114])  # tf.image.rgb_to_grayscale's
    return np.round(images @ weights)[..., None].astype(np.uint8)


def _read_folder(root, image_size):
    subfolders = {d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))}
    if {"train", "test"} <= subfolders:
        train, names = _read_image_tree(os.path.join(root, "train"), image_size)
        test, test_names = _read_image_tree(os.path.join(root, "test"), image_size)
        if test_names != names:
            raise UsageError(
                f"--dataset {root}: train/ has the classes {names} but test/ has "
                f"{test_names}; give both the same class subfolders."
            )
        return {"train": train, "test": test}, names
    images, names = _read_image_tree(root, image_size)
    return {"all": images}, names


def _read_image_tree(root, image_size):
    files, others = [], 0
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs.sort()
        for name in sorted(names):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.join(folder, name))
            elif not name.startswith("."):
                others += 1
    if not files:
        what = f"holds {others} file(s) but no images" if others else "is empty"
        raise UsageError(
            f"--dataset {root}: the folder {what}. Put image files "
            f"({', '.join(IMAGE_EXTENSIONS)}) in it or in its subfolders."
        )
    first_level = [os.path.relpath(f, root).split(os.sep) for f in files]
    classes = sorted({parts[0] for parts in first_level if len(parts) > 1})
    labelled = len(classes) > 1 and all(len(parts) > 1 for parts in first_level)
    images, shapes = [], {}
    progress = keras.utils.Progbar(len(files), verbose=1 if sys.stdout.isatty() else 0)
    for i, file in enumerate(files):
        try:
            image = read_image(file)
        except ValueError as e:
            raise UsageError(f"--dataset: {e} Remove or replace that file.") from None
        shapes.setdefault(image.shape[:2], file)
        if image_size and image.shape[:2] != (image_size, image_size):
            image = _resize(image, image_size)
        images.append(image)
        if i % 256 == 0:
            progress.update(i)
    progress.update(len(files))
    if len(shapes) > 1 and not image_size:
        examples = ", ".join(
            f"{h}x{w} ({os.path.relpath(f, root)})" for (h, w), f in list(shapes.items())[:3]
        )
        raise UsageError(
            f"--dataset {root}: the images have {len(shapes)} different sizes, e.g. "
            f"{examples}. Pass --image-size SIZE to resize them all to SIZE x SIZE."
        )
    target = 3 if any(x.shape[-1] == 3 for x in images) else 1
    stacked = np.stack([_with_channels(x[None], target)[0] for x in images])
    labels = None
    if labelled:
        index = {name: i for i, name in enumerate(classes)}
        labels = np.array([index[parts[0]] for parts in first_level], np.int64)
    return (stacked, labels), (classes if labelled else [])


def _resize(image, size):
    resized = tf.image.resize(image, (size, size), antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()


def _read_array_file(path):
    fix = "Save uint8 images (N, H, W, C) with np.savez(path, images=..., labels=...)."
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError, OSError, EOFError or zipfile errors
        raise UsageError(
            f"--dataset {path}: not a readable {path[-4:]} file ({e}). {fix}"
        ) from None
    if isinstance(loaded, np.ndarray):
        return {"all": (_checked_images(path, "the array", loaded), None)}, []
    with loaded:
        keys = set(loaded.files)
        if "x_train" in keys and "x_test" in keys:
            parts = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
        elif keys & {"images", "x"}:
            parts = {
                "all": (
                    "images" if "images" in keys else "x",
                    "labels" if "labels" in keys else "y",
                )
            }
        else:
            raise UsageError(
                f"--dataset {path}: found the arrays {sorted(keys)}, expected `images` "
                f"(with optional `labels`) or `x_train` and `x_test`. {fix}"
            )
        splits = {}
        for split, (x_key, y_key) in parts.items():
            images = _checked_images(path, f"`{x_key}`", loaded[x_key])
            labels = (
                _checked_labels(path, y_key, loaded[y_key], len(images)) if y_key in keys else None
            )
            splits[split] = (images, labels)
        labelled = [y for _, y in splits.values() if y is not None]
        if labelled and len(labelled) != len(splits):
            raise UsageError(f"--dataset {path}: labels are given for one split only. {fix}")
        class_names = []
        if labelled:
            count = int(max(y.max() for y in labelled)) + 1
            class_names = [str(i) for i in range(count)]
            if "class_names" in keys:
                class_names = [str(n) for n in loaded["class_names"].tolist()]
                if len(class_names) < count:
                    raise UsageError(
                        f"--dataset {path}: {len(class_names)} class_names for labels up "
                        f"to {count - 1}. {fix}"
                    )
    return splits, class_names


def _checked_images(path, what, images):
    fix = "Save uint8 images (N, H, W, C) with np.savez(path, images=..., labels=...)."
    if images.dtype != np.uint8:
        raise UsageError(
            f"--dataset {path}: {what} holds {images.dtype} values; expected uint8 pixels "
            "0-255 (from [0, 1] floats: (x * 255).round().astype(np.uint8))."
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or not len(images):
        raise UsageError(
            f"--dataset {path}: {what} has shape {images.shape}; expected (N, H, W, C) "
            f"with N > 0 and C = 1, 3 or 4, or (N, H, W) for grey. {fix}"
        )
    return images


def _checked_labels(path, key, labels, count):
    if (
        labels.dtype.kind not in "iu"
        or labels.ndim != 1
        or len(labels) != count
        or (count and labels.min() < 0)
    ):
        raise UsageError(
            f"--dataset {path}: `{key}` must be {count} non-negative integer labels, one "
            f"per image; it is {labels.dtype} of shape {labels.shape}."
        )
    return labels.astype(np.int64)


def output_image_shape(info: DatasetInfo, image_size: int | None) -> tuple:
    """The image shape after the pipeline's optional square resize."""
    if not image_size:
        return info.image_shape
    return (image_size, image_size, info.image_shape[-1])


def pipeline(
    ds: tf.data.Dataset,
    batch_size: int,
    *,
    image_size: int | None = None,
    binarize: str = "none",
    shuffle: bool = False,
    seed: int | None = None,
    cache: bool = True,
    with_labels: bool = False,
    drop_remainder: bool = False,
    shard: tuple[int, int] | None = None,
    repeat: bool = False,
) -> tf.data.Dataset:
    """`{"image", "label"}` elements -> batches of float32 images in [0, 1].

    Order: resize -> static binarization -> cache (uint8) -> shuffle -> batch
    -> dynamic binarization -> float -> prefetch. Caching uint8 keeps memory at
    a quarter of float32.

    Args:
        ds: dataset from `load`.
        batch_size: int. Batch size (the global batch under tf.distribute).
        image_size: int or None. Resize to `image_size x image_size`.
        binarize: str. `"none"` keeps intensities; `"dynamic"` draws fresh
            Bernoulli pixels each time an image is seen; `"static"` binarizes
            once with a fixed seed. Defaults to `"none"`.
        shuffle: bool. Shuffle every epoch (seeded by `seed`).
        seed: int or None. Seed of shuffling and binarization.
        cache: bool. Cache the decoded images in memory.
        with_labels: bool. Yield `(images, labels)` instead of images.
        drop_remainder: bool. Drop the last partial batch.
        shard: `(num_shards, index)` or None. Keep only this worker's share:
            every example goes to exactly one shard, the same one every
            epoch (the dataset is first cut to a multiple of `num_shards`, so
            that every worker runs the same number of steps).
        repeat: bool. Repeat forever (then pass `steps_per_epoch` to `fit`).
    """
    if binarize not in BINARIZE_MODES:
        raise UsageError(
            "Invalid value received for argument `binarize`. Expected one of "
            f"{list(BINARIZE_MODES)}. Received: binarize={binarize!r}"
        )
    if with_labels and "label" not in ds.element_spec:
        raise UsageError("This dataset has no label feature; labels were requested.")
    seed = 0 if seed is None else int(seed)

    def prepare(index, example):
        image = example["image"]
        if image_size:
            image = tf.image.resize(image, (image_size, image_size), antialias=True)
            image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        if binarize == "static":
            uniform = tf.random.stateless_uniform(tf.shape(image), seed=[seed, index])
            image = tf.cast(uniform * 255.0 < tf.cast(image, tf.float32), tf.uint8) * 255
        return {**example, "image": image}

    ds = ds.enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if shard:
        num_shards, index = shard
        size = int(ds.cardinality())
        if size > 0:
            ds = ds.take(size - size % num_shards)
        ds = ds.shard(num_shards, index)
    if shuffle:
        ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if repeat:  # after shuffle and batch: each pass is one whole, reshuffled epoch
        ds = ds.repeat()
    # One fresh stateless seed per batch and epoch, reproducible from `seed`.
    noise_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def to_float(batch, noise_seed):
        images = to_unit_interval(batch["image"])
        if binarize == "dynamic":
            uniform = tf.random.stateless_uniform(tf.shape(images), seed=noise_seed)
            images = tf.cast(uniform < images, tf.float32)
        return (images, batch["label"]) if with_labels else images

    ds = tf.data.Dataset.zip(ds, noise_seeds).map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def to_unit_interval(images) -> tf.Tensor:
    """uint8 pixels -> float32 in [0, 1]: what the model takes."""
    return tf.cast(images, tf.float32) / 255.0


def to_uint8(images) -> np.ndarray:
    """[0, 1] float images -> uint8 pixels, the exported signatures' input."""
    return np.round(np.asarray(images) * 255).astype(np.uint8)
