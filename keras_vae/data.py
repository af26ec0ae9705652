"""The data layer: a `TrainConfig` (or a dataset name) -> tf.data pipelines.

`load_datasets(config)` gives a run's training, validation and test
pipelines; `load_test_examples`, `load_sample` and friends the real images
behind pictures, exports and samplers. Below them, `load` reads one split of
a source and `pipeline` batches it.

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
import tempfile
import types

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_vae import choices, distribute, networks, prepared
from keras_vae.config import TrainConfig, dataset_is_path
from keras_vae.errors import UsageError
from keras_vae.local_data import load_local

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
# The training shuffle buffer: 10,000 images, or fewer where they would pass
# 128 MiB of uint8 (64x64 RGB: 10,000; 128x128 RGB: 2,730), so that a
# streamed dataset's memory does not grow with its images' size.
SHUFFLE_BUFFER = 10_000
SHUFFLE_BUFFER_BYTES = 1 << 27


@dataclasses.dataclass
class DatasetInfo:
    """What the rest of the package needs to know about a loaded dataset."""

    name: str
    image_shape: tuple  # (H, W, C) of the raw images
    class_names: list  # empty when the dataset has no label feature
    source: str  # "tfds", or the local directory or file read
    streamed: bool = False  # read from disk as it goes (else held in memory or by TFDS)

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
    shuffle_files: bool = False,
    seed: int | None = None,
    share: tuple[int, int] | None = None,
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
        shuffle_files: bool. A prepared path: read its shards in a shuffled
            order (seeded by `seed`), reshuffled at every pass.
        seed: int or None. The seed of `shuffle_files`.
        share: `(num_shares, index)` or None. A prepared path: only this
            worker's share, read from its own files (`prepared_share`).
            Other sources ignore it (`pipeline`'s `shard` divides them).

    Paths of `prepared.STREAM_MIN_IMAGES` images or more (or prepared by
    `keras-vae prepare`) are prepared once (`keras_vae.prepared`) and
    streamed from disk; smaller ones are read into memory. Both give the same
    images, labels and splits, and their elements carry the example's
    `index` in its split (the key of a static binarization).

    Raises:
        UsageError: unknown dataset, no image feature, data not available, a
            missing or corrupted local file, or a bad image or array.
    """
    if dataset_is_path(name):
        options = prepared.Options(name, image_size, channels, test_fraction, data_dir)
        found = prepared.ensure(options)
        if found is not None:
            return _load_prepared(options, found, split, shuffle_files, seed, share)
        arrays, class_names = load_local(name, image_size, channels, test_fraction)
        ds = _slice_arrays(split, arrays, name, with_index=True)
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


def prepared_share(instructions, num_shares: int, index: int) -> list:
    """Share `index` of `num_shares` of a split's file instructions, as
    `(filename, skip, take)`: the split's examples cut into equal contiguous
    runs (the remainder, fewer than `num_shares`, left out so that every
    worker runs the same steps), each read from its own files only."""
    rows = [(os.fspath(i.filename), i.skip, i.take) for i in instructions]
    size = sum(take for _, _, take in rows) // num_shares
    start, end, out, position = index * size, (index + 1) * size, [], 0
    for name, skip, take in rows:
        low, high = max(start, position), min(end, position + take)
        if low < high:
            out.append((name, skip + low - position, high - low))
        position += take
    return out


def _load_prepared(options, found, split, shuffle_files, seed, share=None):
    """One split of a prepared dataset, streamed from its TFRecord shards.

    TFDS's documented low-level read (`info.splits[split].file_instructions`),
    because TFDS's own `shuffle_files` refuses a dataset written in order
    (`disable_shuffling`), and the order is what makes slices mean what they
    mean in memory: in order, shard after shard; with `shuffle_files`, the
    shards in a fresh seeded order at every pass, 16 read at a time.
    """
    builder = tfds.builder_from_directory(options.tfds_dir)
    try:
        instructions = builder.info.splits[split].file_instructions
    except (ValueError, AssertionError, KeyError) as e:
        raise UsageError(
            f"Invalid split {split!r} for {options.path}: {e}. Expected a TFDS split over "
            f"{sorted(found['splits'])}, e.g. 'train[:90%]'."
        ) from None
    if share:
        rows = prepared_share(instructions, *share)
    else:
        rows = [(os.fspath(i.filename), i.skip, i.take) for i in instructions]
    total = sum(take for _, _, take in rows)
    files = tf.data.Dataset.from_tensor_slices(
        (
            [name for name, _, _ in rows] or np.zeros((0,), str),
            np.array([skip for _, skip, _ in rows], np.int64),
            np.array([take for _, _, take in rows], np.int64),
        )
    )
    if shuffle_files and len(rows) > 1:
        seed = 0 if seed is None else int(seed)
        files = files.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    ds = files.interleave(
        lambda name, skip, take: tf.data.TFRecordDataset(name).skip(skip).take(take),
        cycle_length=max(1, min(16, len(rows))) if shuffle_files else 1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    ds = ds.apply(tf.data.experimental.assert_cardinality(total))
    features = builder.info.features
    height, width, channels = found["image_shape"]

    def standardise(record):
        example = features.deserialize_example(record)
        image = example["image"]
        if channels == 3:  # grey images of an RGB folder were stored as read
            image = tf.broadcast_to(image, (height, width, 3))
        else:
            image = tf.ensure_shape(image, (height, width, 1))
        out = {"image": image, "index": example["index"]}
        if "label" in example:
            out["label"] = example["label"]
        return out

    ds = ds.map(standardise, num_parallel_calls=tf.data.AUTOTUNE)
    info = DatasetInfo(
        options.path, (height, width, channels), list(found["class_names"]), options.slot, True
    )
    return ds, info


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


def _slice_arrays(
    split: str, arrays: dict, what: str, sizes: dict | None = None, with_index: bool = False
):
    """A TFDS split string over in-memory splits -> a dataset of `{"image", "label"}`.

    `arrays` maps each base split to `(images, labels or None)`, or, with
    `sizes` given, to a function that returns them (called only for the
    splits the string names). `with_index` adds each example's `index` in
    its base split, as a prepared dataset's elements have it.
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
        stop = min(stop, len(images))
        parts.append(
            (images[start:stop], None if labels is None else labels[start:stop], start, stop)
        )
    elements = {"image": np.concatenate([p[0] for p in parts])}
    if parts[0][1] is not None:
        elements["label"] = np.concatenate([p[1] for p in parts])
    if with_index:
        elements["index"] = np.concatenate([np.arange(p[2], p[3], dtype=np.int64) for p in parts])
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

    def prepare(position, example):
        example = dict(example)
        # Local data carries the example's index in its split (so that a static
        # binarization follows the image whatever order shards are read in);
        # elsewhere the position in this dataset.
        index = example.pop("index", position)
        image = example["image"]
        if image_size and tuple(image.shape[:2]) != (image_size, image_size):
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
        pixels = int(np.prod(ds.element_spec["image"].shape))
        buffer = max(1_000, min(SHUFFLE_BUFFER, SHUFFLE_BUFFER_BYTES // pixels))
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
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


# What a `TrainConfig` names, loaded: its datasets, test images and shifted
# images. The counts of real images behind the pictures and the exports live
# here, once.

# Test images behind the latent-space, traversal and anomaly pictures.
PICTURE_IMAGES = 2000
# Real test images for TF Serving's warm-up file and the int8 calibration
# (the first of the picture images: no second load).
EXPORT_CALIBRATION_IMAGES = 200
# Validation and test batches: up to 1000 images (a hundred steps of the MLPs'
# batch of 100 became ten) and 2^20 pixel values (28x28: 1000; 64x64x3: the
# training batch).
EVALUATION_BATCH = 1000
EVALUATION_BATCH_PIXELS = 2**20
# The training images behind a GMM sampler's fit and the sample-quality
# classifier: all of them up to 60,000 (Fashion-MNIST's whole training split)
# and 2^28 pixel values (1 GiB of float32; 64x64 RGB: 21,845), else evenly
# spaced ones, so that memory does not grow with the dataset.
SAMPLE_IMAGES = 60_000
SAMPLE_PIXELS = 2**28


def evaluation_binarize(config: TrainConfig) -> str:
    """A binarized model is evaluated on one fixed binarization of the test set."""
    return "none" if config.binarize == "none" else "static"


@dataclasses.dataclass
class Datasets:
    """What `load_datasets` returns.

    Args:
        train, test, validation: the pipelines (`validation` is `test` when
            the config names no validation split). `train` repeats: each
            pass is one reshuffled epoch, so `fit` needs `steps_per_epoch`.
        steps_per_epoch: int. Optimizer steps in one epoch.
        info: `DatasetInfo`.
        image_shape: `(H, W, C)` as the model sees the images.
    """

    train: object
    test: object
    validation: object
    steps_per_epoch: int
    info: DatasetInfo
    image_shape: tuple


def load_split(
    config: TrainConfig, dataset: str, split: str, shuffle_files: bool = False, share=None
):
    """`load` of one split, with the config's data options."""
    return load(
        dataset,
        split,
        config.data_dir,
        config.download,
        image_size=config.image_size,
        channels=config.channels,
        test_fraction=config.test_fraction,
        shuffle_files=shuffle_files,
        seed=config.seed,
        share=share,
    )


def load_datasets(config: TrainConfig, strategy=None) -> Datasets:
    """Train, test and validation data, steps per epoch, the dataset's info and image shape.

    Under `multi_worker` every worker reads its own shard of the training set
    (each example once per epoch across the workers) and runs the same number
    of steps; elsewhere Keras splits each global batch over the replicas.
    """
    multi_worker = strategy is not None and distribute.is_multi_worker(strategy)
    # In-memory and TFDS data: workers take their shares by position, so every
    # one reads the same order. A prepared folder: each reads its own files.
    train_raw, info = load_split(
        config, config.dataset, config.train_split, shuffle_files=not multi_worker
    )
    test_raw, _ = load_split(config, config.dataset, config.test_split)
    val_raw = None
    if config.validation_split:
        val_raw, _ = load_split(config, config.dataset, config.validation_split)
    for flag, split, raw in (
        ("--train-split", config.train_split, train_raw),
        ("--test-split", config.test_split, test_raw),
        ("--validation-split", config.validation_split, val_raw),
    ):
        if raw is not None and int(raw.cardinality()) == 0:
            raise UsageError(
                f"`{flag} {split}` selects no images of {config.dataset}. Give a split "
                "with at least one image, e.g. 'train[:90%]' or 'train[50000:]'."
            )
    image_shape = output_image_shape(info, config.image_size)
    networks.get_architecture(config.architecture).check_image_shape(image_shape)  # fail now
    if config.conditional and not info.class_names:
        raise UsageError(
            f"`--conditional` needs labels, and dataset {config.dataset!r} has no class "
            "label feature. Drop --conditional or choose a labelled dataset."
        )
    common = dict(
        image_size=config.image_size,
        seed=config.seed,
        binarize=config.binarize,
        with_labels=config.conditional,
        cache=not info.streamed,  # a streamed dataset's memory must not grow with it
    )
    steps_per_epoch = None
    if multi_worker:
        workers = distribute.describe(strategy)["workers"]
        per_replica = distribute.check_batch_size(config.batch_size, strategy)
        per_worker = per_replica * strategy.num_replicas_in_sync // workers
        steps_per_epoch = int(train_raw.cardinality()) // workers // per_worker
        if steps_per_epoch < 1:
            raise UsageError(
                f"The training split has fewer than one global batch per worker "
                f"({int(train_raw.cardinality())} examples, {workers} workers, batch "
                f"{config.batch_size}). Lower --batch-size or use more data."
            )

        def shard_fn(context):
            share = (context.num_input_pipelines, context.input_pipeline_id)
            raw, shard = train_raw, share
            if info.streamed:  # this worker's own files, in a shuffled order
                raw, _ = load_split(
                    config, config.dataset, config.train_split, shuffle_files=True, share=share
                )
                shard = None
            return pipeline(
                raw,
                context.get_per_replica_batch_size(config.batch_size),
                shuffle=True,
                shard=shard,
                repeat=True,
                drop_remainder=True,
                **common,
            )

        train = strategy.distribute_datasets_from_function(shard_fn)
    else:
        # Repeated, so that one iterator serves the whole run: a finite dataset
        # makes Keras start a new one every epoch, and for this cached, shuffled
        # pipeline that took 1.4-4.8 s inside `fit` before its first batch (up
        # to a third of a VampPrior-MLP epoch on one AMD Genoa core; measured
        # with benchmarks/epoch_speed.py).
        train = pipeline(train_raw, config.batch_size, shuffle=True, repeat=True, **common)
    common["binarize"] = evaluation_binarize(config)
    evaluation_batch = evaluation_batch_size(config.batch_size, image_shape)
    test = pipeline(test_raw, evaluation_batch, **common)
    if steps_per_epoch is None:
        steps_per_epoch = -(-int(train_raw.cardinality()) // config.batch_size)
    validation = test
    if val_raw is not None:
        validation = pipeline(val_raw, evaluation_batch, **common)
    return Datasets(train, test, validation, steps_per_epoch, info, image_shape)


def evaluation_batch_size(batch_size: int, image_shape) -> int:
    """The batch of validation and the test record: the training batch times
    the largest factor that keeps it within `EVALUATION_BATCH` images and
    `EVALUATION_BATCH_PIXELS` pixel values (a multiple of the training batch
    divides among replicas as it does). Every example counts once whatever the
    batch, so the metrics mean the same; there are only fewer, larger steps."""
    pixels = int(np.prod(image_shape))
    largest = min(EVALUATION_BATCH, EVALUATION_BATCH_PIXELS // pixels)
    return batch_size * max(1, largest // batch_size)


def _test_pipeline_args(config: TrainConfig) -> dict:
    return dict(
        image_size=config.image_size, seed=config.seed, binarize=evaluation_binarize(config)
    )


def _load_images(config: TrainConfig, dataset: str, split: str, count: int | None):
    return _read_images(config, dataset, split, count)[:3]


def _read_images(
    config: TrainConfig, dataset: str, split: str, count: int | None, spread: bool = False
):
    """The first `count` (None: all) images of a split as the model sees them;
    with `spread`, a bounded sample instead (`SAMPLE_IMAGES`, `SAMPLE_PIXELS`):
    every k-th image, k the smallest that fits.

    Returns float32 images in [0, 1], labels (None without a label feature),
    class names and the size of what they were taken from. Its own uncached
    pipeline: reading part of a cached one would drop the cache.
    """
    raw, info = load_split(config, dataset, split)
    if count:
        raw = raw.take(count)
    total = int(raw.cardinality())
    if spread:
        pixels = int(np.prod(output_image_shape(info, config.image_size)))
        most = max(1, min(SAMPLE_IMAGES, SAMPLE_PIXELS // pixels))
        every = -(-total // most)
        if every > 1:
            if "index" not in raw.element_spec:  # the key of a static binarization
                raw = raw.enumerate().map(lambda i, example: {**example, "index": i})
            raw = raw.shard(every, 0)
    labelled = bool(info.class_names)
    batches = pipeline(raw, 1000, cache=False, with_labels=labelled, **_test_pipeline_args(config))
    if not labelled:
        return np.concatenate([b.numpy() for b in batches]), None, [], total
    pairs = [(x.numpy(), y.numpy()) for x, y in batches]
    images = np.concatenate([p[0] for p in pairs])
    return images, np.concatenate([p[1] for p in pairs]), info.class_names, total


def load_test_examples(config: TrainConfig, count: int | None = None):
    """The first `count` (None: all) test images, their labels or None, class names."""
    return _load_images(config, config.dataset, config.test_split, count)


def load_train_images(config: TrainConfig, count: int | None = None):
    """The first `count` (None: all) training images as the model sees them
    (a binarized run's fixed binarization), their labels or None, class names."""
    return _load_images(config, config.dataset, config.train_split, count)


def load_sample(config: TrainConfig, split: str):
    """A bounded, evenly spaced sample of a split (`_load_images`'s `spread`):
    images, labels or None, class names, and the split's size."""
    return _read_images(config, config.dataset, split, None, spread=True)


def sample_note(count: int, total: int) -> str:
    """`"50,000"`, or `"21,845 of 200,000 (evenly spaced)"` for a sample."""
    return f"{count:,}" if count == total else f"{count:,} of {total:,} (evenly spaced)"


def load_shifted_images(config: TrainConfig, name: str, count: int, image_shape):
    """Test images of another dataset for the anomaly picture, or None (with a note)."""
    try:
        images, _, _ = _load_images(config, name, "test", count)
    except UsageError as e:
        print(f"Anomaly picture skipped: shifted dataset {name!r} is not available. {e}")
        return None
    if images.shape[1:] != tuple(image_shape):
        print(
            f"Anomaly picture skipped: {name!r} has images of shape {images.shape[1:]}, "
            f"the model takes {tuple(image_shape)}."
        )
        return None
    return images


def to_unit_interval(images) -> tf.Tensor:
    """uint8 pixels -> float32 in [0, 1]: what the model takes."""
    return tf.cast(images, tf.float32) / 255.0


def to_uint8(images) -> np.ndarray:
    """[0, 1] float images -> uint8 pixels, the exported signatures' input."""
    return np.round(np.asarray(images) * 255).astype(np.uint8)
