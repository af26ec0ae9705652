"""Sample quality: Fréchet distance, precision and recall of generated images.

Inception weights cannot be downloaded here, so the features are those of a
small convolutional classifier trained on the same dataset's training split
(its 128-unit penultimate layer): the documented convention for MNIST-like
data (e.g. the "FID" of Fashion-MNIST VAE/GAN comparisons computed with a
LeNet-style classifier). Numbers are therefore comparable between models on
the same dataset and classifier, not with Inception-FID tables.

- **Fréchet distance** (Heusel et al. 2017): ||mu_1 - mu_2||^2 + Tr(S_1 + S_2
  - 2 (S_1 S_2)^1/2) between Gaussians fitted to the two feature sets.
- **Precision and recall** (Kynkäänniemi et al. 2019): each set's support is
  the union of balls around its points, radius the distance to the k-th
  nearest neighbour (k = 3). Precision is the share of generated images
  inside the real support, recall the share of real images inside the
  generated support.

The classifier is trained once per run (seeded) and cached in the run
directory as `quality_classifier.keras`, with its test accuracy in
`quality_classifier.json`.
"""

from __future__ import annotations

import dataclasses
import os
import time

import keras
import numpy as np

from keras_vae import data, generation, runs, samplers
from keras_vae.errors import UsageError

CLASSIFIER_FILE = "quality_classifier.keras"
CLASSIFIER_INFO = "quality_classifier.json"
FEATURE_LAYER = "features"
CLASSIFIER_EPOCHS = 3
NEIGHBOURS = 3
DEFAULT_COUNT = 10_000


def build_classifier(image_shape, num_classes: int) -> keras.Model:
    """Two convolutions, a 128-unit feature layer and a softmax."""
    return keras.Sequential(
        [
            keras.Input(image_shape),
            keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", name=FEATURE_LAYER),
            keras.layers.Dense(num_classes, activation="softmax"),
        ],
        name="quality_classifier",
    )


def train_classifier(train_images, train_labels, test_images, test_labels, num_classes, seed=0):
    """A seeded classifier and its test accuracy."""
    keras.utils.set_random_seed(seed)
    model = build_classifier(train_images.shape[1:], num_classes)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train_images, train_labels, batch_size=128, epochs=CLASSIFIER_EPOCHS, verbose=0)
    accuracy = model.evaluate(test_images, test_labels, batch_size=500, verbose=0)[1]
    return model, float(accuracy)


def feature_extractor(classifier: keras.Model) -> keras.Model:
    return keras.Model(classifier.inputs, classifier.get_layer(FEATURE_LAYER).output)


def features(extractor, images, batch_size: int = 500) -> np.ndarray:
    """float64 features of images in [0, 1] (or uint8 pixels)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    return np.asarray(extractor.predict(images, batch_size=batch_size, verbose=0), np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets `a` and `b`.

    Tr((S_a S_b)^1/2) is the sum of the square roots of the eigenvalues of
    S_a^1/2 S_b S_a^1/2 (symmetric, so `eigh` is exact and stable).
    """
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(np.clip(middle, 0, None)).sum()
    distance = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root
    return float(max(distance, 0.0))


def _pairwise_distances(a, b, chunk=1000):
    b_sq = (b**2).sum(1)
    for start in range(0, len(a), chunk):
        part = a[start : start + chunk]
        squared = (part**2).sum(1)[:, None] + b_sq[None, :] - 2 * part @ b.T
        yield start, np.sqrt(np.clip(squared, 0, None))


def _kth_neighbour_radii(x, k):
    radii = np.empty(len(x))
    for start, d in _pairwise_distances(x, x):
        radii[start : start + len(d)] = np.partition(d, k, axis=1)[:, k]  # [:, 0] is itself
    return radii


def _coverage(points, support, radii):
    """Share of `points` inside at least one ball (support_j, radii_j)."""
    inside = 0
    for _, d in _pairwise_distances(points, support):
        inside += int((d <= radii[None, :]).any(axis=1).sum())
    return inside / len(points)


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = NEIGHBOURS) -> tuple:
    """Kynkäänniemi et al. 2019 precision and recall, both in [0, 1]."""
    precision = _coverage(generated, real, _kth_neighbour_radii(real, k))
    recall = _coverage(real, generated, _kth_neighbour_radii(generated, k))
    return precision, recall


def compare(real_features, other_features) -> dict:
    precision, recall = precision_recall(real_features, other_features)
    return {
        "fid": round(frechet_distance(real_features, other_features), 3),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
    }


def run_classifier(run_dir: str, config) -> tuple[keras.Model, float]:
    """The run's feature classifier (trained once, cached) and its test accuracy."""
    path = os.path.join(run_dir, CLASSIFIER_FILE)
    info_path = os.path.join(run_dir, CLASSIFIER_INFO)
    if os.path.exists(path) and os.path.exists(info_path):
        return runs.load_model_file(path), runs.read_json(info_path)["test_accuracy"]
    raw = _raw_pixels(config)
    train_x, train_y, class_names, train_total = data.load_sample(raw, raw.train_split)
    test_x, test_y, _, test_total = data.load_sample(raw, raw.test_split)
    if not class_names:
        raise UsageError(
            f"Sample quality needs a labelled dataset: its feature classifier learns the "
            f"classes, and {config.dataset!r} has no labels. Give the data class subfolders "
            "(or labels in the .npz)."
        )
    print(
        f"Training the feature classifier on {data.sample_note(len(train_x), train_total)} "
        f"training images, tested on {data.sample_note(len(test_x), test_total)} "
        "(once per run)..."
    )
    start = time.perf_counter()
    classifier, accuracy = train_classifier(train_x, train_y, test_x, test_y, len(class_names))
    with runs.atomic_path(path) as tmp:
        classifier.save(tmp)
    runs.write_json(
        info_path,
        {
            "test_accuracy": accuracy,
            "epochs": CLASSIFIER_EPOCHS,
            "train_images": len(train_x),
            "test_images": len(test_x),
            "seconds": round(time.perf_counter() - start, 1),
        },
    )
    return classifier, accuracy


def _raw_pixels(config):
    """The config with unbinarized pixels: quality compares intensities."""
    return dataclasses.replace(config, binarize="none")


def sample_quality(run_dir: str, count: int = DEFAULT_COUNT, seed: int = 0) -> dict:
    """FID, precision and recall of each sampler's images against the test images.

    Also the same numbers for training images against the test images (the
    floor a perfect generator would reach) and the classifier's test
    accuracy. Merged into metrics.json under `sample_quality`.
    """
    config, model = runs.load_run(run_dir)
    classifier, accuracy = run_classifier(run_dir, config)
    extractor = feature_extractor(classifier)
    raw = _raw_pixels(config)
    test_x, _, _ = data.load_test_examples(raw, count)
    real = features(extractor, test_x)
    train_x, _, _ = data.load_train_images(raw, len(test_x))
    print(
        f"Sample quality: {len(test_x):,} test images against as many training images "
        f"and as many images of each sampler ({', '.join(samplers.SAMPLERS)})."
    )
    result = {
        "images": len(test_x),
        "classifier_test_accuracy": round(accuracy, 4),
        "train_images_vs_test": compare(real, features(extractor, train_x)),
    }
    for sampler in samplers.SAMPLERS:
        gmm = samplers.run_gmm(run_dir, model, config) if sampler == "gmm" else None
        images = generation.generate_images(model, len(test_x), sampler, gmm, seed=seed)
        result[sampler] = compare(real, features(extractor, images))
        print(f"{sampler}: {result[sampler]}")
    runs.update_metrics(run_dir, {"sample_quality": result})
    return result
