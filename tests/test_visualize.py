import dataclasses
import html.parser
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import require_fashion_mnist

from keras_vae import cli, data, pictures
from keras_vae.config import TrainConfig
from keras_vae.vae import VAE


@pytest.fixture(scope="module")
def trained(fashion_mnist_dir_module):
    """Two small models trained on real Fashion-MNIST: latent 2 and latent 4."""
    raw, info = data.load("fashion_mnist", "train[:4000]", data_dir="/nonexistent")
    test_raw, _ = data.load("fashion_mnist", "test[:600]", data_dir="/nonexistent")
    images, labels = next(iter(data.pipeline(test_raw, 600, with_labels=True)))
    models = {}
    for latent in (2, 4):
        keras.utils.set_random_seed(0)
        model = VAE(latent_dim=latent, seed=0)
        model.compile("adam")
        model.fit(data.pipeline(raw, 128, shuffle=True, seed=0), epochs=2, verbose=0)
        models[latent] = model
    return models, images.numpy(), labels.numpy(), info.class_names


@pytest.fixture(scope="module")
def fashion_mnist_dir_module():
    return require_fashion_mnist()


def _png(path):
    return tf.io.decode_png(tf.io.read_file(str(path))).numpy()


def _history(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,kl,loss,reconstruction\n0,10,300,290\n1,12,280,268\n2,13,270,257\n")
    return str(path)


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the pictures draw, kept for inspection."""
    kept = []
    draw = pictures._figure_to_array
    monkeypatch.setattr(pictures, "_figure_to_array", lambda fig: kept.append(fig) or draw(fig))
    return kept


@pytest.mark.parametrize(
    "validation_split, label",
    [(None, "test split"), ("train[50000:]", "validation (train[50000:])")],
)
def test_curves_name_the_data_fit_validated_on(tmp_path, figures, validation_split, label):
    """The `val_` columns are the validation split's when the run has one
    (the literature protocols), the test split's otherwise."""
    path = tmp_path / "history.csv"
    path.write_text(
        "epoch,kl,loss,reconstruction,val_kl,val_loss,val_reconstruction\n0,1,3,2,1,4,3\n"
    )
    model = VAE(latent_dim=2, seed=0)
    examples = (np.zeros((4, 28, 28, 1), np.float32), None, [])
    data = pictures.run_picture_data(
        model, str(tmp_path), examples, validation_split=validation_split
    )
    pictures.draw("curves", data)
    legends = [t.get_text() for ax in figures[0].axes for t in ax.get_legend().get_texts()]
    assert legends == ["train", label] * 3


def test_long_curves_show_the_tail(tmp_path, figures):
    """Past `LONG_RUN_EPOCHS` epochs the lines lose their markers and the
    y-axis spans the epochs after the first 5%, so that a long run's first
    epochs (far above the rest) do not flatten its tail."""
    loss = 230 + 200 * np.exp(-np.arange(400) / 5.0)  # 430 falling to 230
    rows = [f"{e},1,{v},{v - 1}" for e, v in enumerate(loss)]
    path = tmp_path / "history.csv"
    path.write_text("epoch,kl,loss,reconstruction\n" + "\n".join(rows) + "\n")
    pictures.curves_plot(str(path))
    low, high = figures[0].axes[0].get_ylim()
    assert high < 235 < 400 and low < 230  # the tail, not the first epochs
    assert figures[0].axes[0].lines[0].get_marker() in (None, "None", "")


def test_every_picture_has_its_size_and_is_not_blank(trained, tmp_path):
    models, images, labels, class_names = trained
    shifted = 1.0 - images  # inverted garments: a shifted set that needs no download
    picture_data = pictures.PictureData(
        models[2], images, labels, class_names, _history(tmp_path), shifted, "inverted", 16, 2
    )
    results = pictures.write_pictures(picture_data, str(tmp_path))
    assert all("file" in r for r in results.values()), results
    grid = lambda rows, cols, side=28, pad=1: (rows * (side + pad) + pad, cols * (side + pad) + pad)  # noqa: E731
    expected_grids = {
        "samples": grid(4, 4),
        "reconstructions": grid(6, 6),  # 16 pairs, 3 pairs a row
        "interpolations": grid(6, pictures.INTERPOLATION_STEPS + 2),
        "manifold": (20 * 28, 20 * 28),
    }
    for name, (height, width) in expected_grids.items():
        png = _png(tmp_path / f"{name}.png")
        factor = pictures.upscale_factor((height, width), 800 if name == "manifold" else 512)
        assert png.shape[:2] == (height * factor, width * factor), name
        assert png.std() > 20, name  # varied pixels, not a blank image
    traversal = _png(tmp_path / "traversals.png")
    assert traversal.shape[0] > grid(2, 1)[0] and traversal.std() > 20
    assert results["anomaly"]["auroc"] > 0.9 and "AUROC" in results["anomaly"]["caption"]
    for name, size in {
        "latent_space": (700, 800),
        "curves": (400, 1300),
        "anomaly": (500, 800),
    }.items():
        png = _png(tmp_path / f"{name}.png")
        assert png.shape[:2] == size, name
        assert png.std() > 20 and len(np.unique(png.reshape(-1, 3), axis=0)) > 20, name
    # The score separates inverted garments from real ones.
    scores = (
        pictures.anomaly_scores(models[2], images),
        pictures.anomaly_scores(models[2], shifted),
    )
    assert pictures.auroc(*scores) > 0.9


def test_the_traversal_picture_labels_its_rows_and_columns(trained, tmp_path, figures):
    """Rows are named by their latent dimension, columns by the offset in prior
    standard deviations, -3 to +3."""
    models, images, labels, class_names = trained
    picture_data = pictures.PictureData(
        models[4], images, labels, class_names, _history(tmp_path), None, None, 16, 3
    )
    _, caption, _ = pictures.draw("traversals", picture_data)
    _, dims = pictures.traversal_grid(models[4], images, 3)
    ax = figures[-1].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"z[{d}]" for d in dims]
    columns = [t.get_text() for t in ax.get_xticklabels()]
    assert columns[0] == "-3.0" and columns[-1] == "+3.0" and len(columns) == 11
    assert "prior standard deviations" in ax.get_xlabel()
    assert str(dims) in caption


def test_traversal_rows_follow_the_most_active_dimensions(trained):
    models, images, _, _ = trained
    model = models[4]
    kl = pictures.activity_per_dimension(model, images)
    for dims in (1, 3, 4):
        grid, chosen = pictures.traversal_grid(model, images, dims)
        assert grid.shape[0] == dims * 29 + 1
        assert chosen == list(np.argsort(-kl)[:dims])
    with pytest.raises(
        ValueError, match="Expected 1 to the latent size, 4. Received: traversal_dims=5"
    ):
        pictures.traversal_grid(model, images, 5)


def test_kl_per_dimension_finds_dead_dimensions():
    model = VAE(latent_dim=3)
    kernel, bias = model.encoder.get_layer("posterior_params").get_weights()
    kernel[:, [1, 4]] = 0.0  # mean and log-variance of dimension 1: exactly the prior
    bias[[1, 4]] = 0.0
    model.encoder.get_layer("posterior_params").set_weights([kernel, bias])
    kl = pictures.activity_per_dimension(model, np.random.default_rng(0).random((50, 28, 28, 1)))
    assert kl[1] == pytest.approx(0.0, abs=1e-7)
    assert kl[0] > 1e-4 and kl[2] > 1e-4


def test_manifold_only_for_two_dimensional_latents(trained, tmp_path):
    models, images, labels, class_names = trained
    picture_data = pictures.PictureData(models[4], images, labels, class_names)
    results = pictures.write_pictures(
        picture_data, str(tmp_path), ["manifold", "curves", "anomaly"]
    )
    assert (
        "needs a 2-D latent space and this model's has 4 dimensions"
        in results["manifold"]["skipped"]
    )
    assert "no history.csv" in results["curves"]["skipped"]
    assert "--shifted-dataset" in results["anomaly"]["skipped"]
    assert not (tmp_path / "manifold.png").exists()
    with pytest.raises(
        ValueError, match=r"Unknown picture 'mona_lisa'. Expected one of \['samples'"
    ):
        pictures.write_pictures(picture_data, str(tmp_path), ["samples", "mona_lisa"])
    assert not (tmp_path / "samples.png").exists()  # checked before drawing anything


class _Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_cli_on_a_run_directory_writes_a_report(trained, tmp_path, capsys):
    models, *_ = trained
    run = tmp_path / "run"
    run.mkdir()
    models[2].save(str(run / "model.keras"))
    config = TrainConfig(latent_dim=2, test_split="test[:300]", data_dir="/nonexistent")
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    evaluation = {"iw_nll_nats": 268.123456, "iw_samples": 100, "num_images": 300}
    evaluation.update(iw_bits_per_dim=0.4934, active_units=2, split="test[:300]")
    written = {"test": {"negative_elbo_nats": 270.5}, "evaluation": evaluation}
    (run / "metrics.json").write_text(json.dumps(written))
    _history(run)
    code = cli.main(
        [
            "visualize",
            "--model",
            str(run),
            "--traversal-dims",
            "2",
            "--shifted-dataset",
            "no_such_ds",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "shifted dataset 'no_such_ds' is not available" in out
    parser = _Images()
    parser.feed((run / "report.html").read_text())
    assert {"html", "table", "figure"} <= set(parser.tags)
    assert len(parser.sources) == 7  # every picture but the anomaly histogram
    for src in parser.sources:
        assert (run / src).is_file()
    page = (run / "report.html").read_text()
    # The figures metrics.json holds, to the digits the console prints.
    assert "270.50 nats" in page and "268.12 nats" in page and "K=100, 300 images" in page
    assert "0.4934" in page and "Active units" in page
    # Redrawing one picture keeps the others in metrics.json and the report.
    assert cli.main(["visualize", "--model", str(run), "--pictures", "curves"]) == 0
    parser = _Images()
    parser.feed((run / "report.html").read_text())
    assert len(parser.sources) == 7
    recorded = json.loads((run / "metrics.json").read_text())
    assert recorded["test"] == {"negative_elbo_nats": 270.5}
    assert recorded["evaluation"] == evaluation
    assert len([p for p in recorded["pictures"].values() if "file" in p]) == 7


def test_cli_bad_input(tmp_path, capsys):
    assert cli.main(["visualize", "--model", str(tmp_path)]) == 2
    assert "holds no model.keras" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # refused by argparse, before any work
        cli.main(["visualize", "--model", str(tmp_path), "--pictures", "selfie"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'selfie'" in capsys.readouterr().err
