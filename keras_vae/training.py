"""From a `TrainConfig` to a finished, self-describing run directory.

    config -> data -> model -> fit (backups, TensorBoard) -> test evaluation
           -> model.keras, metrics.json, samples.png, reconstructions.png

Everything that can be wrong with the input (dataset, shapes, run directory)
is checked before the run directory is created, so a bad command leaves
nothing behind. A run that dies mid-training leaves `backup/`, from which
`--resume` continues with the same epoch and optimizer state.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import sys

import keras
import numpy as np
import tensorflow as tf

from keras_vae import data, distribute, networks, precision, visualize
from keras_vae.config import TrainConfig
from keras_vae.vae import VAE

MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
# Real test images for TF Serving's warm-up file and the int8 calibration.
EXPORT_CALIBRATION_IMAGES = 200
# Test images behind the latent-space, traversal and anomaly pictures.
PICTURE_IMAGES = 2000
# Pictures logged to TensorBoard every epoch (the rest need a finished run).
EPOCH_PICTURES = ("samples", "reconstructions", "traversals", "interpolations", "latent_space")


def versions() -> dict:
    import tensorflow_datasets as tfds
    import tensorflow_probability as tfp

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tensorflow_probability": tfp.__version__,
        "tensorflow_datasets": tfds.__version__,
        "numpy": np.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


def default_output_dir(config: TrainConfig) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{config.dataset}-{stamp}")


def prepare_run_dir(config: TrainConfig) -> str:
    """Creates the run directory, or reopens it to resume.

    An existing directory is reopened with `--resume`, or when it holds an
    unfinished run with exactly this config (the same command started again
    after a crash); anything else is refused, never overwritten.
    """
    out = config.output_dir
    config_path = os.path.join(out, CONFIG_FILE)
    if config.resume:
        if not os.path.isfile(config_path):
            raise ValueError(f"Cannot resume: {out} holds no {CONFIG_FILE}.")
        return out
    if os.path.exists(out) and os.listdir(out):
        if _is_unfinished_run_of(out, config):
            print(f"Resuming the unfinished run in {out} from its last backup.")
            return out
        raise ValueError(
            f"Run directory {out} already exists and is not empty; runs are never "
            "overwritten. Pass a new `--output-dir`, or `--resume` to continue it."
        )
    os.makedirs(out, exist_ok=True)
    _write_json(config_path, dataclasses.asdict(config))
    return out


def _is_unfinished_run_of(out, config) -> bool:
    config_path = os.path.join(out, CONFIG_FILE)
    if not os.path.isfile(config_path) or os.path.exists(os.path.join(out, METRICS_FILE)):
        return False
    with open(config_path) as f:
        return json.load(f) == json.loads(json.dumps(dataclasses.asdict(config)))


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _test_binarize(config: TrainConfig) -> str:
    # A binarized model is evaluated on one fixed binarization of the test set.
    return "none" if config.binarize == "none" else "static"


def load_datasets(config: TrainConfig, strategy=None):
    """Train and test data, steps per epoch, the dataset's info and image shape.

    Under `multi_worker` every worker reads its own shard of the training set
    (each example once per epoch across the workers) and runs the same number
    of steps; elsewhere Keras splits each global batch over the replicas.
    """
    train_raw, info = data.load(
        config.dataset, config.train_split, config.data_dir, config.download
    )
    test_raw, _ = data.load(config.dataset, config.test_split, config.data_dir, config.download)
    image_shape = data.output_image_shape(info, config.image_size)
    networks.num_downsamplings(image_shape)  # Fail now, not after loading a model.
    if config.conditional and not info.class_names:
        raise ValueError(
            f"`--conditional` needs labels, and dataset {config.dataset!r} has no class "
            "label feature. Drop --conditional or choose a labelled dataset."
        )
    common = dict(
        image_size=config.image_size,
        seed=config.seed,
        binarize=config.binarize,
        with_labels=config.conditional,
    )
    steps_per_epoch = None
    if strategy is not None and distribute.is_multi_worker(strategy):
        workers = distribute.describe(strategy)["workers"]
        per_replica = distribute.check_batch_size(config.batch_size, strategy)
        per_worker = per_replica * strategy.num_replicas_in_sync // workers
        steps_per_epoch = int(train_raw.cardinality()) // workers // per_worker
        if steps_per_epoch < 1:
            raise ValueError(
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
        train = data.pipeline(train_raw, config.batch_size, shuffle=True, **common)
    common["binarize"] = _test_binarize(config)
    test = data.pipeline(test_raw, config.batch_size, **common)
    if steps_per_epoch is None:
        steps_per_epoch = -(-int(train_raw.cardinality()) // config.batch_size)
        fit_steps = None  # a finite dataset: Keras runs it to the end
    else:
        fit_steps = steps_per_epoch
    validation = test
    if config.validation_split:
        val_raw, _ = data.load(
            config.dataset, config.validation_split, config.data_dir, config.download
        )
        validation = data.pipeline(val_raw, config.batch_size, **common)
    return train, test, validation, (steps_per_epoch, fit_steps), info, image_shape


def _test_pipeline_args(config: TrainConfig) -> dict:
    return dict(image_size=config.image_size, seed=config.seed, binarize=_test_binarize(config))


def _load_images(config: TrainConfig, dataset: str, split: str, count: int | None):
    """The first `count` (None: all) images of a split as the model sees them.

    Returns float32 images in [0, 1], labels (None without a label feature)
    and class names. Its own uncached pipeline: reading part of a cached one
    would drop the cache.
    """
    raw, info = data.load(dataset, split, config.data_dir, config.download)
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


def to_uint8(images) -> np.ndarray:
    """[0, 1] float images -> uint8 pixels, the exported signatures' input."""
    return np.round(np.asarray(images) * 255).astype(np.uint8)


def load_run(run_dir: str) -> tuple[TrainConfig, VAE]:
    """The config and the model of a finished run directory.

    Raises:
        ValueError: `run_dir` holds no model file.
    """
    model_file = os.path.join(run_dir, MODEL_FILE)
    if not os.path.isfile(model_file):
        raise ValueError(
            f"{run_dir} holds no {MODEL_FILE}: pass the directory of a finished train.py "
            "run to --model."
        )
    config = TrainConfig.from_json_file(os.path.join(run_dir, CONFIG_FILE))
    return config, keras.models.load_model(model_file)


def update_metrics(run_dir: str, updates: dict) -> dict:
    """Merges `updates` into the run's metrics.json (written atomically)."""
    path = os.path.join(run_dir, METRICS_FILE)
    metrics = {}
    if os.path.isfile(path):
        with open(path) as f:
            metrics = json.load(f)
    metrics.update(updates)
    _write_json(path, metrics)
    return metrics


def load_shifted_images(config: TrainConfig, name: str, count: int, image_shape):
    """Test images of another dataset for the anomaly picture, or None (with a note)."""
    try:
        images, _, _ = _load_images(config, name, "test", count)
    except ValueError as e:
        print(f"Anomaly picture skipped: shifted dataset {name!r} is not available. {e}")
        return None
    if images.shape[1:] != tuple(image_shape):
        print(
            f"Anomaly picture skipped: {name!r} has images of shape {images.shape[1:]}, "
            f"the model takes {tuple(image_shape)}."
        )
        return None
    return images


def build_model(
    config: TrainConfig, image_shape, steps_per_epoch: int = 1, num_classes: int = 0
) -> VAE:
    model = VAE(
        image_shape=image_shape,
        latent_dim=config.latent_dim,
        likelihood=config.likelihood,
        prior=config.prior,
        beta=config.beta,
        base_filters=config.base_filters,
        seed=config.seed,
        objective=config.objective,
        iw_k=config.iw_k,
        kl_warmup_steps=round(config.kl_warmup_epochs * steps_per_epoch),
        free_bits=config.free_bits,
        prior_components=config.prior_components,
        num_classes=num_classes,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate, clipnorm=config.clipnorm),
        jit_compile=config.jit_compile,
    )
    return model


class ImageSummaries(keras.callbacks.Callback):
    """Logs the run's pictures to TensorBoard at the end of every epoch."""

    def __init__(self, log_dir, picture_data):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "images"))
        self.picture_data = picture_data

    def on_epoch_end(self, epoch, logs=None):
        with self.writer.as_default():
            for name in EPOCH_PICTURES:
                try:
                    image, _ = visualize.draw(name, self.picture_data)
                except visualize.PictureUnavailable:
                    continue
                tf.summary.image(name, image[None], step=epoch)
        self.writer.flush()


def train(config: TrainConfig) -> dict:
    """Runs training end to end and returns the metrics written to metrics.json.

    Every worker of a multi-worker run calls this; only the chief writes the
    model, metrics, pictures and exports (the others return an empty dict).
    """
    if config.logical_cpus:
        distribute.split_cpu(config.logical_cpus)  # before anything starts TF
    strategy = distribute.make_strategy(config.strategy, config.tpu)
    distribute.check_batch_size(config.batch_size, strategy)
    chief = distribute.is_chief(strategy)
    described = distribute.describe(strategy)
    print(
        f"Strategy: {described['name']} with {described['replicas']} replica(s) on "
        f"{described['workers']} worker(s); global batch {config.batch_size}, "
        f"{config.batch_size // described['replicas']} per replica."
    )
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    policy = precision.resolve(config.mixed_precision, strategy)
    keras.mixed_precision.set_global_policy(policy)
    print(f"Precision: {policy}")
    train_ds, test_ds, val_ds, (epoch_steps, fit_steps), info, image_shape = load_datasets(
        config, strategy
    )
    examples = load_test_examples(config, PICTURE_IMAGES)  # (images, labels, class names)
    shifted = None
    if config.shifted_dataset:
        shifted = load_shifted_images(config, config.shifted_dataset, PICTURE_IMAGES, image_shape)
    if not config.output_dir:
        config = dataclasses.replace(config, output_dir=default_output_dir(config))
    run_dir = prepare_run_dir(config) if chief else config.output_dir
    print(f"Run directory: {run_dir}  (data: {info.source}, images {image_shape})")
    backup_dir = os.path.join(run_dir, "backup")
    if described["workers"] > 1:  # one per worker: a shared one breaks on an h5 lock
        backup_dir = os.path.join(backup_dir, f"worker-{distribute.worker_index(strategy)}")

    if (
        config.jit_compile
        and described["replicas"] > 1
        and not tf.config.list_physical_devices("GPU")
    ):
        # XLA cannot compile a step whose mirrored variables sit on several
        # logical CPU devices ("variable_on_a_different_device").
        print("Note: --jit-compile is off for multi-replica training on CPUs.")
        config = dataclasses.replace(config, jit_compile=False)
    with strategy.scope():
        num_classes = info.num_classes if config.conditional else 0
        model = build_model(config, image_shape, epoch_steps, num_classes)
    picture_data = visualize.run_picture_data(
        model, run_dir, examples, shifted, config.shifted_dataset, config.num_images
    )
    callbacks = [keras.callbacks.TerminateOnNaN()]
    if config.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                "val_loss", patience=config.early_stopping, restore_best_weights=True, verbose=1
            )
        )
    if chief:
        callbacks += [
            # Before the backup: an epoch the backup calls done is in the logs.
            keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=True),
            keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")),
            ImageSummaries(os.path.join(run_dir, "logs"), picture_data),
        ]
    # Weights, optimizer state and epoch, last; kept after training so that a
    # finished run can be extended with `--resume --epochs N`.
    callbacks.append(keras.callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False))
    # shuffle=False: the pipeline already reshuffles each epoch (seeded).
    # Without --validation-split the test split is evaluated after every epoch
    # for the curves only; early stopping then needs --validation-split.
    model.fit(
        train_ds,
        epochs=config.epochs,
        steps_per_epoch=fit_steps,
        callbacks=callbacks,
        shuffle=False,
        validation_data=val_ds,
    )
    if not all(np.isfinite(w).all() for w in model.get_weights()):
        raise FloatingPointError(
            "Training stopped on a non-finite loss; nothing was saved. Lower "
            "`--learning-rate` or use `--mixed-precision float32`."
        )

    test_metrics = model.evaluate(test_ds, return_dict=True, verbose=0)
    test_metrics = {k: float(np.ravel(v)[0]) for k, v in test_metrics.items()}
    if not chief:
        return {}
    tmp = os.path.join(run_dir, "model.tmp.keras")
    model.save(tmp)
    os.replace(tmp, os.path.join(run_dir, MODEL_FILE))
    exports = {}
    if config.export:
        from export import export_all

        # The first picture images are the first test images: no second load.
        images = to_uint8(examples[0][:EXPORT_CALIBRATION_IMAGES])
        exports = export_all(model, run_dir, config.model_name, images)
        print(f"Exported: {json.dumps(exports)}")
    metrics = {
        "test": {
            "negative_elbo_nats": float(test_metrics["loss"]),
            "reconstruction_nats": float(test_metrics["reconstruction"]),
            "kl_nats": float(test_metrics["kl"]),
            "split": config.test_split,
            "binarized": config.binarize != "none",
            "estimator": "one posterior sample per image, analytic KL",
        },
        "epochs": config.epochs,
        "strategy": described,
        "precision": policy,
        "dataset": {
            "name": info.name,
            "source": info.source,
            "image_shape": list(image_shape),
            "class_names": info.class_names,
        },
        "config": dataclasses.asdict(config),
        "model_config": model.get_config(),
        "versions": versions(),
        "command": " ".join(sys.argv),
        "exports": exports,
    }
    if config.iw_samples:
        from keras_vae import evaluate

        print(f"Importance-weighted bound, K={config.iw_samples}, on the test split:")
        images, labels, _ = load_test_examples(config)
        metrics["evaluation"] = evaluate.evaluate(model, images, config.iw_samples, labels=labels)
        metrics["evaluation"].update(split=config.test_split, precision=model.dtype_policy.name)
    metrics["pictures"] = visualize.write_pictures(picture_data, run_dir)
    _write_json(os.path.join(run_dir, METRICS_FILE), metrics)
    visualize.write_report(run_dir, metrics["pictures"])
    if "evaluation" in metrics:
        ev = metrics["evaluation"]
        print(
            f"Test IW bound (K={ev['iw_samples']}): {ev['iw_nll_nats']:.2f} nats, "
            f"{ev['iw_bits_per_dim']:.4f} bits/dim; {ev['active_units']} active units."
        )
    print(
        f"Test negative ELBO: {metrics['test']['negative_elbo_nats']:.2f} nats "
        f"(reconstruction {metrics['test']['reconstruction_nats']:.2f}, "
        f"KL {metrics['test']['kl_nats']:.2f}). Outputs in {run_dir}"
    )
    return metrics
