"""Pretrained presets: the shipped ones reproduce their recorded figure in a
fresh process; save_to_preset/from_preset round trips; bad presets fail clearly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, require_fashion_mnist

from keras_vae import VAE, cli, presets
from keras_vae.errors import UsageError

CHECK_SCRIPT = """
import json, sys
from keras_vae import evaluation, presets, VAE
from keras_vae.config import TrainConfig
name = sys.argv[1]
metadata = presets.read(name)[2]
config = TrainConfig.from_saved(metadata["train_config"], name)
print(json.dumps(evaluation.preset_check(VAE.from_preset(name), config)))
"""


@pytest.mark.parametrize("name", presets.available())
def test_shipped_preset_reproduces_its_recorded_bound_in_a_fresh_process(name):
    require_fashion_mnist()
    metadata = presets.read(name)[2]
    for key in ("command", "dataset", "class_names", "epochs", "test", "trained_with"):
        assert metadata[key], key
    done = subprocess.run(
        [sys.executable, "-c", CHECK_SCRIPT, name],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    recorded = metadata["check"]
    assert (measured["images"], measured["iw_samples"]) == (500, 100)
    assert measured["iw_nll_nats"] == pytest.approx(recorded["iw_nll_nats"], abs=0.5)


def test_presets_are_shipped_and_small():
    shipped = {
        "fashion_mnist_conv",
        "fashion_mnist_gated_mlp",
        "fashion_mnist_vampprior",
        "fashion_mnist_hvae_vampprior",
    }
    assert shipped <= set(presets.available())
    size = sum(
        os.path.getsize(os.path.join(folder, f))
        for folder, _, files in os.walk(presets.PRESETS_DIR)
        for f in files
    )
    assert size < 20 * 2**20
    # Weights only: no optimizer state (Keras's save_weights would add Adam's).
    import h5py

    for name in presets.available():
        with h5py.File(os.path.join(presets.PRESETS_DIR, name, presets.WEIGHTS_FILE)) as f:
            assert "optimizer" not in f


def test_save_to_preset_round_trips_weights_metadata_and_sampler(tmp_path):
    model = VAE(latent_dim=4, seed=0, num_classes=3)
    rng = np.random.default_rng(1)  # not the seeded initialisation from_config repeats
    model.set_weights([w + rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    gmm = tmp_path / presets.GMM_FILE
    gmm.write_bytes(b"sampler")
    model.save_to_preset(str(tmp_path / "p"), {"epochs": 3}, extra=[str(gmm)])
    loaded = VAE.from_preset(str(tmp_path / "p"))
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.get_config() == model.get_config()
    assert presets.read(str(tmp_path / "p"))[2] == {"epochs": 3}
    assert open(presets.gmm_file(str(tmp_path / "p")), "rb").read() == b"sampler"
    # Never into a non-empty folder; a failed write leaves nothing behind.
    with pytest.raises(UsageError, match="exists and is not empty"):
        model.save_to_preset(str(tmp_path / "p"))

    def broken(path):
        raise OSError("disk full")

    with pytest.raises(OSError):
        presets.write(str(tmp_path / "q"), {}, broken, {})
    assert sorted(os.listdir(tmp_path)) == [presets.GMM_FILE, "p"]


def test_float16_weights_halve_the_file_and_load_as_rounded(tmp_path):
    import h5py

    model = VAE(latent_dim=4, seed=0)
    model.save_to_preset(str(tmp_path / "f32"))
    model.save_to_preset(str(tmp_path / "f16"), weights_dtype="float16")
    sizes = [os.path.getsize(tmp_path / d / presets.WEIGHTS_FILE) for d in ("f32", "f16")]
    assert sizes[1] < 0.6 * sizes[0], sizes
    stored = []
    with h5py.File(tmp_path / "f16" / presets.WEIGHTS_FILE) as f:
        f.visititems(lambda _, item: stored.extend([item.dtype] if hasattr(item, "dtype") else []))
    assert stored and set(stored) == {np.dtype("float16")}
    loaded = VAE.from_preset(str(tmp_path / "f16")).get_weights()
    expected = presets.rounded(model.get_weights(), "float16")
    assert any((a != b).any() for a, b in zip(expected, model.get_weights(), strict=True))
    for a, b in zip(expected, loaded, strict=True):
        assert b.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    huge = VAE(latent_dim=4, seed=0)
    huge.set_weights([w + 7e4 for w in huge.get_weights()])
    with pytest.raises(UsageError, match="does not fit in float16"):
        huge.save_to_preset(str(tmp_path / "huge"), weights_dtype="float16")
    assert not (tmp_path / "huge").exists()
    with pytest.raises(UsageError, match="expected one of"):
        model.save_to_preset(str(tmp_path / "f8"), weights_dtype="float8")
    assert not (tmp_path / "f8").exists()
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--model", str(tmp_path), "--preset-weights", "float16"])


def test_bad_presets_fail_with_what_is_available(tmp_path):
    with pytest.raises(UsageError, match="Unknown preset 'nope'.*fashion_mnist_conv"):
        VAE.from_preset("nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="lacks model.weights.h5, metadata.json"):
        VAE.from_preset(str(tmp_path / "half"))
    VAE(latent_dim=4, seed=0).save_to_preset(str(tmp_path / "p"))
    config_file = tmp_path / "p" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "latent_dim": 5}))
    with pytest.raises(UsageError, match="does not match its config.json"):
        VAE.from_preset(str(tmp_path / "p"))


def test_generate_and_export_take_a_preset(tmp_path, capsys):
    require_fashion_mnist()
    grid = tmp_path / "g.png"
    args = ["--model", "fashion_mnist_conv", "--sampler", "gmm", "--count", "4", "--seed", "0"]
    assert cli.main(["generate", *args, "--grid", str(grid), "--label", "Coat"]) == 2
    assert "not conditional" in capsys.readouterr().err
    assert cli.main(["generate", *args, "--grid", str(grid)]) == 0 and grid.stat().st_size > 0
    from keras_vae.cli.export import main as export_main
    from keras_vae.export.runner import open_model

    preset = ["--preset", "fashion_mnist_conv", "--no-tflite"]
    assert export_main(preset) == 2
    assert "pass --output-dir" in capsys.readouterr().err
    out = tmp_path / "exports"
    assert export_main([*preset, "--output-dir", str(out)]) == 0
    runner = open_model(str(out / "saved_model" / "vae" / "1"))
    assert runner.run("generate_gmm", {"count": np.int32(3)})["images"].shape == (3, 28, 28, 1)


def test_a_model_trained_with_adamnormgrad_reloads_in_a_command_line(tmp_path):
    """The CLIs import the model lazily; loading a run trained with
    --normalize-gradients must still find its optimizer class."""
    from conftest import random_images

    from keras_vae.optimizers import AdamNormGrad

    model = VAE(latent_dim=2, seed=0)
    model.compile(AdamNormGrad(1e-3))
    model.fit(random_images(8), epochs=1, verbose=0)
    model.save(str(tmp_path / "m.keras"))
    code = (
        "import sys\nimport keras_vae\nimport keras\n"
        "print(type(keras.models.load_model(sys.argv[1]).optimizer).__name__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "m.keras")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "AdamNormGrad"
