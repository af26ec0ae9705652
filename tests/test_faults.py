"""Fault injection: damaged backups, two writers, strict files, atomic writes.

Modelled on SQLite's crash tests and TF Serving's rule that a half-written
version is never loaded: each case damages or races what the package wrote,
then checks that the package refuses with a message that names the problem,
or survives, and never gives a wrong answer with exit 0.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import REPO, random_images

from keras_vae import runs, training
from keras_vae.errors import UsageError
from keras_vae.vae import VAE

TINY = ["--train-split", "train[:1024]", "--test-split", "test[:256]", "--num-images", "8"]
TINY += ["--no-export", "--seed", "1", "--iw-samples", "0", "--latent-dim", "2"]


def _train(*args):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


@pytest.fixture
def backup(tmp_path):
    """A backup written by the training callback after one epoch."""
    model = VAE(latent_dim=2, base_filters=4, seed=0)
    model.compile("adam")
    directory = str(tmp_path / "backup")
    model.fit(
        random_images(32),
        batch_size=16,
        epochs=1,
        verbose=0,
        callbacks=[training.CheckedBackupAndRestore(directory, delete_checkpoint=False)],
    )
    return directory


def test_a_complete_backup_passes_and_says_its_epoch(backup, tmp_path):
    assert runs.check_backup(backup) == 1
    assert runs.check_backup(str(tmp_path / "none")) == 0  # nothing to resume: a fresh run


@pytest.mark.parametrize(
    "damage, message",
    [
        ("remove latest.weights.h5", "latest.weights.h5 is missing"),
        ("remove training_metadata.json", "training_metadata.json is missing"),
        ("truncate latest.weights.h5", "latest.weights.h5 does not match manifest.json"),
        ("flip latest.weights.h5", "latest.weights.h5 does not match manifest.json"),
        ("remove manifest.json", "has no manifest.json: it was not finished"),
        ("garble manifest.json", "manifest.json is damaged"),
    ],
)
def test_a_damaged_backup_is_refused_with_the_file_and_the_way_out(backup, damage, message):
    action, name = damage.split()
    path = os.path.join(backup, name)
    if action == "remove":
        os.remove(path)
    elif action == "truncate":
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
    elif action == "flip":
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
    else:
        with open(path, "w") as f:
            f.write("{")
    with pytest.raises(UsageError, match=message) as error:
        runs.check_backup(backup)
    assert "new `--output-dir`" in str(error.value) or "mv " in str(error.value)


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runs.lock_run_dir(str(run_dir))
    runs.lock_run_dir(str(run_dir))  # again in the same process: a no-op
    code = (
        "import sys; from keras_vae import runs\n"
        "try:\n    runs.lock_run_dir(sys.argv[1])\n"
        "except ValueError as e:\n    print(e); sys.exit(2)\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, cwd=REPO
    )
    assert other.returncode == 2, other.stderr[-2000:]
    assert f"in use by another process (PID {os.getpid()})" in other.stdout


def test_a_second_train_on_a_busy_run_directory_writes_nothing(fashion_mnist_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runs.lock_run_dir(str(run_dir))  # as a running train.py holds it
    result = _train(*TINY, "--epochs", "1", "--output-dir", str(run_dir))
    assert result.returncode == 2 and f"PID {os.getpid()}" in result.stderr
    assert os.listdir(run_dir) == [runs.LOCK_FILE]


def test_json_is_strict_and_writes_are_atomic(tmp_path):
    path = str(tmp_path / "metrics.json")
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        runs.write_json(path, {"loss": float("inf")})
    assert os.listdir(tmp_path) == []  # no half file, no temporary left behind
    runs.write_json(path, {"loss": 1.5})
    with pytest.raises(RuntimeError), runs.atomic_write(path) as f:
        f.write("half")
        raise RuntimeError("disk full")  # as if the write failed midway
    assert json.load(open(path)) == {"loss": 1.5} and os.listdir(tmp_path) == ["metrics.json"]


def test_nan_weights_are_never_saved_as_a_finished_model():
    model = VAE(latent_dim=2, base_filters=4, seed=0)
    model.compile(keras.optimizers.Adam(1e-3))
    images = random_images(32)
    images[0] = np.inf
    with pytest.raises(FloatingPointError, match="at epoch 1, batch 1"):
        model.fit(
            images,
            batch_size=16,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=[training.NonFiniteLossGuard()],
        )


def test_bad_requests_to_serve_signature_are_refused_before_any_work(tmp_path, capsys):
    import serve_signature

    z = str(tmp_path / "z.npy")
    np.save(z, np.zeros((2, 4), np.float32))
    # `run --output DIR` used to write DIR.npz silently.
    code = serve_signature.main(
        ["run", "/no/model", "--input", f"z={z}", "--output", str(tmp_path / "out")]
    )
    assert code == 2 and "expected a file name ending in .npz" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["z.npy"]
    # A file:// URL used to print a local file.
    code = serve_signature.main(["rest", "--input", f"z={z}", "--url", "file:///etc/passwd"])
    assert code == 2 and "expected TF Serving's http:// or https://" in capsys.readouterr().err
    # `count` above int32 used to end in an OverflowError traceback.
    code = serve_signature.main(["run", "/no/model", "--input", "count=2147483648"])
    assert code == 2 and "does not fit an int32 input" in capsys.readouterr().err
    for bad in ("0", "-1", "nan", "1e9"):
        with pytest.raises(SystemExit) as exit_info:
            serve_signature.main(["rest", "--input", f"z={z}", "--timeout", bad])
        assert exit_info.value.code == 2
    assert "expected seconds > 0 and <= 3600" in capsys.readouterr().err


def test_integers_convert_to_float_inputs_only_where_exact():
    from keras_vae.export.runner import SignatureSpec, TensorSpec, check_inputs

    spec = SignatureSpec("decode", {"z": TensorSpec("float32", (None, 2))}, {})
    np.testing.assert_array_equal(check_inputs(spec, {"z": np.array([[3, -4]])})["z"], [[3, -4]])
    with pytest.raises(ValueError, match="has dtype int64; expected float32"):
        check_inputs(spec, {"z": np.array([[2**40, 1]])})  # would round silently


def test_a_full_disk_during_export_leaves_no_new_version(tmp_path, monkeypatch):
    import errno

    from keras_vae.export import tflite as tflite_lib
    from keras_vae.export import writer

    def full_disk(source, out_dir, *args):
        with open(os.path.join(out_dir, "vae_float32.tflite"), "wb") as f:
            f.write(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tflite_lib, "export_tflite", full_disk)
    model = VAE(latent_dim=2, base_filters=4, seed=0)
    images = (random_images(8) * 255).astype(np.uint8)
    with pytest.raises(OSError, match="No space left on device"):
        writer.export_all(model, str(tmp_path), "vae", images)
    # No SavedModel version, no .tflite version, no hidden temporary folder.
    leftovers = [
        os.path.relpath(os.path.join(d, n), tmp_path)
        for d, dirs, files in os.walk(tmp_path)
        for n in dirs + files
    ]
    assert sorted(leftovers) == [".lock", "tflite", os.path.join("tflite", "vae")]


class _ScriptedValLoss(keras.callbacks.Callback):
    """Sets `val_loss` from a script (before early stopping reads it) and keeps
    each epoch's weights."""

    def __init__(self, losses):
        super().__init__()
        self.losses, self.weights = losses, {}

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.losses[epoch]
        self.weights[epoch] = self.model.get_weights()


def _fit_with_early_stopping(backup_dir, epochs, script, seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    early = training.ResumableEarlyStopping(
        str(backup_dir), monitor="val_loss", patience=2, restore_best_weights=True
    )
    backup = training.CheckedBackupAndRestore(str(backup_dir), early, delete_checkpoint=False)
    x = np.random.default_rng(0).random((8, 2), dtype=np.float32)
    model.fit(x, x[:, :1], epochs=epochs, verbose=0, callbacks=[script, early, backup])
    return model, early


def test_resumed_early_stopping_keeps_its_counter_and_best_weights(tmp_path):
    losses = [5.0, 3.0, 4.0, 4.0, 4.0]  # best at epoch 1; patience 2 runs out at epoch 3
    first = _ScriptedValLoss(losses)
    _fit_with_early_stopping(tmp_path / "backup", 3, first, seed=0)  # interrupted after 3
    assert set(runs.EARLY_STOPPING_FILES) <= set(os.listdir(tmp_path / "backup"))
    assert runs.check_backup(str(tmp_path / "backup")) == 3  # the manifest covers them
    model, early = _fit_with_early_stopping(tmp_path / "backup", 5, _ScriptedValLoss(losses), 1)
    # A fresh EarlyStopping would call epoch 3 its best and not stop.
    assert early.stopped_epoch == 3 and early.best_epoch == 1
    for kept, best in zip(model.get_weights(), first.weights[1], strict=True):
        np.testing.assert_array_equal(kept, best)
