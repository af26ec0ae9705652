"""Evaluate a trained VAE the way papers do: `keras-vae evaluate`.

    keras-vae evaluate --model runs/RUN --iw-samples 1000

Reports, on the run's test split: the negative ELBO, the importance-weighted
bound on -log p(x) with K samples (Burda et al. 2016) in nats and bits/dim,
the number of active latent units (Burda et al.: Cov_x(E_q[z_u]) > 0.01) and
the KL per latent dimension. Results are merged into the run's metrics.json.

#### Mathematical details

    log p(x) >= L_K = E[ log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x) ],  z_k ~ q(z|x)

L_1 is the ELBO, L_K grows with K and tends to log p(x). It is computed with
log-sum-exp over chunks of samples, so K = 5000 needs no more memory than a
chunk; bits/dim = -L_K / (H * W * C * ln 2).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_vae import data, decoder_forms, files, precision, presets, runs
from keras_vae.config import iw_cost
from keras_vae.errors import UsageError

# Decoder evaluations per chunk (samples x images): bounds the memory used.
DEFAULT_CHUNK = 4096
ACTIVE_UNIT_THRESHOLD = 0.01


def _check_num_samples(num_samples):
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise UsageError(
            "Invalid value received for argument `iw_samples`. Expected a positive "
            f"integer. Received: iw_samples={num_samples!r}"
        )


def importance_weighted_nll(
    model, images, num_samples: int, chunk: int = DEFAULT_CHUNK, labels=None, on_chunk=None
):
    """-L_K per image (nats), `(batch,)`, with K = `num_samples`; -log p(x|y) with labels.

    `on_chunk(done)`, if given, is called after each chunk with the samples
    done so far (what moves the progress bar within a batch when K is large).
    """
    _check_num_samples(num_samples)
    batch = int(images.shape[0])
    per_chunk = max(1, min(num_samples, chunk // max(batch, 1)))
    step = _compiled_weights(model)
    total = tf.fill([batch], -np.inf)
    done = 0
    while done < num_samples:
        k = min(per_chunk, num_samples - done)
        weights = step(images, tf.constant(k), labels)
        total = tf.reduce_logsumexp(tf.stack([total, tf.reduce_logsumexp(weights, axis=0)]), axis=0)
        done += k
        if on_chunk is not None:
            on_chunk(done)
    return -(total - math.log(num_samples))


# One traced IW function per model, kept here rather than on the model; an
# entry goes when its model does.
_IW_FUNCTIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_weights(model):
    # The sample count is a tensor: one trace serves every chunk size.
    if model not in _IW_FUNCTIONS:
        fast = inference_model(model)
        _IW_FUNCTIONS[model] = tf.function(fast.log_importance_weights, reduce_retracing=True)
    return _IW_FUNCTIONS[model]


def inference_model(model):
    """The model the IW bound runs: on CPU `model` with its decoder in the fused
    form (`decoder_forms.fused_for_inference`: the same function, sharing the
    weights, about 1.4x faster for the conv decoder); elsewhere the model itself
    (cuDNN and XLA on accelerators need no rewrite)."""
    if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        return model
    return model.with_decoder(decoder_forms.fused_for_inference(model.decoder))


def posterior_statistics(model, images, batch_size=500, labels=None):
    """Posterior means `(n, latent)` and KL to N(0, I) per dimension `(n, latent)`."""
    if not len(images):
        empty = np.zeros((0, model.code_dim), np.float32)
        return empty, empty.copy()
    means, kls = [], []
    for start in range(0, len(images), batch_size):
        batch_labels = None if labels is None else labels[start : start + batch_size]
        mean, log_var = model.encode(
            tf.constant(images[start : start + batch_size], tf.float32), labels=batch_labels
        )
        means.append(mean.numpy())
        kls.append((0.5 * (tf.exp(log_var) + mean**2 - 1.0 - log_var)).numpy())
    return np.concatenate(means), np.concatenate(kls)


def active_units(means, threshold=ACTIVE_UNIT_THRESHOLD):
    """Dimensions whose posterior mean varies across images: Cov_x(E_q[z_u]) > threshold."""
    return np.var(means, axis=0) > threshold


class _LogProgress:
    """The progress of a long evaluation in a log file: one line per tenth.

    Keras's `Progbar` redraws its bar at every update, also into a file
    (it takes any POSIX process for a terminal): tens of thousands of lines
    for a K=5000 bound. Off a terminal, this prints a line when the work
    starts (the first tenth can be minutes away) and at most ten more."""

    def __init__(self, total: int, label: str = "IW bound", detail: str = ""):
        self.total, self.label, self.shown = total, label, 0
        self.start = time.perf_counter()
        print(f"{label}: started on {total} images{detail}", flush=True)

    def update(self, current, values=None):
        tenth = int(10 * current // self.total)
        # The last line waits for the batch's final update, which has the values.
        if tenth <= self.shown or (tenth == 10 and not values):
            return
        self.shown = tenth
        elapsed = time.perf_counter() - self.start
        left = elapsed * (self.total - current) / current
        line = (
            f"{self.label}: {int(current)}/{self.total} images ({10 * tenth}%), "
            f"{_minutes(elapsed)} elapsed, about {_minutes(left)} left"
        )
        for name, value in values or []:
            line += f", {name} {value:.2f}"
        print(line, flush=True)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def _progress(total: int, verbose: int, detail: str = ""):
    """A progress bar on a terminal, a few lines in a log, nothing at verbose=0."""
    if verbose == 1 and not sys.stdout.isatty():
        return _LogProgress(total, detail=detail)
    # `iw_nll` arrives as the running mean over the images so far: stateful,
    # so that the bar shows it as it is instead of averaging the means again.
    return keras.utils.Progbar(
        total, verbose=verbose, unit_name="image", stateful_metrics=["iw_nll"]
    )


def evaluate(
    model, images, iw_samples=1000, batch_size=100, chunk=DEFAULT_CHUNK, verbose=1, labels=None
):
    """The paper metrics on `images` (float32 in the model's input range).

    A conditional model needs `labels` and is evaluated on log p(x | label).

    Returns:
        dict with `negative_elbo_nats` (one posterior sample; the KL analytic
        for the standard normal prior, one-sample Monte Carlo for the others),
        `iw_nll_nats` (-L_K), `iw_bits_per_dim`, `iw_samples`, `active_units`,
        `kl_per_dim_nats` (a list; KL(q || N(0, I)) per dimension, which is the
        KL to the prior only for the standard normal prior, hence the key
        `kl_per_dim_to_standard_normal_nats` for the others), `num_images` and
        `seconds`.
    """
    _check_num_samples(iw_samples)
    if verbose:
        print(
            f"Estimated: K={iw_samples} on {len(images)} images, {iw_cost(iw_samples, len(images))}"
        )
    start = time.perf_counter()
    progress = _progress(len(images), verbose, f", K={iw_samples}")
    elbo, iw = [], []
    for first in range(0, len(images), batch_size):
        batch = tf.constant(images[first : first + batch_size], tf.float32)
        batch_labels = None
        if labels is not None and model.num_classes:
            batch_labels = tf.constant(labels[first : first + batch_size], tf.int32)
        elbo.append(model.negative_elbo(batch, sample=True, labels=batch_labels)["loss"].numpy())
        size = int(batch.shape[0])

        def on_chunk(done, first=first, size=size):
            # Within a batch the bar moves by chunk: at least once every few
            # seconds whatever K is (a chunk is DEFAULT_CHUNK decoder passes).
            progress.update(first + size * done / iw_samples)

        nll = importance_weighted_nll(model, batch, iw_samples, chunk, batch_labels, on_chunk)
        iw.append(nll.numpy())
        progress.update(first + size, [("iw_nll", float(np.mean(np.concatenate(iw))))])
    means, kls = posterior_statistics(model, images, labels=labels if model.num_classes else None)
    iw_nll = float(np.mean(np.concatenate(iw)))
    kl_key = "kl_per_dim_nats"
    if not model.code_prior_is_standard_normal:  # the KL per dimension is to N(0, I), not the prior
        kl_key = "kl_per_dim_to_standard_normal_nats"
    dims = int(np.prod(images.shape[1:]))
    return {
        "negative_elbo_nats": float(np.mean(np.concatenate(elbo))),
        "iw_nll_nats": iw_nll,
        "iw_bits_per_dim": iw_nll / (dims * math.log(2)),
        "iw_samples": int(iw_samples),
        "active_units": int(active_units(means).sum()),
        kl_key: [round(float(v), 5) for v in kls.mean(axis=0)],
        "num_images": int(len(images)),
        "seconds": round(time.perf_counter() - start, 1),
    }


def metrics_key(max_images: int | None, evaluated: int) -> str:
    """Where metrics.json keeps a result: `evaluation` for the whole test split
    (no limit, or a limit above the split's size), `evaluation_first_N` for its
    first N images, so that a subset never replaces a whole-split result."""
    if max_images is None or evaluated < max_images:
        return "evaluation"
    return f"evaluation_first_{max_images}"


def evaluate_run(run_dir, iw_samples=1000, batch_size=100, max_images=None, policy="auto") -> dict:
    """Evaluates a run directory's model on its test split; updates metrics.json.

    `policy` is the networks' dtype policy (`auto`: as train.py picks it).
    """
    config, model = runs.load_run(run_dir)
    policy = precision.resolve(policy)
    model = precision.with_policy(model, policy)
    images, labels, _ = data.load_test_examples(config, max_images)
    result = evaluate(model, images, iw_samples, batch_size, labels=labels)
    result.update(split=config.test_split, precision=policy)
    runs.update_metrics(run_dir, {metrics_key(max_images, len(images)): result})
    return result


def preset_check(model, config) -> dict:
    """The figure a preset records and its test re-measures: the IW bound with
    K = presets.CHECK_SAMPLES on the first presets.CHECK_IMAGES test images (a
    binarized run's fixed binarization), in float32."""
    images, labels, _ = data.load_test_examples(config, presets.CHECK_IMAGES)
    model = precision.with_policy(model, "float32")
    result = evaluate(model, images, presets.CHECK_SAMPLES, labels=labels, verbose=0)
    return {
        "images": int(len(images)),
        "iw_samples": presets.CHECK_SAMPLES,
        "iw_nll_nats": round(result["iw_nll_nats"], 4),
        "precision": "float32",
    }


def save_run_preset(run_dir: str, preset_dir: str, weights_dtype: str = "float32") -> dict:
    """A finished run as a preset folder (`VAE.from_preset` reads it): the
    model, its GMM sampler if fitted, and metadata with the run's command,
    data, epochs, test figures, versions and `preset_check`'s figure.

    With `weights_dtype="float16"` the check is measured with the weights
    as the preset stores them; the run's own figures stay float32's."""
    if not files.is_new_or_empty_dir(preset_dir):
        raise UsageError(
            f"--save-preset {preset_dir} exists and is not empty; choose a new folder."
        )
    config, model = runs.load_run(run_dir)
    model.set_weights(presets.rounded(model.get_weights(), weights_dtype))
    metrics = runs.read_json(os.path.join(run_dir, runs.METRICS_FILE))
    metadata = {
        "name": os.path.basename(os.path.abspath(preset_dir)),
        "command": metrics.get("command"),
        # A run finished before commands.txt existed has it only as a file.
        "commands": metrics.get("commands") or runs.read_commands(run_dir),
        "dataset": config.dataset,
        "class_names": metrics.get("dataset", {}).get("class_names", []),
        "image_shape": list(model.image_shape),
        "train_config": dataclasses.asdict(config),
        "epochs": metrics.get("epochs"),
        "best_epoch": metrics.get("best_epoch"),
        "test": metrics.get("test"),
        "evaluation": {k: v for k, v in metrics.items() if k.startswith("evaluation")},
        "sample_quality": metrics.get("sample_quality"),
        "trained_with": metrics.get("versions"),
        "weights_dtype": weights_dtype,
        "check": preset_check(model, config),
    }
    extra = [os.path.join(run_dir, name) for name in presets.OPTIONAL_FILES]
    extra = [path for path in extra if os.path.isfile(path)]
    model.save_to_preset(preset_dir, metadata, extra, weights_dtype)
    return metadata
