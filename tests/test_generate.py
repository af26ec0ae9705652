"""Own pictures in, new images out: a folder dataset trained end to end, then
`keras_vae.generation` (PNG files, grids, classes by name, seeds) and the GMM sampler."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_train import run_cli

from keras_vae import cli, data, samplers
from keras_vae.errors import UsageError

CLASSES = ("Coat", "Sneaker")  # Fashion-MNIST labels 4 and 7


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """Eight conditional epochs on a folder of real Fashion-MNIST coats and sneakers."""
    from conftest import require_fashion_mnist

    require_fashion_mnist()
    root = tmp_path_factory.mktemp("clothes")
    ds, _ = data.load("fashion_mnist", "train[:3000]", data_dir="/nonexistent")
    count = dict.fromkeys(CLASSES, 0)
    for example in ds.as_numpy_iterator():
        label = int(example["label"])
        name = {4: "Coat", 7: "Sneaker"}.get(label)
        if name and count[name] < 300:
            Image.fromarray(example["image"][..., 0]).save(root / f"{name}-{count[name]}.png")
            count[name] += 1
    for name in CLASSES:  # class subfolders, one of them nested deeper
        folder = root / name / ("nested" if name == "Sneaker" else "")
        folder.mkdir(parents=True, exist_ok=True)
        for file in root.glob(f"{name}-*.png"):
            file.rename(folder / file.name)
    out = str(tmp_path_factory.mktemp("runs") / "run")
    result = run_cli(
        "--dataset", str(root), "--conditional", "--epochs", "8", "--batch-size", "50",
        "--iw-samples", "5", "--num-images", "16", "--seed", "0",
        "--output-dir", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_folder_run_trains_and_names_its_classes(folder_run):
    with open(os.path.join(folder_run, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["dataset"]["class_names"] == list(CLASSES)
    assert metrics["dataset"]["image_shape"] == [28, 28, 1]
    # 600 images, 10% held out: 540 to train on, 60 to test.
    assert metrics["evaluation"]["num_images"] == 60  # the whole (small) test split
    with open(os.path.join(folder_run, "history.csv")) as f:
        val_loss = [float(row.split(",")[5]) for row in f.read().splitlines()[1:]]
    assert len(val_loss) == 8 and val_loss[-1] < val_loss[0] - 20  # it learned
    assert os.path.isfile(os.path.join(folder_run, "samples.png"))
    # The exports carry the run's GMM sampler: generate_gmm draws one image per label.
    from keras_vae.export.runner import open_model

    gmm = samplers.GaussianMixtureSampler.load(os.path.join(folder_run, samplers.GMM_FILE))
    for path in (metrics["exports"]["saved_model"], metrics["exports"]["tflite"]["float16"]):
        runner = open_model(path)
        assert set(runner.signatures["generate_gmm"].inputs) == {"labels"}
        drawn = runner.run("generate_gmm", {"labels": np.array([0, 1, 1], np.int32)})
        assert drawn["images"].shape == (3, 28, 28, 1)
        assert set(drawn["component"]) <= set(range(len(gmm.weights)))


def read_pngs(folder):
    files = sorted(os.listdir(folder))
    return files, np.stack([np.asarray(Image.open(os.path.join(folder, f))) for f in files])


def test_generate_writes_pngs_by_class_name_and_seed(folder_run, tmp_path):
    args = ["--model", folder_run, "--count", "6", "--seed", "3", "--label", "Sneaker"]
    assert (
        cli.main(
            ["generate", *args, "--out", str(tmp_path / "a"), "--grid", str(tmp_path / "g.png")]
        )
        == 0
    )
    files, images = read_pngs(tmp_path / "a")
    assert files == [f"{i:05d}.png" for i in range(6)] and images.shape == (6, 28, 28)
    assert Image.open(tmp_path / "g.png").size == (3 * 29 + 1, 2 * 29 + 1)
    # The same seed: identical files. The class by index: the same images as by name.
    assert cli.main(["generate", *args[:-1], "1", "--out", str(tmp_path / "b")]) == 0
    np.testing.assert_array_equal(read_pngs(tmp_path / "b")[1], images)
    # Another class from the same noise: other images; sneakers are darker than
    # coats. After 8 epochs the gap is ~10 grey levels (10.4 with bfloat16
    # networks on AVX512-BF16, 10.0 in float32, `auto` on AVX2-only CPUs), so
    # the test asks for half of it: a margin that both CPU kinds clear.
    assert cli.main(["generate", *args[:-1], "Coat", "--out", str(tmp_path / "c")]) == 0
    coats = read_pngs(tmp_path / "c")[1]
    assert coats.mean() > images.mean() + 5, (coats.mean(), images.mean())
    # Another seed: other images.
    assert cli.main(["generate", *args[:5], "4", *args[6:], "--out", str(tmp_path / "d")]) == 0
    assert not np.array_equal(read_pngs(tmp_path / "d")[1], images)


def test_generate_refuses_bad_requests_before_writing(folder_run, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    cases = [
        (
            ["--label", "Hat", "--out", str(tmp_path / "x")],
            "not a class of this model. Classes: Coat, Sneaker",
        ),
        (["--out", str(tmp_path / "full")], "exists and is not an empty folder"),
        (["--grid", str(tmp_path / "g.jpg")], "give a .png file name"),
        ([], "Nothing to write"),
    ]
    for extra, message in cases:
        assert cli.main(["generate", "--model", folder_run, *extra]) == 2
        assert message in capsys.readouterr().err
    assert os.listdir(tmp_path / "full") == ["keep.txt"] and not (tmp_path / "x").exists()


def test_gmm_sampler_is_fitted_once_and_kept(folder_run, tmp_path):
    # train.py fitted it for the exports; generate reuses it.
    out = str(tmp_path / "gmm")
    assert (
        cli.main(
            ["generate", "--model", folder_run, "--sampler", "gmm", "--count", "4", "--out", out]
        )
        == 0
    )
    path = os.path.join(folder_run, samplers.GMM_FILE)
    stamp = os.stat(path).st_mtime_ns
    gmm = samplers.GaussianMixtureSampler.load(path)
    assert gmm.means.shape == (samplers.GMM_COMPONENTS, 16)
    np.testing.assert_allclose(gmm.weights.sum(), 1.0, rtol=1e-5)
    assert (
        cli.main(
            [
                "generate",
                "--model",
                folder_run,
                "--sampler",
                "gmm",
                "--grid",
                str(tmp_path / "g.png"),
            ]
        )
        == 0
    )
    assert os.stat(path).st_mtime_ns == stamp  # reused, not refitted
    assert read_pngs(out)[1].shape == (4, 28, 28)


def test_a_run_saved_as_a_preset_generates_by_class_name(folder_run, tmp_path):
    from keras_vae import VAE, presets

    preset = str(tmp_path / "clothes")
    assert cli.main(["evaluate", "--model", folder_run, "--save-preset", preset]) == 0
    metadata = presets.read(preset)[2]
    assert metadata["class_names"] == list(CLASSES) and metadata["epochs"] == 8
    with open(os.path.join(folder_run, "metrics.json")) as f:
        run_bound = json.load(f)["evaluation"]["iw_nll_nats"]  # K=5 on the same 60 images
    assert metadata["check"]["images"] == 60  # the whole (small) test split
    assert metadata["check"]["iw_nll_nats"] < run_bound + 1  # K=100 is the tighter bound
    assert VAE.from_preset(preset).num_classes == 2
    args = ["--model", preset, "--count", "4", "--seed", "3", "--label", "Sneaker"]
    assert cli.main(["generate", *args, "--out", str(tmp_path / "from_preset")]) == 0
    from_run = ["--model", folder_run, *args[2:], "--out", str(tmp_path / "r")]
    assert cli.main(["generate", *from_run]) == 0
    np.testing.assert_array_equal(
        read_pngs(tmp_path / "from_preset")[1], read_pngs(tmp_path / "r")[1]
    )
    # Its fitted GMM sampler travelled with it.
    assert presets.gmm_file(preset) is not None
    # Half the size: the same run with float16 weights, its check measured with them.
    half = str(tmp_path / "half")
    flags = ["--model", folder_run, "--save-preset", half, "--preset-weights", "float16"]
    assert cli.main(["evaluate", *flags]) == 0
    half_metadata = presets.read(half)[2]
    assert (metadata["weights_dtype"], half_metadata["weights_dtype"]) == ("float32", "float16")
    recorded = metadata["check"]["iw_nll_nats"]
    assert half_metadata["check"]["iw_nll_nats"] == pytest.approx(recorded, abs=0.5)
    as_stored = presets.rounded(VAE.from_preset(preset).get_weights(), "float16")
    for a, b in zip(as_stored, VAE.from_preset(half).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_gmm_draws_follow_a_set_mixture():
    weights = np.array([0.2, 0.8])
    means = np.array([[-5.0, 0.0], [5.0, 1.0]])
    covariances = np.array([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.9], [0.9, 0.5]]])
    gmm = samplers.GaussianMixtureSampler(weights, means, covariances)
    rng = np.random.default_rng(0)
    n = 40_000
    drawn = gmm.from_noise(
        rng.standard_normal((n, 2)).astype("float32"), rng.random(n, dtype="float32")
    )
    z, component = drawn["z"].numpy(), drawn["component"].numpy()
    np.testing.assert_allclose(np.bincount(component) / n, weights, atol=0.01)
    for k in range(2):
        np.testing.assert_allclose(z[component == k].mean(0), means[k], atol=0.05)
        np.testing.assert_allclose(np.cov(z[component == k].T), covariances[k], atol=0.06)
    # Fitting recovers the mixture from its own draws.
    refit = samplers.GaussianMixtureSampler.fit(z, components=2)
    order = np.argsort(refit.means[:, 0])
    np.testing.assert_allclose(refit.weights[order], weights, atol=0.01)
    np.testing.assert_allclose(refit.means[order], means, atol=0.05)


def test_draw_latents_temperature_scales_the_noise():
    from keras_vae.vae import VAE

    model = VAE(latent_dim=4, seed=0)
    cold = samplers.draw_latents(model, 5000, temperature=0.5, seed=1)
    warm = samplers.draw_latents(model, 5000, temperature=1.0, seed=1)
    np.testing.assert_allclose(cold, 0.5 * warm, rtol=1e-6)
    assert 0.95 < warm.std() < 1.05
    with pytest.raises(UsageError, match="needs a fitted mixture"):
        samplers.draw_latents(model, 2, sampler="gmm")
    assert tf.is_tensor(model.prior_layer.from_noise(cold[:2])["z"])


def test_evaluate_fid_reports_each_sampler_and_caches_the_classifier(folder_run):
    from keras_vae import quality

    assert cli.main(["evaluate", "--model", folder_run, "--fid"]) == 0
    with open(os.path.join(folder_run, "metrics.json")) as f:
        result = json.load(f)["sample_quality"]
    assert result["images"] == 60  # the held-out test images
    assert set(result) >= {"prior", "gmm", "train_images_vs_test", "classifier_test_accuracy"}
    # Coats against sneakers: an easy split for the classifier.
    assert result["classifier_test_accuracy"] > 0.9
    for key in ("prior", "gmm", "train_images_vs_test"):
        assert result[key]["fid"] >= 0 and 0 <= result[key]["precision"] <= 1
    stamp = os.stat(os.path.join(folder_run, quality.CLASSIFIER_FILE)).st_mtime_ns
    assert cli.main(["evaluate", "--model", folder_run, "--fid", "--max-images", "30"]) == 0
    assert os.stat(os.path.join(folder_run, quality.CLASSIFIER_FILE)).st_mtime_ns == stamp


def test_rgb_faces_of_mixed_sizes_train_at_image_size_and_generate_rgb(tmp_path):
    """The seed's example, `--dataset ~/faces --image-size 64`, on made-up RGB "faces"."""
    rng = np.random.default_rng(0)
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(48):
        h, w = (64, 64) if i % 2 else (80, 70)  # two sizes: --image-size is needed
        y, x = np.mgrid[:h, :w]
        ellipse = ((y - h / 2) / (0.4 * h)) ** 2 + ((x - w / 2) / (0.3 * w)) ** 2 < 1
        skin = rng.integers(120, 230, 3)
        picture = np.where(ellipse[..., None], skin, rng.integers(0, 60, 3)).astype(np.uint8)
        Image.fromarray(picture).save(faces / f"face{i:02d}.jpg")
    out = str(tmp_path / "run")
    common = ["--dataset", str(faces), "--epochs", "1", "--batch-size", "16", "--iw-samples", "0"]
    refused = run_cli(*common, "--output-dir", out)
    assert refused.returncode == 2 and "--image-size" in refused.stderr
    assert not os.path.exists(out)
    result = run_cli(
        *common, "--image-size", "64", "--likelihood", "gaussian", "--no-export",
        "--num-images", "4", "--output-dir", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        cli.main(["generate", "--model", out, "--count", "3", "--out", str(tmp_path / "new")]) == 0
    )
    files, images = read_pngs(tmp_path / "new")
    assert images.shape == (3, 64, 64, 3)
    assert Image.open(tmp_path / "new" / files[0]).mode == "RGB"
