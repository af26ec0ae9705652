"""The CLI in subprocesses, on the real Fashion-MNIST files."""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, require_fashion_mnist

from keras_vae import data, training
from keras_vae.config import TrainConfig

# Measured before this test was written (seed 0, 1 epoch on train[:10000], CPU): 329.4
# nats on test[:2000] in float32, 329.1 with the default mixed_bfloat16. An untrained
# model scores about 545.
REAL_DATA_BOUND_NATS = 340.0
SHORT = ["--train-split", "train[:10000]", "--test-split", "test[:2000]", "--num-images", "16"]
SHORT += ["--iw-samples", "10"]


def run_cli(*args, timeout=600):
    # The console as a user sees it: no TF_CPP_MIN_LOG_LEVEL of their own.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    require_fashion_mnist()
    out = str(tmp_path_factory.mktemp("runs") / "run")
    result = run_cli(*SHORT, "--epochs", "1", "--seed", "0", "--output-dir", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


# What a newcomer reads as errors: TensorFlow's C++ log, the cuInit line on a
# machine without a GPU, and absl's Python warnings.
NATIVE_NOISE = re.compile(r"^[IWE]0000 |cuInit|^WARNING:absl:|InitializeLog|fully_quantize", re.M)


def test_the_default_console_prints_the_plan_progress_and_results_only(real_run):
    """The one-epoch run (with its exports: the TFLite converter logs too) shows
    its plan, the epoch and its results, and none of the libraries' own logs."""
    _, result = real_run
    console = result.stdout + result.stderr
    assert not NATIVE_NOISE.search(console), NATIVE_NOISE.search(console).group(0)
    for plan in ("Data:", "Model:", "Strategy:", "Precision:", "Run:"):
        assert re.search(rf"^{plan} ", result.stdout, re.M), plan
    assert re.search(r"^Test IW bound \(K=10, \d+ images\)", result.stdout, re.M)
    assert "Exported:" in result.stdout


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_report_renders_in_headless_chromium_with_the_iw_bound(real_run, tmp_path):
    """report.html as a user opens it: Chromium renders it, every picture loads,
    and the page shows the IW bound metrics.json holds, to the printed digits."""
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI installs Debian's chromium (.ci/run); it is missing")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    out, _ = real_run
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    bound = next(v for k, v in metrics.items() if k.startswith("evaluation"))
    flags = [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    page = "file://" + os.path.join(out, "report.html")
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f"{bound['iw_nll_nats']:.2f} nats" in dom.stdout
    assert f"K={bound['iw_samples']}, {bound['num_images']} images" in dom.stdout
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1280,2000", page],
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = tf.io.decode_png(shot.read_bytes()).numpy()
    assert pixels.shape[:2] == (2000, 1280) and pixels.std() > 10  # not a blank page


def test_verbose_brings_the_libraries_logs_back(fashion_mnist_dir, tmp_path):
    out = str(tmp_path / "run")
    args = ["--train-split", "train[:256]", "--test-split", "test[:128]", "--epochs", "1"]
    args += ["--iw-samples", "0", "--no-export", "--output-dir", out]
    # The default console's quiet run is `real_run` (the test above).
    verbose = run_cli(*args, "--verbose")
    assert verbose.returncode == 0, verbose.stderr[-2000:]
    assert re.search(r"^I0000 .*oneDNN", verbose.stderr, re.M), verbose.stderr[-2000:]


def test_short_real_run_lowers_negative_elbo(real_run):
    out, result = real_run
    with open(os.path.join(out, "metrics.json")) as f:
        metrics = json.load(f)
    test = metrics["test"]
    assert test["negative_elbo_nats"] < REAL_DATA_BOUND_NATS
    assert test["reconstruction_nats"] > 0 and test["kl_nats"] > 0
    assert abs(test["negative_elbo_nats"] - test["reconstruction_nats"] - test["kl_nats"]) < 1e-2
    assert metrics["dataset"]["source"] == "/usr/share/datasets/fashion-mnist"
    assert metrics["config"]["seed"] == 0 and metrics["config"]["output_dir"] == out
    assert metrics["versions"]["tensorflow"] == tf.__version__
    assert f"{test['negative_elbo_nats']:.2f}" in result.stdout
    # By default the end-of-run bound covers the first 1,000 test images, and
    # says so in its key; the whole split would be "evaluation".
    assert "evaluation" not in metrics
    evaluation = metrics["evaluation_first_1000"]
    assert evaluation["iw_samples"] == 10 and evaluation["num_images"] == 1000
    assert evaluation["iw_nll_nats"] < test["negative_elbo_nats"]
    assert 0 < evaluation["active_units"] <= 16


def test_run_writes_every_artifact(real_run):
    out, _ = real_run
    model = keras.models.load_model(os.path.join(out, "model.keras"))
    # The saved model is the trained one: it scores real test images far below
    # an untrained model's ~545 nats.
    raw, _ = data.load("fashion_mnist", "test[:200]", data_dir="/nonexistent")
    images = np.concatenate([b.numpy() for b in data.pipeline(raw, 200)])
    assert float(np.mean(model.negative_elbo(images, sample=False)["loss"])) < REAL_DATA_BOUND_NATS
    assert int(model.optimizer.iterations) == 10000 // 128 + 1
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["epochs"] == 1
    for name in ("samples.png", "reconstructions.png"):
        png = tf.io.decode_png(tf.io.read_file(os.path.join(out, name))).numpy()
        assert min(png.shape[:2]) >= 100 and png.shape[2] == 1
        assert png.std() > 10  # not blank
    with open(os.path.join(out, "history.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and {"loss", "reconstruction", "kl", "val_loss"} <= set(rows[0])
    assert float(rows[0]["val_loss"]) < 545  # the test split, evaluated after the epoch
    report = open(os.path.join(out, "report.html")).read()
    for name in (
        "samples",
        "reconstructions",
        "traversals",
        "interpolations",
        "latent_space",
        "curves",
    ):
        assert f'src="{name}.png"' in report and os.path.isfile(os.path.join(out, f"{name}.png"))
    tags = set()
    for root, _, files in os.walk(os.path.join(out, "logs")):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                tags.update(v.tag for v in event.summary.value)
    assert {"samples", "reconstructions", "traversals", "latent_space", "epoch_loss"} <= tags
    assert os.path.isfile(os.path.join(out, "backup", "training_metadata.json"))
    with open(os.path.join(out, "metrics.json")) as f:
        exports = json.load(f)["exports"]
    assert exports["saved_model"] == os.path.join(out, "saved_model", "vae", "1")
    assert os.path.isfile(os.path.join(exports["saved_model"], "saved_model.pb"))
    assert sorted(exports["tflite"]) == ["float16", "float32", "int8_decoder"]
    assert all(os.path.getsize(p) > 10_000 for p in exports["tflite"].values())


def test_resume_continues_and_runs_are_never_overwritten(real_run, tmp_path):
    out, _ = real_run
    again = run_cli(*SHORT, "--epochs", "1", "--output-dir", out)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "--resume" in again.stderr
    copy = str(tmp_path / "copy")
    subprocess.run(["cp", "-r", out, copy], check=True)
    changed = run_cli("--resume", "--output-dir", copy, "--latent-dim", "3")
    assert changed.returncode == 2 and "Cannot change --latent-dim" in changed.stderr
    resumed = run_cli("--resume", "--output-dir", copy, "--epochs", "2", "--no-export")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with open(os.path.join(copy, "history.csv")) as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert epochs == [0, 1]  # the second epoch only, appended to the first
    model = keras.models.load_model(os.path.join(copy, "model.keras"))
    assert int(model.optimizer.iterations) == 2 * (10000 // 128 + 1)
    # The start and the resume are both on record; the refused commands are not.
    with open(os.path.join(copy, "metrics.json")) as f:
        commands = json.load(f)["commands"]
    assert len(commands) == 2, commands
    assert "--resume" not in commands[0] and "--epochs 2 --no-export" in commands[1]


def test_resume_finishes_a_run_whose_training_ended_and_refuses_a_finished_one(real_run, tmp_path):
    """A run whose epochs are done but whose artifacts were not all written (the
    process died in the final evaluation) is finished by `--resume` without
    training more; a finished run resumed at its own epoch count is refused."""
    out, _ = real_run
    finished = run_cli("--resume", "--output-dir", out, "--epochs", "1")
    assert finished.returncode == 2 and "would train nothing" in finished.stderr
    copy = str(tmp_path / "unfinished")
    subprocess.run(["cp", "-r", out, copy], check=True)
    os.remove(os.path.join(copy, "metrics.json"))  # as if the finishing had crashed
    result = run_cli("--resume", "--output-dir", copy, "--no-export")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "not finished: finishing it" in result.stdout
    with open(os.path.join(copy, "metrics.json")) as f:
        assert json.load(f)["epochs"] == 1
    with open(os.path.join(copy, "history.csv")) as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0]  # no epoch added


def test_early_stopping_that_ran_out_of_patience_ends_the_training(tmp_path):
    config = TrainConfig(early_stopping=5, validation_split="train[50000:]")
    assert not training._early_stopping_ended(str(tmp_path), config)  # no state: not ended
    for wait, ended in ((4, False), (5, True)):
        with open(tmp_path / "early_stopping.json", "w") as f:
            json.dump({"wait": wait, "best": 1.0, "best_epoch": 3}, f)
        assert training._early_stopping_ended(str(tmp_path), config) is ended
    off = TrainConfig(early_stopping=0)
    assert not training._early_stopping_ended(str(tmp_path), off)


def test_same_seed_gives_identical_losses(fashion_mnist_dir, tmp_path):
    tiny = ["--train-split", "train[:1024]", "--test-split", "test[:256]", "--num-images", "4"]
    tiny += ["--iw-samples", "0", "--no-export"]  # the losses are the point
    histories = []
    for name in ("a", "b"):
        result = run_cli(
            *tiny, "--epochs", "2", "--seed", "5", "--output-dir", str(tmp_path / name)
        )
        assert result.returncode == 0, result.stderr[-3000:]
        with open(tmp_path / name / "history.csv") as f:
            histories.append(f.read())
    assert histories[0] == histories[1]
    assert len(histories[0].splitlines()) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "`--epochs`. Expected a value >= 1. Received: 0"),
        (["--likelihood", "poisson"], "invalid choice: 'poisson'"),
        (["--dataset", "no_such_dataset"], "Unknown dataset 'no_such_dataset'"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "not prepared"),
        (["--image-size", "30"], "cannot take images of shape (30, 30, 1)"),
        (["--resume"], "`--resume` needs `--output-dir"),
    ],
)
def test_bad_input_exits_nonzero_and_writes_nothing(args, message, tmp_path):
    out = tmp_path / "run"
    default_runs = os.path.join(REPO, "runs")  # where a run without --output-dir goes
    before = set(os.listdir(default_runs)) if os.path.isdir(default_runs) else set()
    result = run_cli(*args, "--output-dir", str(out)) if "--resume" not in args else run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert not out.exists()
    after = set(os.listdir(default_runs)) if os.path.isdir(default_runs) else set()
    assert after == before


def test_help_lists_every_flag():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--dataset", "--binarize", "--likelihood", "--mixed-precision", "--resume"):
        assert flag in result.stdout


def test_a_non_finite_loss_stops_training_under_mixed_float16():
    # The loss-scale optimizer skips non-finite steps, so the weights stay
    # finite: only the guard on the loss itself sees the divergence.
    from keras_vae.training import NonFiniteLossGuard
    from keras_vae.vae import VAE

    keras.mixed_precision.set_global_policy("mixed_float16")
    model = VAE(latent_dim=2, base_filters=4, seed=0, dtype="mixed_float16")
    model.compile(keras.optimizers.Adam(1e-3))
    images = np.random.default_rng(0).random((64, 28, 28, 1)).astype(np.float32)
    images[40] = np.nan  # the third batch of 16
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(FloatingPointError, match="at epoch 1, batch 3"):
        model.fit(
            images,
            batch_size=16,
            epochs=1,
            verbose=0,
            shuffle=False,
            callbacks=[NonFiniteLossGuard()],
        )
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert any((a != b).any() for a, b in zip(before, model.get_weights(), strict=True))


def test_a_damaged_backup_stops_the_cli_and_writes_nothing(real_run, tmp_path):
    # A copy of the finished 1-epoch run: the other tests keep the original.
    out = str(tmp_path / "copy")
    shutil.copytree(real_run[0], out)
    # Extending a finished run to at most its own epochs trains nothing: refused.
    again = run_cli("--resume", "--epochs", "1", "--output-dir", out)
    assert again.returncode == 2 and "already trained 1 epochs" in again.stderr
    metrics_before = open(os.path.join(out, "metrics.json")).read()
    os.remove(os.path.join(out, "backup", "latest.weights.h5"))
    resumed = run_cli("--resume", "--epochs", "2", "--output-dir", out)
    assert resumed.returncode == 2
    assert "latest.weights.h5 is missing" in resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert open(os.path.join(out, "metrics.json")).read() == metrics_before  # untouched


def test_sigkill_during_evaluation_leaves_the_run_as_it_was(real_run, tmp_path):
    """evaluate merges its result into metrics.json atomically, at the end: a
    kill before then changes nothing (and leaves no temporary file)."""
    out = str(tmp_path / "run")
    shutil.copytree(real_run[0], out)
    before = {f: open(os.path.join(out, f), "rb").read() for f in ("metrics.json",)}
    listing = sorted(os.listdir(out))
    proc = subprocess.Popen(
        [sys.executable, "-m", "keras_vae.evaluate", "--model", out, "--iw-samples", "5000"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    deadline = time.monotonic() + 120
    seen = b""
    while b"IW bound: started" not in seen and time.monotonic() < deadline:
        chunk = proc.stdout.read1(4096)
        if not chunk:  # the process ended: the assertions below show its output
            break
        seen += chunk
    assert b"IW bound: started on 2000 images, K=5000" in seen, seen[-2000:]
    assert proc.poll() is None, seen[-2000:]  # 2,000 images x K=5000: minutes of work
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert open(os.path.join(out, "metrics.json"), "rb").read() == before["metrics.json"]
    assert sorted(os.listdir(out)) == listing
