"""From a `TrainConfig` to a finished, self-describing run directory.

    config -> data -> strategy -> model -> fit (backups, TensorBoard)
           -> test record -> model.keras, exports, IW bound, pictures, metrics.json

`train` runs four named steps: `_set_up` (strategy, precision, data, run
directory, model), `_callbacks`, `_test_record` and `_write_artifacts`.
Everything that can be wrong with the input (dataset, shapes, run directory)
is checked before the run directory is created, so a bad command leaves
nothing behind. A run that dies mid-training leaves `backup/`, from which
`--resume` continues with the same epoch and optimizer state. A run whose
loss turns non-finite stops with an error naming the epoch and batch, and
writes no model and no metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from keras_vae import data, distribute, evaluation, pictures, precision, runs, samplers
from keras_vae.config import TrainConfig
from keras_vae.errors import Interrupted, UsageError
from keras_vae.export.writer import export_all
from keras_vae.optimizers import Adam, AdamNormGrad
from keras_vae.vae import VAE

# Pictures logged to TensorBoard during training (the rest need a finished run).
EPOCH_PICTURES = ("samples", "reconstructions", "traversals", "interpolations", "latent_space")
# How many times a run logs them at most: every epoch of a short run, every
# `epochs // 50` of a long one (drawing them took 0.58 s, a tenth of a 5.8 s
# VampPrior-MLP epoch, on one AMD Genoa core), and always after the first and
# the last epoch.
PICTURE_DRAWS = 50
# Training steps per call of the compiled step (Keras's `steps_per_execution`):
# fewer returns to Python, which a small model's step feels (12.8 -> 11.4 ms a
# step of the VampPrior MLP, one AMD Genoa core, float32). Callbacks see every
# 20th batch.
# An epoch whose steps it does not divide takes the largest divisor below it.
STEPS_PER_EXECUTION = 20


def build_model(
    config: TrainConfig, image_shape, steps_per_epoch: int = 1, num_classes: int = 0
) -> VAE:
    """The compiled `VAE` (or two-level `HVAE`) a config describes."""
    # The model's hyperparameters are its constructor's: the config fields of the
    # same names, plus what the data and the epoch length decide.
    given = {name: getattr(config, name) for name in VAE.hyperparameters() if hasattr(config, name)}
    model = VAE.class_for({"architecture": config.architecture})(
        **given,
        image_shape=image_shape,
        kl_warmup_steps=round(config.kl_warmup_epochs * steps_per_epoch),
        num_classes=num_classes,
    )
    adam = AdamNormGrad if config.normalize_gradients else Adam
    model.compile(
        optimizer=adam(config.learning_rate, clipnorm=config.clipnorm),
        jit_compile=config.jit_compile,
        steps_per_execution=steps_per_execution(steps_per_epoch),
    )
    return model


def steps_per_execution(steps_per_epoch: int) -> int:
    """The largest divisor of the epoch's steps up to `STEPS_PER_EXECUTION`: on
    repeated data Keras runs whole executions, so one that does not divide the
    epoch would run extra steps (an epoch of 79 steps would take 80)."""
    if distribute.is_multi_worker(tf.distribute.get_strategy()):
        # Keras 3.15's multi-step loop fails there ("You must feed a value for
        # placeholder tensor ... multi_step_on_iterator").
        return 1
    return max(d for d in range(1, STEPS_PER_EXECUTION + 1) if steps_per_epoch % d == 0)


def picture_interval(epochs: int) -> int:
    """Epochs between two drawings of the TensorBoard pictures."""
    return max(1, epochs // PICTURE_DRAWS)


class ImageSummaries(keras.callbacks.Callback):
    """Logs the run's pictures to TensorBoard after the first epoch, every
    `every` epochs, and after the last (also when early stopping ends it)."""

    def __init__(self, log_dir, picture_data, every: int = 1):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "images"))
        self.picture_data = picture_data
        self.every = every
        self.epoch, self.drawn = None, None

    def on_epoch_end(self, epoch, logs=None):
        self.epoch = epoch
        if epoch == 0 or (epoch + 1) % self.every == 0:
            self._draw(epoch)

    def on_train_end(self, logs=None):
        if self.epoch is not None and self.drawn != self.epoch:
            self._draw(self.epoch)

    def _draw(self, epoch):
        self.drawn = epoch
        with self.writer.as_default():
            for name in EPOCH_PICTURES:
                try:
                    image = pictures.draw(name, self.picture_data)[0]
                except pictures.PictureUnavailable:
                    continue
                tf.summary.image(name, image[None], step=epoch)
        self.writer.flush()


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Raises `FloatingPointError` at the first batch whose loss is not finite.

    It raises inside `fit`, so the epoch never ends: `BackupAndRestore` keeps
    the last good epoch, and nothing of a finished run is written. (Under
    `mixed_float16` the loss-scale optimizer skips non-finite steps, so the
    weights alone would not show it.)
    """

    def __init__(self, config: TrainConfig | None = None):
        super().__init__()
        self.config = config

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.first_batch = batch

    def on_train_batch_end(self, batch, logs=None):
        # Under `steps_per_execution` Keras calls back once per run of steps.
        first = getattr(self, "first_batch", batch)
        where = f"batch {batch + 1}" if first == batch else f"batches {first + 1}-{batch + 1}"
        self._check(logs, "loss", where)

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss"):
            self._check(logs, key, "its end")

    def _check(self, logs, key, where):
        loss = float(np.ravel((logs or {}).get(key, 0.0))[0])
        if not math.isfinite(loss):
            unusual = unusual_flags(self.config) if self.config else []
            if unusual:
                fix = (
                    f"These flags are far outside their usual range: {'; '.join(unusual)}. "
                    "Bring them back into it"
                )
            else:
                fix = (
                    "Lower `--learning-rate`, add `--clipnorm 1`, or use "
                    "`--mixed-precision float32`"
                )
            raise FloatingPointError(
                f"Training diverged: the {key.replace('_', ' ')} was {loss} at epoch "
                f"{self.epoch + 1}, {where}. No model or metrics were written; the backup "
                f"holds the last finished epoch. {fix}, then start a new `--output-dir`."
            )


# Where each numeric flag is usually set; a divergence names the ones outside.
USUAL_RANGES = {
    "learning_rate": (1e-6, 1e-2),
    "beta": (0.0, 100.0),
    "free_bits": (0.0, 10.0),
    "clipnorm": (1e-3, 1e3),
    "kl_warmup_epochs": (0.0, 1e4),
}


def unusual_flags(config: TrainConfig) -> list[str]:
    """`"--beta 1e+30 (usually 0 to 100)"` for each flag outside `USUAL_RANGES`."""
    found = []
    for name, (low, high) in USUAL_RANGES.items():
        value = getattr(config, name)
        if value is not None and not low <= value <= high:
            found.append(f"--{name.replace('_', '-')} {value:g} (usually {low:g} to {high:g})")
    return found


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` whose state is part of the run's backup.

    Keras's own starts afresh in every `fit`, so a run resumed after an
    interruption would forget the best weights seen before it and count its
    patience from zero. This one writes its counter, best value and epoch
    (`early_stopping.json`) and best weights (`early_stopping_best.npz`)
    with each backup, before the manifest, and reads them back when a backup
    is resumed.
    """

    def __init__(self, backup_dir: str, **kwargs):
        super().__init__(**kwargs)
        self.backup_dir = backup_dir
        self._best_saved_epoch = None

    def _paths(self):
        return [os.path.join(self.backup_dir, n) for n in runs.EARLY_STOPPING_FILES]

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        state = runs.early_stopping_state(self.backup_dir)
        if state is None or not runs.check_backup(self.backup_dir):
            return
        weights_path = self._paths()[1]
        self.wait, self.best_epoch = state["wait"], state["best_epoch"]
        self.best = state["best"]
        if os.path.exists(weights_path):
            with np.load(weights_path) as saved:
                self.best_weights = [saved[f"w{i}"] for i in range(len(saved.files))]
            self._best_saved_epoch = self.best_epoch
        print(
            f"Early stopping resumed: best {self.monitor} {self.best} at epoch "
            f"{self.best_epoch + 1}, {self.wait} epoch(s) without improvement."
        )

    def save_state(self):
        """Called by the backup before it writes its manifest."""
        state_path, weights_path = self._paths()
        if self.best_weights is not None and self._best_saved_epoch != self.best_epoch:
            with runs.atomic_write(weights_path, "wb") as f:
                np.savez(f, **{f"w{i}": w for i, w in enumerate(self.best_weights)})
            self._best_saved_epoch = self.best_epoch
        best = None if self.best is None else float(self.best)
        runs.write_json(
            state_path, {"wait": self.wait, "best": best, "best_epoch": self.best_epoch}
        )


class CheckedBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that records each backup's files in a manifest,
    written last; `runs.check_backup` refuses a backup that does not match it.
    `early_stopping`'s state is saved with each backup."""

    def __init__(self, backup_dir, early_stopping=None, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.early_stopping = early_stopping

    def _save_model(self):
        super()._save_model()
        if self.early_stopping is not None:
            self.early_stopping.save_state()
        runs.write_backup_manifest(self.backup_dir)


@dataclasses.dataclass
class _Run:
    """What `_set_up` prepares for the other steps."""

    config: TrainConfig
    strategy: object
    described: dict
    chief: bool
    policy: str
    datasets: data.Datasets
    examples: tuple  # (images, labels, class names) behind the pictures
    run_dir: str
    model: VAE
    picture_data: pictures.PictureData


def _set_up(config: TrainConfig) -> _Run:
    if config.logical_cpus:
        distribute.split_cpu(config.logical_cpus)  # before anything starts TF
    strategy = distribute.make_strategy(config.strategy, config.tpu)
    distribute.check_batch_size(config.batch_size, strategy)
    described = distribute.describe(strategy)
    if config.seed is not None:
        keras.utils.set_random_seed(config.seed)
    policy = precision.resolve(config.mixed_precision, strategy)
    keras.mixed_precision.set_global_policy(policy)
    datasets = data.load_datasets(config, strategy)
    examples = data.load_test_examples(config, data.PICTURE_IMAGES)
    shifted = None
    if config.shifted_dataset:
        shifted = data.load_shifted_images(
            config, config.shifted_dataset, data.PICTURE_IMAGES, datasets.image_shape
        )
    if (
        config.jit_compile
        and described["replicas"] > 1
        and not tf.config.list_physical_devices("GPU")
    ):
        # XLA cannot compile a step whose mirrored variables sit on several
        # logical CPU devices ("variable_on_a_different_device"). Before the
        # run directory: config.json records what ran.
        print("Note: --jit-compile is off for multi-replica training on CPUs.")
        config = dataclasses.replace(config, jit_compile=False)
    # The data is known to be good: only now does the run directory appear.
    if not config.output_dir:
        config = dataclasses.replace(config, output_dir=runs.default_output_dir(config))
    chief = distribute.is_chief(strategy)
    run_dir = runs.prepare_run_dir(config) if chief else config.output_dir
    backup_dir = _backup_dir(run_dir, described, strategy)
    done = runs.check_backup(backup_dir)
    stopped = bool(done) and config.epochs > done and _early_stopping_ended(backup_dir, config)
    if stopped:  # patience had run out: the training is over, whatever --epochs says
        config = dataclasses.replace(config, epochs=done)
    if done and config.epochs <= done and (config.epochs < done or runs.finished_at(run_dir, done)):
        why = "early stopping ended it, and it is finished" if stopped else "nothing is left"
        raise UsageError(
            f"The run in {run_dir} has already trained {done} epochs ({why}); `--epochs "
            f"{config.epochs}` would train nothing. Pass `--epochs` above {done} to "
            "extend it."
        )
    if done and config.epochs == done:
        # The training ended but its model, metrics and pictures were not all
        # written (e.g. the process died during the final evaluation): no more
        # epochs, only the finishing, with early stopping's best weights.
        print(f"The run trained its {done} epochs but was not finished: finishing it.")
    if chief:
        runs.record_command(run_dir)
        dropped = runs.truncate_history(run_dir, done)
        if dropped:
            print(f"history.csv: dropped {dropped} row(s) past the backup's {done} epoch(s).")
    with strategy.scope():
        num_classes = datasets.info.num_classes if config.conditional else 0
        model = build_model(config, datasets.image_shape, datasets.steps_per_epoch, num_classes)
    print(_plan(config, described, policy, datasets, run_dir, model))
    picture_data = pictures.run_picture_data(
        model,
        run_dir,
        examples,
        shifted,
        config.shifted_dataset,
        config.num_images,
        validation_split=config.validation_split,
    )
    return _Run(
        config, strategy, described, chief, policy, datasets, examples, run_dir, model, picture_data
    )


def _plan(config, described, policy, datasets, run_dir, model) -> str:
    """What the run will do, in a few lines, before the first epoch."""
    info = datasets.info
    source = "" if info.source == "tfds" else f" from {info.source}"
    shape = "x".join(map(str, datasets.image_shape))
    prior = config.prior + (f" ({config.prior_components})" if config.prior_components else "")
    strategy_name = distribute.display_name(described["name"])
    lines = [
        f"Data:       {info.name}{source}; {config.train_split} for training, "
        f"{config.test_split} for test"
        + (f", {config.validation_split} for validation" if config.validation_split else "")
        + f"; images {shape}, binarize {config.binarize}",
        f"Model:      {config.architecture}, {config.latent_dim} latents, prior {prior}, "
        f"likelihood {config.likelihood}, objective {config.objective}; "
        f"{model.count_params():,} parameters",
        f"Strategy:   {strategy_name}, {described['replicas']} replica(s) on "
        f"{described['workers']} worker(s); global batch {config.batch_size}, "
        f"{datasets.steps_per_epoch} steps per epoch",
        f"Precision:  {policy}",
        f"Run:        {run_dir}, {config.epochs} epochs",
    ]
    return "\n".join(lines)


def _callbacks(run: _Run) -> list:
    config = run.config
    callbacks = [NonFiniteLossGuard(config)]
    backup_dir = _backup_dir(run.run_dir, run.described, run.strategy)
    early = None
    if config.early_stopping:
        early = ResumableEarlyStopping(
            backup_dir,
            monitor="val_loss",
            patience=config.early_stopping,
            restore_best_weights=True,
            verbose=1,
            # Epochs of KL warm-up do not count: the objective still changes.
            start_from_epoch=math.ceil(config.kl_warmup_epochs),
        )
        callbacks.append(early)
    if run.chief:
        logs = os.path.join(run.run_dir, runs.LOGS_DIR)
        callbacks += [
            # Before the backup: an epoch the backup calls done is in the logs.
            keras.callbacks.CSVLogger(os.path.join(run.run_dir, runs.HISTORY_FILE), append=True),
            keras.callbacks.TensorBoard(logs),
            ImageSummaries(logs, run.picture_data, picture_interval(config.epochs)),
        ]
    # Weights, optimizer state and epoch, last; kept after training so that a
    # finished run can be extended with `--resume --epochs N`.
    callbacks.append(CheckedBackupAndRestore(backup_dir, early, delete_checkpoint=False))
    return callbacks


def _backup_dir(run_dir, described, strategy) -> str:
    backup_dir = os.path.join(run_dir, runs.BACKUP_DIR)
    if described["workers"] > 1:
        worker = runs.WORKER_BACKUP_DIR.format(distribute.worker_index(strategy))
        backup_dir = os.path.join(backup_dir, worker)
    return backup_dir


def _early_stopping_ended(backup_dir: str, config: TrainConfig) -> bool:
    """Whether the backup's early-stopping state had run out of patience."""
    state = runs.early_stopping_state(backup_dir) if config.early_stopping else None
    return state is not None and state["wait"] >= config.early_stopping


def _early_stopping(callbacks):
    found = [c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)]
    return found[0] if found else None


def _test_record(run: _Run, history, callbacks) -> dict:
    """The test split's metrics and what the training reached."""
    values = run.model.evaluate(run.datasets.test, return_dict=True, verbose=0)
    values = {k: float(np.ravel(v)[0]) for k, v in values.items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise FloatingPointError(
            f"The trained model's test metrics are not finite ({values}); nothing was "
            "written. Lower `--learning-rate` or use `--mixed-precision float32`."
        )
    kl = "analytic KL" if run.model.prior == "standard_normal" else "one-sample Monte Carlo KL"
    early = _early_stopping(callbacks)
    return {
        "test": {
            "negative_elbo_nats": values["loss"],
            "reconstruction_nats": values["reconstruction"],
            "kl_nats": values["kl"],
            "split": run.config.test_split,
            "binarized": run.config.binarize != "none",
            "estimator": f"one posterior sample per image, {kl}",
        },
        # The epochs actually trained (early stopping may end a run sooner),
        # and the epoch whose weights were kept.
        "epochs": history.epoch[-1] + 1 if history.epoch else run.config.epochs,
        # EarlyStopping restores its best weights whether it stopped the run or
        # the epochs ran out.
        "best_epoch": (
            early.best_epoch + 1 if early is not None and early.best_weights is not None else None
        ),
    }


def _write_artifacts(run: _Run, record: dict) -> dict:
    """model.keras, exports, the IW bound, pictures, report; metrics.json last."""
    config, model, run_dir = run.config, run.model, run.run_dir
    with runs.atomic_path(os.path.join(run_dir, runs.MODEL_FILE)) as tmp:
        model.save(tmp)
    exports = {}
    if config.export:
        images = data.to_uint8(run.examples[0][: data.EXPORT_CALIBRATION_IMAGES])
        try:
            gmm = samplers.run_gmm(run_dir, model, config)  # for the generate_gmm signature
        except UsageError as e:
            print(f"The exports have no generate_gmm signature: {e}")
            gmm = None
        exports = export_all(model, run_dir, config.model_name, images, gmm=gmm)
        print(f"Exported: {json.dumps(exports)}")
    metrics = {
        **record,
        "strategy": run.described,
        "precision": run.policy,
        "dataset": {
            "name": run.datasets.info.name,
            "source": run.datasets.info.source,
            "image_shape": list(run.datasets.image_shape),
            "class_names": run.datasets.info.class_names,
        },
        "config": dataclasses.asdict(config),
        "model_config": model.get_config(),
        "versions": runs.versions(),
        "command": " ".join(sys.argv),
        # Every command that opened the run: the start and each --resume.
        "commands": runs.read_commands(run_dir),
        "exports": exports,
    }
    if config.iw_samples:
        count = config.iw_images or None
        where = "the test split" if count is None else f"the first {count} test images"
        print(f"Importance-weighted bound, K={config.iw_samples}, on {where}:")
        images, labels, _ = data.load_test_examples(config, count)
        result = evaluation.evaluate(model, images, config.iw_samples, labels=labels)
        result.update(split=config.test_split, precision=model.dtype_policy.name)
        metrics[evaluation.metrics_key(count, len(images))] = result
    metrics["pictures"] = pictures.write_pictures(run.picture_data, run_dir)
    runs.write_json(os.path.join(run_dir, runs.METRICS_FILE), metrics)
    pictures.write_report(run_dir, metrics["pictures"])
    return metrics


def train(config: TrainConfig) -> dict:
    """Runs training end to end and returns the metrics written to metrics.json.

    Every worker of a multi-worker run calls this; only the chief writes the
    model, metrics, pictures and exports (the others return an empty dict).
    """
    run = _set_up(config)
    try:
        return _train(run)
    except KeyboardInterrupt:
        raise Interrupted(
            f"The run stopped; {run.run_dir}/{runs.BACKUP_DIR} keeps every finished epoch. "
            f"Resume it with: keras-vae train --resume --output-dir {run.run_dir}"
        ) from None


def _train(run: _Run) -> dict:
    callbacks = _callbacks(run)
    # shuffle=False: the pipeline already reshuffles each epoch (seeded).
    # Without --validation-split the test split is evaluated after every epoch
    # for the curves only; early stopping then needs --validation-split.
    history = run.model.fit(
        run.datasets.train,
        epochs=run.config.epochs,
        steps_per_epoch=run.datasets.steps_per_epoch,
        callbacks=callbacks,
        shuffle=False,
        validation_data=run.datasets.validation,
        # A progress bar on a terminal, one line per epoch in a log file.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    record = _test_record(run, history, callbacks)
    if not run.chief:
        return {}
    metrics = _write_artifacts(run, record)
    for key, ev in metrics.items():
        if key.startswith("evaluation"):
            print(
                f"Test IW bound (K={ev['iw_samples']}, {ev['num_images']} images): "
                f"{ev['iw_nll_nats']:.2f} nats, {ev['iw_bits_per_dim']:.4f} bits/dim; "
                f"{ev['active_units']} active units."
            )
    test = metrics["test"]
    print(
        f"Test negative ELBO: {test['negative_elbo_nats']:.2f} nats (reconstruction "
        f"{test['reconstruction_nats']:.2f}, KL {test['kl_nats']:.2f}). Outputs in {run.run_dir}"
    )
    return metrics
