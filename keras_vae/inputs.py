"""What a `TrainConfig` names, loaded: its datasets, test images and shifted images.

The counts of real images behind the pictures and the exports live here, once.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_vae import data, distribute, networks
from keras_vae.config import TrainConfig
from keras_vae.errors import UsageError

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
        info: `data.DatasetInfo`.
        image_shape: `(H, W, C)` as the model sees the images.
    """

    train: object
    test: object
    validation: object
    steps_per_epoch: int
    info: data.DatasetInfo
    image_shape: tuple


def load_split(config: TrainConfig, dataset: str, split: str, shuffle_files: bool = False):
    """`data.load` of one split, with the config's data options."""
    return data.load(
        dataset,
        split,
        config.data_dir,
        config.download,
        image_size=config.image_size,
        channels=config.channels,
        test_fraction=config.test_fraction,
        shuffle_files=shuffle_files,
        seed=config.seed,
    )


def load_datasets(config: TrainConfig, strategy=None) -> Datasets:
    """Train, test and validation data, steps per epoch, the dataset's info and image shape.

    Under `multi_worker` every worker reads its own shard of the training set
    (each example once per epoch across the workers) and runs the same number
    of steps; elsewhere Keras splits each global batch over the replicas.
    """
    multi_worker = strategy is not None and distribute.is_multi_worker(strategy)
    # Workers take their shares by position: every one must read the same order.
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
    image_shape = data.output_image_shape(info, config.image_size)
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
            return data.pipeline(
                train_raw,
                context.get_per_replica_batch_size(config.batch_size),
                shuffle=True,
                shard=(context.num_input_pipelines, context.input_pipeline_id),
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
        train = data.pipeline(train_raw, config.batch_size, shuffle=True, repeat=True, **common)
    common["binarize"] = evaluation_binarize(config)
    evaluation_batch = evaluation_batch_size(config.batch_size, image_shape)
    test = data.pipeline(test_raw, evaluation_batch, **common)
    if steps_per_epoch is None:
        steps_per_epoch = -(-int(train_raw.cardinality()) // config.batch_size)
    validation = test
    if val_raw is not None:
        validation = data.pipeline(val_raw, evaluation_batch, **common)
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
    """The first `count` (None: all) images of a split as the model sees them.

    Returns float32 images in [0, 1], labels (None without a label feature)
    and class names. Its own uncached pipeline: reading part of a cached one
    would drop the cache.
    """
    raw, info = load_split(config, dataset, split)
    if count:
        raw = raw.take(count)
    labelled = bool(info.class_names)
    batches = data.pipeline(
        raw, 1000, cache=False, with_labels=labelled, **_test_pipeline_args(config)
    )
    if not labelled:
        return np.concatenate([b.numpy() for b in batches]), None, []
    pairs = [(x.numpy(), y.numpy()) for x, y in batches]
    images = np.concatenate([p[0] for p in pairs])
    return images, np.concatenate([p[1] for p in pairs]), info.class_names


def load_test_examples(config: TrainConfig, count: int | None = None):
    """The first `count` (None: all) test images, their labels or None, class names."""
    return _load_images(config, config.dataset, config.test_split, count)


def load_train_images(config: TrainConfig, count: int | None = None):
    """The first `count` (None: all) training images as the model sees them
    (a binarized run's fixed binarization), their labels or None, class names."""
    return _load_images(config, config.dataset, config.train_split, count)


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
