"""Pictures of a model, a run report, and `keras-vae visualize`.

    keras-vae visualize --model runs/RUN [--pictures traversals manifold]

Every picture is a PNG in the run directory, and `report.html` shows them
with the config and metrics on one static page. Image grids are drawn with
numpy (exact, predictable sizes); plots with matplotlib's headless Agg
backend. `train.py` writes the same pictures at the end of a run and logs the
grids to TensorBoard each epoch.

Pictures (`PICTURE_NAMES`):
- `samples`: images decoded from prior samples.
- `reconstructions`: test images (left of each pair) beside their
  reconstructions.
- `traversals`: the most active latent dimensions, one row each, swept from
  -3 to +3 prior standard deviations around a test image's posterior mean.
- `interpolations`: pairs of test images at the ends of each row, and the
  decoded straight line between their posterior means.
- `manifold`: 2-D latent spaces only: decoded images on a grid of prior
  quantiles.
- `latent_space`: posterior means of test images (their first two principal
  components above 2-D), coloured by class.
- `curves`: loss, reconstruction and KL per epoch, train and the data `fit`
  validated on (the validation split if the run has one, else the test split).
- `anomaly`: histograms of per-image scores (deterministic negative ELBO) on
  the test set and on a shifted set, with the AUROC.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import math
import os
from statistics import NormalDist

import matplotlib
import numpy as np
import tensorflow as tf

from keras_vae import choices, data, distribute, evaluation, runs
from keras_vae.errors import UsageError
from keras_vae.images import image_grid, write_png

PICTURE_NAMES = choices.PICTURES
TRAVERSAL_STEPS = 11
INTERPOLATION_STEPS = 10


class PictureUnavailable(Exception):
    """A picture that does not apply to this model or run (with the reason)."""


@dataclasses.dataclass
class PictureData:
    """What the pictures are drawn from.

    Args:
        model: a `keras_vae.VAE`.
        images: float32 `(n, H, W, C)` test images in [0, 1].
        labels: int `(n,)` or None.
        class_names: list of str; empty when the dataset has no labels.
        history_csv: path of the run's history.csv, or None.
        shifted_images: float32 images of a shifted dataset, or None.
        shifted_name: str. Its name, for the legend.
        num_images: int. Images in the sample and reconstruction grids.
        traversal_dims: int. Latent dimensions in the traversal picture.
        validation_label: str. What history.csv's `val_` columns were measured
            on, for the curves' legend.
    """

    model: object
    images: np.ndarray
    labels: np.ndarray | None = None
    class_names: list = dataclasses.field(default_factory=list)
    history_csv: str | None = None
    shifted_images: np.ndarray | None = None
    shifted_name: str = "shifted"
    num_images: int = 64
    traversal_dims: int = 8
    validation_label: str = "test split"


# --- grids ------------------------------------------------------------------


def upscale_factor(shape, min_side: int = 512) -> int:
    return max(1, math.ceil(min_side / max(shape[:2])))


def upscale(grid: np.ndarray, min_side: int = 512) -> np.ndarray:
    """Nearest-neighbour upscaling so that a grid of 28-pixel images is readable."""
    factor = upscale_factor(grid.shape, min_side)
    return grid.repeat(factor, axis=0).repeat(factor, axis=1)


def save_png(path: str, image: np.ndarray) -> None:
    """Writes a uint8 `(H, W, C)` array as a PNG, atomically."""
    with runs.atomic_path(path) as tmp:
        write_png(tmp, image)


SAMPLES_PER_CLASS = 8


def sample_grid(model, num_images: int) -> np.ndarray:
    """Prior samples; for a conditional model, one row of samples per class."""
    if model.num_classes:
        labels = np.repeat(np.arange(model.num_classes), SAMPLES_PER_CLASS)
        images = model.sample_prior(labels=labels)["images"].numpy()
        return image_grid(images, columns=SAMPLES_PER_CLASS)
    return image_grid(model.sample_prior(num_images)["images"].numpy())


def reconstruction_grid(model, images, labels=None) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    recon = model.reconstruct(images, labels).numpy()
    pairs = np.stack([images, recon], axis=1).reshape((-1,) + images.shape[1:])
    return image_grid(pairs, columns=2 * math.ceil(math.sqrt(len(images) / 2)))


def activity_per_dimension(model, images, labels=None) -> np.ndarray:
    """How much each latent dimension is used, `(latent_dim,)`: the mean KL to
    N(0, 1) under the standard normal prior; under a learned prior, whose
    per-dimension KL has no closed form, the variance of the posterior means
    across images (the active-unit statistic)."""
    means, kls = evaluation.posterior_statistics(model, images, labels=labels)
    return kls.mean(axis=0) if model.code_prior_is_standard_normal else means.var(axis=0)


def _posterior_means(model, images, labels=None) -> np.ndarray:
    return evaluation.posterior_statistics(model, images, labels=labels)[0]


def traversal_offsets(steps: int = TRAVERSAL_STEPS) -> np.ndarray:
    """The traversal's columns: -3 to +3 prior standard deviations."""
    return np.linspace(-3.0, 3.0, steps, dtype=np.float32)


def traversal_grid(model, images, num_dims: int, steps: int = TRAVERSAL_STEPS, labels=None):
    """One row per most-active dimension; returns `(grid, dims)`."""
    if not 1 <= num_dims <= model.code_dim:
        raise UsageError(
            f"Invalid number of traversal dimensions: {num_dims}. Expected 1 to the "
            f"latent size, {model.code_dim}. Received: traversal_dims={num_dims}"
        )
    dims = np.argsort(-activity_per_dimension(model, images, labels))[:num_dims]
    first = None if labels is None else labels[:1]
    center = _posterior_means(model, images[:1], first)
    offsets = traversal_offsets(steps)
    z = np.repeat(center, num_dims * steps, axis=0).reshape(num_dims, steps, -1)
    for row, dim in enumerate(dims):
        z[row, :, dim] += offsets  # the standard normal prior's standard deviation is 1
    row_labels = None if first is None else np.repeat(first, num_dims * steps)
    decoded = model.decode(z.reshape(-1, model.code_dim), labels=row_labels)["mean"].numpy()
    return image_grid(decoded, columns=steps), [int(d) for d in dims]


def interpolation_grid(
    model, images, pairs: int = 6, steps: int = INTERPOLATION_STEPS, labels=None
):
    """Rows of [image a, decoded line from a to b, image b] (decoded with a's label)."""
    pairs = min(pairs, len(images) // 2)
    if not pairs:
        raise PictureUnavailable(
            f"interpolations need at least 2 test images and the test split has {len(images)}"
        )
    pair_labels = None if labels is None else labels[: 2 * pairs]
    means = _posterior_means(model, images[: 2 * pairs], pair_labels)
    a, b = means[0::2], means[1::2]
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[None, :, None]
    z = (1.0 - t) * a[:, None] + t * b[:, None]
    line_labels = None if labels is None else np.repeat(pair_labels[0::2], steps)
    decoded = model.decode(z.reshape(-1, model.code_dim), labels=line_labels)["mean"].numpy()
    decoded = decoded.reshape(pairs, steps, *decoded.shape[1:])
    rows = np.concatenate(
        [images[0 : 2 * pairs : 2, None], decoded, images[1 : 2 * pairs : 2, None]], axis=1
    )
    return image_grid(rows.reshape(-1, *rows.shape[2:]), columns=steps + 2)


def manifold_grid(model, n: int = 20) -> np.ndarray:
    if model.num_classes:
        raise PictureUnavailable("a conditional model has one manifold per class; not drawn")
    if model.code_dim != 2:
        raise PictureUnavailable(
            f"the manifold needs a 2-D latent space and this model's has "
            f"{model.code_dim} dimensions (train with --latent-dim 2)"
        )
    if not model.code_prior_is_standard_normal:
        raise PictureUnavailable(
            f"the manifold is a grid of standard normal quantiles, and this model's prior "
            f"is {model.prior!r}" + (" over two levels" if model.levels > 1 else "")
        )
    quantiles = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)], np.float32)
    zy, zx = np.meshgrid(quantiles[::-1], quantiles, indexing="ij")
    z = np.stack([zx.ravel(), zy.ravel()], axis=1)
    return image_grid(model.decode(z)["mean"].numpy(), columns=n, pad=0)


# --- plots ------------------------------------------------------------------


def labelled_grid(grid, rows, columns, xlabel: str, ylabel: str) -> np.ndarray:
    """An image grid (`image_grid`, pad 1) drawn with a label per row and per column."""
    plt = _pyplot()
    height, width = grid.shape[:2]
    cell_h, cell_w = (height - 1) / len(rows), (width - 1) / len(columns)
    scale = max(1.0, 9.0 / max(width, height) * 100 / 8)
    fig, ax = plt.subplots(figsize=(width / 100 * scale + 1.6, height / 100 * scale + 1.2))
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([1 + cell_w * (i + 0.5) for i in range(len(columns))], columns, fontsize=8)
    ax.set_yticks([1 + cell_h * (i + 0.5) for i in range(len(rows))], rows, fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.tick_params(length=0)
    fig.tight_layout()
    return _figure_to_array(fig)


def _figure_to_array(fig) -> np.ndarray:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    _pyplot().close(fig)
    return tf.io.decode_png(buffer.getvalue(), channels=3).numpy()


def _pyplot():
    matplotlib.use("Agg")  # headless; set before pyplot loads
    import matplotlib.pyplot as plt  # here: pyplot picks its backend when imported

    return plt


def latent_space_plot(model, images, labels=None, class_names=()) -> np.ndarray:
    if len(images) < 3:
        raise PictureUnavailable(
            f"the latent map needs at least 3 test images and the test split has {len(images)}"
        )
    plt = _pyplot()
    means = _posterior_means(model, images, labels)
    if not np.all(np.isfinite(means)):
        raise PictureUnavailable("the posterior means are not finite (the training diverged)")
    if means.shape[1] > 2:
        centered = means - means.mean(axis=0)
        _, singular, vt = np.linalg.svd(centered, full_matrices=False)
        points = centered @ vt[:2].T
        share = singular[:2] ** 2 / np.sum(singular**2)
        axes = [f"PC{i + 1} ({100 * s:.0f}% of variance)" for i, s in enumerate(share)]
    else:
        points = means
        axes = ["z[0]", "z[1]"][: means.shape[1]]
        if means.shape[1] == 1:
            points = np.concatenate([means, np.zeros_like(means)], axis=1)
            axes.append("")
    fig, ax = plt.subplots(figsize=(8, 7))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.6)
    else:
        cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
        for k in np.unique(labels):
            name = class_names[k] if k < len(class_names) else str(k)
            pick = labels == k
            ax.scatter(
                points[pick, 0], points[pick, 1], s=4, alpha=0.6, color=cmap(k % cmap.N), label=name
            )
        ax.legend(markerscale=4, fontsize=9, loc="best")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(f"Posterior means of {len(images)} test images")
    fig.tight_layout()
    return _figure_to_array(fig)


LONG_RUN_EPOCHS = 50  # past this, curves drop markers and zoom on the tail


def validation_label(validation_split: str | None) -> str:
    """The legend of the `val_` curves: Keras validated on the run's
    validation split if it has one, else on its test split."""
    return f"validation ({validation_split})" if validation_split else "test split"


def curves_plot(history_csv: str, val_label: str = "test split") -> np.ndarray:
    if not history_csv or not os.path.isfile(history_csv):
        raise PictureUnavailable("no history.csv: the run has no finished epoch")
    with open(history_csv) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise PictureUnavailable("history.csv is empty: the run has no finished epoch")
    plt = _pyplot()
    epochs = [int(r["epoch"]) + 1 for r in rows]
    # Markers while they can be told apart; on long runs the first epochs
    # (hundreds of nats above the rest) would flatten the tail, so the y-axis
    # spans the epochs after the first 5%.
    long_run = len(rows) > LONG_RUN_EPOCHS
    marker = None if long_run else "o"
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, name in zip(axes, ("loss", "reconstruction", "kl"), strict=True):
        train = [float(r[name]) for r in rows]
        ax.plot(epochs, train, marker=marker, label="train")
        val = [(e, r.get(f"val_{name}", "NA")) for e, r in zip(epochs, rows, strict=True)]
        val = [(e, float(v)) for e, v in val if v not in ("NA", "", None)]
        if val:  # Keras's CSVLogger writes NA where an epoch had no validation
            ax.plot(*zip(*val, strict=True), marker=marker, label=val_label)
            ax.legend()
        if long_run:
            skip = len(rows) // 20
            tail = train[skip:] + [v for e, v in val if e > skip]
            low, high = min(tail), max(tail)
            margin = 0.05 * (high - low) or 1.0
            ax.set_ylim(low - margin, high + margin)
        ax.set_title({"loss": "negative ELBO"}.get(name, name) + " (nats per image)")
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return _figure_to_array(fig)


def anomaly_scores(model, images, batch_size=500) -> np.ndarray:
    """Deterministic per-image negative ELBO (the exported `score`)."""
    return np.concatenate(
        [
            model.negative_elbo(np.asarray(images[s : s + batch_size], np.float32), sample=False)[
                "loss"
            ].numpy()
            for s in range(0, len(images), batch_size)
        ]
    )


def auroc(negatives, positives) -> float:
    """P(score of a shifted image > score of a test image), ties counted half."""
    scores = np.concatenate([negatives, positives])
    ranks = np.argsort(np.argsort(scores)) + 1.0
    pos = ranks[len(negatives) :]
    return float((pos.sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(negatives)))


def anomaly_plot(model, images, shifted, shifted_name) -> tuple[np.ndarray, float]:
    """The histograms of both sets' scores, and the AUROC."""
    if shifted is None:
        raise PictureUnavailable("no shifted dataset to compare with (pass --shifted-dataset)")
    if model.num_classes:
        raise PictureUnavailable("a conditional model's score needs labels for the shifted set")
    plt = _pyplot()
    inside, outside = anomaly_scores(model, images), anomaly_scores(model, shifted)
    fig, ax = plt.subplots(figsize=(8, 5))
    bins = np.linspace(min(inside.min(), outside.min()), max(inside.max(), outside.max()), 60)
    ax.hist(inside, bins=bins, alpha=0.6, label=f"test set ({len(inside)})")
    ax.hist(outside, bins=bins, alpha=0.6, label=f"{shifted_name} ({len(outside)})")
    ax.set_xlabel("score: negative ELBO (nats per image)")
    ax.set_ylabel("images")
    area = auroc(inside, outside)
    ax.set_title(f"Anomaly scores, AUROC {area:.3f}")
    ax.legend()
    fig.tight_layout()
    return _figure_to_array(fig), area


# --- writing ----------------------------------------------------------------


# name -> fn(PictureData) -> (uint8 image, caption) or (image, caption, values
# recorded in metrics.json beside the file); raise PictureUnavailable when a
# picture does not apply.
PICTURES: dict = {}


def register_picture(name: str):
    """Decorator that registers a picture function under `name`."""

    def decorator(fn):
        PICTURES[name] = fn
        return fn

    return decorator


@register_picture("samples")
def _samples(data: PictureData):
    model = data.model
    caption = "Samples from the prior."
    if model.num_classes:
        names = [
            data.class_names[k] if k < len(data.class_names) else str(k)
            for k in range(model.num_classes)
        ]
        caption = f"Samples from the prior, one row per class: {', '.join(names)}."
    return upscale(sample_grid(model, data.num_images)), caption


@register_picture("reconstructions")
def _reconstructions(data: PictureData):
    first = None if data.labels is None else data.labels[: data.num_images]
    grid = reconstruction_grid(data.model, data.images[: data.num_images], first)
    return upscale(grid), "Test images (left of each pair) and their reconstructions."


@register_picture("traversals")
def _traversals(data: PictureData):
    grid, dims = traversal_grid(data.model, data.images, data.traversal_dims, labels=data.labels)
    scale = (
        "prior standard deviations"
        if data.model.code_prior_is_standard_normal
        else "units (the prior has no single scale)"
    )
    caption = (
        f"Rows: latent dimensions {dims} (most active first), each swept from -3 to +3 "
        f"{scale} around the first test image's posterior mean."
    )
    plot = labelled_grid(
        grid,
        rows=[f"z[{d}]" for d in dims],
        columns=[f"{v:+.1f}" if v else "0" for v in traversal_offsets()],
        xlabel=f"offset from the posterior mean ({scale})",
        ylabel="latent dimension",
    )
    return plot, caption


@register_picture("interpolations")
def _interpolations(data: PictureData):
    caption = "Each row: two test images at the ends, decoded along the line between their latents."
    return upscale(interpolation_grid(data.model, data.images, labels=data.labels)), caption


@register_picture("manifold")
def _manifold(data: PictureData):
    return upscale(manifold_grid(data.model), 800), "Decoded grid of prior quantiles (5% to 95%)."


@register_picture("latent_space")
def _latent_space(data: PictureData):
    plot = latent_space_plot(data.model, data.images, data.labels, data.class_names)
    return plot, "Posterior means of test images, coloured by class."


@register_picture("curves")
def _curves(data: PictureData):
    return curves_plot(data.history_csv, data.validation_label), "Training curves."


@register_picture("anomaly")
def _anomaly(data: PictureData):
    plot, area = anomaly_plot(data.model, data.images, data.shifted_images, data.shifted_name)
    caption = f"Scores of test images against {data.shifted_name}: AUROC {area:.3f}."
    return plot, caption, {"auroc": round(area, 4), "shifted_dataset": data.shifted_name}


def draw(name: str, data: PictureData) -> tuple[np.ndarray, str, dict]:
    """The picture called `name` as a uint8 array, its caption and its values."""
    check_names([name])
    image, caption, *values = PICTURES[name](data)
    return image, caption, (values[0] if values else {})


def check_names(names) -> list:
    unknown = [n for n in names if n not in PICTURE_NAMES]
    if unknown:
        raise UsageError(
            f"Unknown picture {unknown[0]!r}. Expected one of {list(PICTURE_NAMES)}. "
            f"Received: {list(names)}"
        )
    return list(names)


def write_pictures(data: PictureData, out_dir: str, names=PICTURE_NAMES) -> dict:
    """Writes `<name>.png` for each picture; returns name -> {file|skipped, caption}."""
    results = {}
    for name in check_names(names):
        try:
            image, caption, values = draw(name, data)
        except PictureUnavailable as reason:
            results[name] = {"skipped": str(reason)}
            print(f"{name}: skipped, {reason}")
            continue
        save_png(os.path.join(out_dir, f"{name}.png"), image)
        results[name] = {"file": f"{name}.png", "caption": caption, **values}
    return results


def update_run_pictures(data: PictureData, run_dir: str, names=PICTURE_NAMES) -> str:
    """Draws `names` into a run directory, records them in metrics.json beside
    the pictures drawn before (redrawing one keeps the others) and rewrites
    report.html with all of them. Returns the report's path."""
    path = os.path.join(run_dir, runs.METRICS_FILE)
    before = runs.read_json(path).get("pictures", {}) if os.path.isfile(path) else {}
    pictures = {**before, **write_pictures(data, run_dir, names)}
    runs.update_metrics(run_dir, {"pictures": pictures})
    return write_report(run_dir, pictures)


def _row(name: str, value: str, note: str = "") -> str:
    note = f"<td>{html.escape(note)}</td>" if note else "<td></td>"
    return f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td>{note}</tr>"


def report_rows(metrics: dict, pictures: dict) -> list[str]:
    """The report's results table: every figure metrics.json holds for the run.

    The IW bound is printed to the digits the console prints it with.
    """
    rows = []
    test = metrics.get("test", {})
    if "negative_elbo_nats" in test:
        terms = [
            f"{name} {test[key]:.2f}"
            for name, key in (("reconstruction", "reconstruction_nats"), ("KL", "kl_nats"))
            if key in test
        ]
        where = [test[k] for k in ("split", "estimator") if k in test]
        rows.append(
            _row(
                "Negative ELBO (test)",
                f"{test['negative_elbo_nats']:.2f} nats",
                "; ".join([", ".join(terms), ", ".join(where)]).strip("; "),
            )
        )
    for key, ev in sorted(metrics.items()):
        if not key.startswith("evaluation") or not isinstance(ev, dict) or "iw_nll_nats" not in ev:
            continue
        rows.append(
            _row(
                "IW bound on -log p(x)",
                f"{ev['iw_nll_nats']:.2f} nats",
                f"K={ev['iw_samples']}, {ev['num_images']} images of {ev.get('split', 'test')}, "
                f"{ev.get('precision', '')}",
            )
        )
        rows.append(
            _row("Bits per dimension", f"{ev['iw_bits_per_dim']:.4f}", f"from K={ev['iw_samples']}")
        )
        rows.append(_row("Active units", str(ev["active_units"]), "Cov_x(E_q[z_u]) > 0.01"))
    quality = metrics.get("sample_quality", {})
    for sampler in ("prior", "gmm"):
        if sampler in quality:
            q = quality[sampler]
            rows.append(
                _row(
                    f"FID, {sampler} sampler",
                    f"{q['fid']:.2f}",
                    f"precision {q['precision']:.3f}, recall {q['recall']:.3f}; "
                    f"{quality.get('images', '?')} images",
                )
            )
    anomaly = pictures.get("anomaly", {})
    if "auroc" in anomaly:
        rows.append(
            _row(
                "Anomaly AUROC",
                f"{anomaly['auroc']:.3f}",
                f"test set vs {anomaly['shifted_dataset']}",
            )
        )
    if "epochs" in metrics:
        best = metrics.get("best_epoch")
        rows.append(
            _row(
                "Epochs",
                str(metrics["epochs"]),
                f"best epoch {best} (early stopping's weights kept)"
                if best
                else "last epoch's weights",
            )
        )
    return rows


def write_report(run_dir: str, pictures: dict) -> str:
    """`report.html`: the results, every picture with its caption, and the config.

    One static page beside the pictures; it needs no server.
    """

    def load(name):
        path = os.path.join(run_dir, name)
        return runs.read_json(path) if os.path.isfile(path) else {}

    config, metrics = load(runs.CONFIG_FILE), load(runs.METRICS_FILE)
    config_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
        for k, v in sorted(config.items())
    )
    figures = []
    for name, entry in pictures.items():
        if "file" in entry:
            figures.append(
                f'<figure id="{name}"><img src="{html.escape(entry["file"])}" alt="{name}">'
                f"<figcaption><b>{name}</b>: {html.escape(entry['caption'])}</figcaption></figure>"
            )
        else:
            figures.append(f"<p><b>{name}</b>: not drawn, {html.escape(entry['skipped'])}.</p>")
    title = f"keras-vae run: {html.escape(os.path.basename(os.path.normpath(run_dir)))}"
    dataset = metrics.get("dataset", {})
    strategy = distribute.display_name(str(metrics.get("strategy", {}).get("name", "")))
    about = ""
    if dataset:
        shape = "x".join(map(str, dataset.get("image_shape", [])))
        about = (
            f"<p>{html.escape(str(dataset.get('name')))}, images {shape}; "
            f"{html.escape(str(metrics.get('precision', '')))}; "
            f"strategy {html.escape(strategy)}</p>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
img{{max-width:100%;image-rendering:pixelated;border:1px solid #ccc}}
figure{{margin:2em 0}} table{{border-collapse:collapse}}
th,td{{border:1px solid #ddd;padding:2px 8px;text-align:left;vertical-align:top}}</style></head>
<body><h1>{title}</h1>{about}
<h2>Results</h2><table id="results">{"".join(report_rows(metrics, pictures))}</table>
<h2>Pictures</h2>{"".join(figures)}
<h2>Config</h2><table id="config">{config_rows}</table>
</body></html>
"""
    path = os.path.join(run_dir, runs.REPORT_FILE)
    with runs.atomic_write(path) as f:
        f.write(page)
    return path


# --- a finished run -----------------------------------------------------------


def load_run_picture_data(run_dir, num_images=64, traversal_dims=8, shifted_dataset=None):
    """`PictureData` for a finished run directory."""
    config, model = runs.load_run(run_dir)
    images, labels, class_names = data.load_test_examples(config, data.PICTURE_IMAGES)
    shifted = None
    if shifted_dataset:
        shifted = data.load_shifted_images(
            config, shifted_dataset, data.PICTURE_IMAGES, model.image_shape
        )
    return run_picture_data(
        model,
        run_dir,
        (images, labels, class_names),
        shifted,
        shifted_dataset,
        num_images,
        traversal_dims,
        config.validation_split,
    )


def run_picture_data(
    model,
    run_dir,
    examples,
    shifted=None,
    shifted_name=None,
    num_images=64,
    traversal_dims=8,
    validation_split=None,
) -> PictureData:
    """`PictureData` for a run: `examples` is `(images, labels, class_names)`;
    `validation_split` is the config's (None: `fit` validated on the test split)."""
    images, labels, class_names = examples
    return PictureData(
        model=model,
        images=images,
        labels=labels,
        class_names=class_names,
        history_csv=os.path.join(run_dir, runs.HISTORY_FILE),
        shifted_images=shifted,
        shifted_name=shifted_name or "shifted",
        num_images=num_images,
        traversal_dims=min(traversal_dims, model.code_dim),
        validation_label=validation_label(validation_split),
    )
