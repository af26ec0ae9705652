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

from keras_vae import data, networks, visualize
from keras_vae.config import TrainConfig
from keras_vae.vae import VAE

MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
# Real test images for TF Serving's warm-up file and the int8 calibration.
EXPORT_CALIBRATION_IMAGES = 200


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
    """Creates (or, with `resume`, reopens) the run directory."""
    out = config.output_dir
    if config.resume:
        if not os.path.isfile(os.path.join(out, CONFIG_FILE)):
            raise ValueError(f"Cannot resume: {out} holds no {CONFIG_FILE}.")
        return out
    if os.path.exists(out) and os.listdir(out):
        raise ValueError(
            f"Run directory {out} already exists and is not empty; runs are never "
            "overwritten. Pass a new `--output-dir`, or `--resume` to continue it."
        )
    os.makedirs(out, exist_ok=True)
    _write_json(os.path.join(out, CONFIG_FILE), dataclasses.asdict(config))
    return out


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _test_binarize(config: TrainConfig) -> str:
    # A binarized model is evaluated on one fixed binarization of the test set.
    return "none" if config.binarize == "none" else "static"


def load_datasets(config: TrainConfig):
    """Train and test pipelines, a batch of test images for pictures, and info."""
    train_raw, info = data.load(
        config.dataset, config.train_split, config.data_dir, config.download
    )
    test_raw, _ = data.load(config.dataset, config.test_split, config.data_dir, config.download)
    image_shape = data.output_image_shape(info, config.image_size)
    networks.num_downsamplings(image_shape)  # Fail now, not after loading a model.
    common = dict(image_size=config.image_size, seed=config.seed, binarize=config.binarize)
    train = data.pipeline(train_raw, config.batch_size, shuffle=True, **common)
    common["binarize"] = _test_binarize(config)
    test = data.pipeline(test_raw, config.batch_size, **common)
    return train, test, _first_images(test_raw, config.num_images, common), info, image_shape


def _first_images(raw, count, pipeline_args):
    # From a pipeline of their own: reading part of a cached one drops its cache.
    batches = data.pipeline(raw.take(count), count, cache=False, **pipeline_args)
    return next(iter(batches)).numpy()


def load_uint8_images(config: TrainConfig, count: int):
    """The first `count` test images as the model sees them, in uint8 (0-255)."""
    test_raw, _ = data.load(config.dataset, config.test_split, config.data_dir, config.download)
    args = dict(image_size=config.image_size, seed=config.seed, binarize=_test_binarize(config))
    return np.round(_first_images(test_raw, count, args) * 255).astype(np.uint8)


def build_model(config: TrainConfig, image_shape) -> VAE:
    model = VAE(
        image_shape=image_shape,
        latent_dim=config.latent_dim,
        likelihood=config.likelihood,
        prior=config.prior,
        beta=config.beta,
        base_filters=config.base_filters,
        seed=config.seed,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        jit_compile=config.jit_compile,
    )
    return model


class ImageSummaries(keras.callbacks.Callback):
    """Writes a sample grid and test reconstructions to TensorBoard each epoch."""

    def __init__(self, log_dir, test_images, num_images=64):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "images"))
        self.test_images = test_images[:num_images]
        self.num_images = num_images

    def on_epoch_end(self, epoch, logs=None):
        grids = {
            "samples": visualize.sample_grid(self.model, self.num_images),
            "reconstructions": visualize.reconstruction_grid(self.model, self.test_images),
        }
        with self.writer.as_default():
            for name, grid in grids.items():
                tf.summary.image(name, grid[None], step=epoch)
        self.writer.flush()


def train(config: TrainConfig) -> dict:
    """Runs training end to end and returns the metrics written to metrics.json."""
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.mixed_precision)
    train_ds, test_ds, test_images, info, image_shape = load_datasets(config)
    if not config.output_dir:
        config = dataclasses.replace(config, output_dir=default_output_dir(config))
    run_dir = prepare_run_dir(config)
    print(f"Run directory: {run_dir}  (data: {info.source}, images {image_shape})")

    model = build_model(config, image_shape)
    callbacks = [
        # Weights, optimizer state and epoch; kept after training so that a
        # finished run can be extended with `--resume --epochs N`.
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"), delete_checkpoint=False),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs")),
        ImageSummaries(os.path.join(run_dir, "logs"), test_images, config.num_images),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=True),
        keras.callbacks.TerminateOnNaN(),
    ]
    # shuffle=False: the pipeline already reshuffles each epoch (seeded).
    model.fit(train_ds, epochs=config.epochs, callbacks=callbacks, shuffle=False)
    if model.stop_training and not all(np.isfinite(w).all() for w in model.get_weights()):
        raise FloatingPointError(
            "Training stopped on a non-finite loss; nothing was saved. Lower "
            "`--learning-rate` or use `--mixed-precision float32`."
        )

    test_metrics = model.evaluate(test_ds, return_dict=True, verbose=0)
    tmp = os.path.join(run_dir, "model.tmp.keras")
    model.save(tmp)
    os.replace(tmp, os.path.join(run_dir, MODEL_FILE))
    pictures = visualize.write_run_pictures(model, test_images, run_dir, config.num_images)
    exports = {}
    if config.export:
        from export import export_all

        images = load_uint8_images(config, EXPORT_CALIBRATION_IMAGES)
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
        "dataset": {"name": info.name, "source": info.source, "image_shape": list(image_shape)},
        "config": dataclasses.asdict(config),
        "model_config": model.get_config(),
        "versions": versions(),
        "command": " ".join(sys.argv),
        "pictures": {k: os.path.basename(v) for k, v in pictures.items()},
        "exports": exports,
    }
    _write_json(os.path.join(run_dir, METRICS_FILE), metrics)
    print(
        f"Test negative ELBO: {metrics['test']['negative_elbo_nats']:.2f} nats "
        f"(reconstruction {metrics['test']['reconstruction_nats']:.2f}, "
        f"KL {metrics['test']['kl_nats']:.2f}). Outputs in {run_dir}"
    )
    return metrics
