"""The fault cases of issue 31: small folders, hostile files, interrupted work.

One test per case, each named after what survives what; docs/reliability.md
lists them. Kills use a deterministic trigger (a file that appears or grows,
a line the process prints), never a sleep.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import keras
import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from keras_vae import cli, local_data, presets, runs, samplers, sources
from keras_vae.config import TrainConfig
from keras_vae.errors import UsageError
from keras_vae.images import read_image

ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
FAST = ["--epochs", "1", "--batch-size", "4", "--num-images", "4", "--latent-dim", "2"]


def _command(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "keras_vae", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=ENV,
    )


def _folder(path, count, size=28, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    for i in range(count):
        pixels = (rng.random((size, size)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(path, f"{i:03d}.png"))
    return str(path)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A run on a folder of 3 images: 2 to train on, 1 held out for test."""
    root = tmp_path_factory.mktemp("small")
    folder = _folder(root / "photos", 3)
    out = str(root / "run")
    done = _command("train", "--dataset", folder, *FAST, "--iw-samples", "5", "--output-dir", out)
    return folder, out, done


# --- 1. a split of one image ------------------------------------------------


@pytest.mark.slow
def test_a_folder_with_one_test_image_trains_evaluates_and_exports(small_run):
    _, out, done = small_run
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    (bound,) = [v for k, v in metrics.items() if k.startswith("evaluation")]
    assert bound["num_images"] == 1 and np.isfinite(bound["iw_nll_nats"])
    skipped = {k: v["skipped"] for k, v in metrics["pictures"].items() if "skipped" in v}
    assert "at least 2 test images" in skipped["interpolations"]
    assert "at least 3 test images" in skipped["latent_space"]
    assert os.path.isdir(os.path.join(out, "saved_model"))
    assert os.path.isfile(os.path.join(out, "gmm_sampler.npz"))  # fitted to the 2 training images
    with pytest.raises(UsageError, match="needs at least 2; the training split has 1"):
        samplers.GaussianMixtureSampler.fit(np.zeros((1, 2)))


@pytest.mark.slow
def test_a_tfds_slice_of_one_test_image_trains(fashion_mnist_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["--train-split", "train[:64]", "--test-split", "test[:1]", *FAST, "--no-export"]
    assert cli.main(["train", *args, "--iw-samples", "3", "--output-dir", out]) == 0, (
        capsys.readouterr().err[-3000:]
    )
    assert json.load(open(os.path.join(out, "metrics.json")))["epochs"] == 1


def test_an_empty_split_is_refused_before_the_run_directory(fashion_mnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    for flag, split in [("--validation-split", "train[2048:2048]"), ("--test-split", "test[5:5]")]:
        code = cli.main(
            ["train", "--train-split", "train[:64]", flag, split, "--output-dir", str(out)]
        )
        assert code == 2
        assert f"`{flag} {split}` selects no images" in capsys.readouterr().err
        assert not out.exists()


# --- 2, 3, 5, 6, 11: hostile folders and arrays ---------------------------


def test_a_symlink_loop_ends_and_a_folder_linked_twice_is_read_once(tmp_path):
    root = tmp_path / "photos"
    _folder(root / "a", 4)
    os.symlink(root, root / "a" / "loop")  # a -> root -> a -> ...
    os.symlink(root / "a", root / "twice")
    code = (
        "import sys\nfrom keras_vae import local_data\n"
        "splits, _ = local_data.load_local(sys.argv[1], test_fraction=0.25)\n"
        "print(sum(len(x) for x, _ in splits.values()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["4"]


def test_a_huge_label_is_refused_before_anything_is_allocated(tmp_path):
    path = str(tmp_path / "labels.npz")
    np.savez(path, images=np.zeros((4, 8, 8, 1), np.uint8), labels=np.array([0, 1, 2, 2**40]))
    with pytest.raises(UsageError, match=r"a label is 1099511627776.*at most 65,536 classes"):
        local_data.load_local(path)


@pytest.mark.parametrize("member", ["labels", "images", "class_names"])
def test_a_pickled_npz_member_is_refused(tmp_path, member):
    arrays = {
        "images": np.zeros((4, 8, 8, 1), np.uint8),
        "labels": np.array([0, 1, 1, 0]),
        "class_names": np.array(["a", "b"]),
    }
    arrays[member] = np.array([{}, None, 1, 2], dtype=object)
    path = str(tmp_path / f"{member}.npz")
    np.savez(path, **arrays)
    with pytest.raises(UsageError, match=rf"its array `{member}` cannot be read.*never unpickled"):
        local_data.load_local(path)


@pytest.mark.parametrize("side", [40, 50])  # PIL's warning form (>limit) and error form (>2x)
def test_a_decompression_bomb_is_refused_naming_the_file_and_its_size(tmp_path, monkeypatch, side):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    folder = tmp_path / "photos"
    _folder(folder, 3)
    Image.new("L", (side, side)).save(folder / "bomb.png")
    message = rf"bomb.png: refused as a possible decompression bomb.*{side * side} pixels"
    with pytest.raises(ValueError, match=message):
        read_image(str(folder / "bomb.png"))
    with pytest.raises(UsageError, match=message):
        local_data.load_local(str(folder), image_size=28)
    from keras_vae.cli import serve

    with pytest.raises(ValueError, match=message):
        serve.read_images([str(folder / "bomb.png")])


def _sideways_photo(path):
    """A JPEG stored landscape (20x30) with EXIF orientation 8, as a phone held
    upright writes it: viewers turn it 90 degrees, to portrait (30x20)."""
    stored = np.zeros((20, 30), np.uint8)
    stored[:, -1] = 255
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(stored).save(path, exif=exif.tobytes(), quality=100)


def test_exif_orientation_is_applied_through_every_reader(tmp_path):
    folder = tmp_path / "photos"
    os.makedirs(folder)
    for i in range(3):
        _sideways_photo(folder / f"{i}.jpg")
    with Image.open(folder / "0.jpg") as image:
        expected = np.asarray(image.transpose(Image.Transpose.ROTATE_90))[..., None]
    direct = read_image(str(folder / "0.jpg"))
    assert direct.shape == (30, 20, 1)  # upright: portrait
    np.testing.assert_array_equal(direct, expected)
    splits, _ = local_data.load_local(str(folder), test_fraction=0.34)
    assert {x.shape[1:] for x, _ in splits.values()} == {(30, 20, 1)}
    from keras_vae.cli import serve

    assert serve.read_images([str(folder / "1.jpg")]).shape == (1, 30, 20, 1)


# --- 4. K -------------------------------------------------------------------


def test_an_absurd_k_is_refused_with_its_cost_and_a_sane_one_is_estimated(capsys):
    with pytest.raises(UsageError, match=r"<= 100,000.*1,000,000,000.*decoder passes, about"):
        TrainConfig(iw_samples=10**9)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["evaluate", "--model", "run", "--iw-samples", str(10**9)])
    assert stopped.value.code == 2
    assert "it would cost 1.0e+12 decoder passes" in capsys.readouterr().err
    from keras_vae import evaluation
    from keras_vae.vae import VAE

    images = np.zeros((3, 28, 28, 1), np.float32)
    evaluation.evaluate(VAE(latent_dim=2, seed=0), images, iw_samples=7, verbose=1)
    assert "Estimated: K=7 on 3 images, 2.1e+01 decoder passes, about" in capsys.readouterr().out


# --- 7, 8, 12: files that must not load ----------------------------------


def _unsafe_keras_files(tmp_path):
    inputs = keras.Input((3,))
    lam = str(tmp_path / "lambda.keras")
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(lam)
    dense = str(tmp_path / "dense.keras")
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(dense)
    with zipfile.ZipFile(dense) as z:
        members = {n: z.read(n) for n in z.namelist()}
    paths = {"lambda": lam}
    for module, name in [("os", "system"), ("builtins", "exec")]:
        config = json.loads(members["config.json"])
        config.update(module=module, class_name=name, registered_name=name)
        path = str(tmp_path / f"{name}.keras")
        with zipfile.ZipFile(path, "w") as z:
            for member, body in members.items():
                z.writestr(member, json.dumps(config) if member == "config.json" else body)
        paths[name] = path
    return paths


def test_unsafe_keras_files_are_refused_in_one_line_by_every_command(tmp_path, capsys):
    for kind, path in _unsafe_keras_files(tmp_path).items():
        for command in (
            ["generate", "--model", path, "--grid", str(tmp_path / "g.png")],
            ["export", "--model", path, "--no-tflite"],
        ):
            assert cli.main(command) == 2, (kind, command)
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"error: {path} was not loaded: it "), err
            assert ("holds code" if kind == "lambda" else f"({kind})") in err[0]
        run = tmp_path / f"run-{kind}"
        os.makedirs(run)
        shutil.copyfile(path, run / "model.keras")
        (run / "config.json").write_text(TrainConfig().to_json())
        assert cli.main(["evaluate", "--model", str(run), "--iw-samples", "1"]) == 2
        assert "was not loaded" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_a_damaged_or_nan_gmm_sampler_is_refused_with_the_way_to_refit(tmp_path):
    good = samplers.GaussianMixtureSampler([0.5, 0.5], np.zeros((2, 2)), np.stack([np.eye(2)] * 2))
    path = str(tmp_path / "gmm_sampler.npz")
    good.save(path)
    whole = open(path, "rb").read()
    open(path, "wb").write(whole[: len(whole) // 2])
    with pytest.raises(UsageError, match=r"not a readable GMM sampler.*fits it again"):
        samplers.GaussianMixtureSampler.load(path)
    np.savez(path, weights=[0.5, 0.5], means=[[0, np.nan], [0, 0]], covariances=good.covariances)
    with pytest.raises(UsageError, match=r"its means hold NaN or infinity.*fits it again"):
        samplers.GaussianMixtureSampler.load(path)


# --- 9, 16: interrupted training --------------------------------------------


def _history_rows(run):
    with open(os.path.join(run, runs.HISTORY_FILE)) as f:
        return [line.split(",", 1)[0] for line in f.read().splitlines()[1:]]


def _backed_up(backup) -> int:
    try:
        return runs.check_backup(backup)
    except UsageError:  # caught half-written: not yet
        return 0


@pytest.mark.slow
def test_ctrl_c_during_training_exits_130_with_the_resume_command(small_run, tmp_path):
    folder, _, _ = small_run
    out = str(tmp_path / "run")
    args = ["train", "--dataset", folder, *FAST, "--epochs", "1000", "--no-export"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "keras_vae", *args, "--output-dir", out],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    backup = os.path.join(out, runs.BACKUP_DIR)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if _backed_up(backup) >= 1:  # an epoch is done and backed up
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("Stopped (Ctrl-C). The run stopped;")
    assert last.endswith(f"Resume it with: keras-vae train --resume --output-dir {out}")
    assert runs.check_backup(backup) >= 1  # what --resume goes on from


@pytest.mark.slow
def test_a_history_row_past_the_backup_is_dropped_on_resume(small_run, tmp_path):
    """A kill after CSVLogger's row and before the backup: the resumed run
    writes that epoch again, once."""
    _, run, done = small_run
    assert done.returncode == 0
    out = str(tmp_path / "run")
    shutil.copytree(run, out)
    with open(os.path.join(out, runs.HISTORY_FILE), "a") as f:
        f.write("1,0.1,500.0,499.9,0.1,500.0,499.9\n")  # epoch 2's row, its backup never written
    resumed = _command("train", "--resume", "--output-dir", out, "--epochs", "2", "--no-export")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "dropped 1 row(s) past the backup's 1 epoch(s)" in resumed.stdout
    assert _history_rows(out) == ["0", "1"]


# --- 10, 15: full disks and kills leave no debris ---------------------------


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KB tmpfs: writing a preset there runs out of space."""
    mount = tmp_path / "full"
    os.makedirs(mount)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)])
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield str(mount)
    subprocess.run(["umount", str(mount)])


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["float16"])  # float16 writes both weights files
def test_a_full_disk_under_save_preset_exits_2_and_leaves_nothing(small_run, full_disk, weights):
    _, run, _ = small_run
    target = os.path.join(full_disk, "preset")
    args = ["evaluate", "--model", run, "--save-preset", target, "--preset-weights", weights]
    done = _command(*args)
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "No space left on the device" in done.stderr.strip().splitlines()[-1]
    assert os.listdir(full_disk) == []


@pytest.mark.slow
def test_a_kill_during_generate_leaves_no_target_and_the_next_run_cleans_up(small_run, tmp_path):
    _, run, _ = small_run
    target = tmp_path / "new"
    proc = subprocess.Popen(
        [sys.executable, "-m", "keras_vae", "generate", "--model", run]
        + ["--count", "20000", "--out", str(target)],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    staging = []
    while time.monotonic() < deadline and proc.poll() is None:
        staging = [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-new-")]
        if staging and any(staging[0].iterdir()):  # the first PNGs are in
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert staging and staging[0].is_dir() and not target.exists()
    done = _command("generate", "--model", run, "--count", "3", "--out", str(target))
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in target.iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_a_live_writers_staging_folder_is_left_alone(tmp_path):
    from keras_vae import files

    live = tmp_path / f".tmp-out-{os.getppid()}-abc"
    dead = tmp_path / ".tmp-out-999999999-abc"
    live.mkdir()
    dead.mkdir()
    assert files.remove_stale_staging(str(tmp_path), ".tmp-out-") == [dead.name]
    assert live.is_dir() and not dead.exists()


# --- 17, 18, 19: messages that name the problem ----------------------------


def test_a_bare_preset_name_is_the_preset_and_a_path_is_a_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    name = presets.available()[0]
    os.makedirs(name)  # an empty folder of the same name
    source = sources.open_source(name)
    assert source.preset_dir == os.path.join(presets.PRESETS_DIR, name)
    assert f"pass ./{name}" in capsys.readouterr().out
    with pytest.raises(UsageError, match="A bare name is a shipped preset"):
        sources.open_source(f".{os.sep}{name}")


@pytest.mark.slow
def test_a_divergence_names_the_flags_out_of_their_usual_range(fashion_mnist_dir, tmp_path, capsys):
    out = str(tmp_path / "run")
    args = ["--train-split", "train[:256]", "--test-split", "test[:64]", "--beta", "1e30"]
    assert cli.main(["train", *args, "--epochs", "1", "--no-export", "--output-dir", out]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Training diverged" in last and "--beta 1e+30 (usually 0 to 100)" in last
    assert "--learning-rate" not in last


def test_serve_output_into_a_missing_folder_names_the_folder(tmp_path, capsys):
    from keras_vae.cli import serve

    missing = tmp_path / "no" / "such"
    out = str(missing / "o.npz")
    assert serve.main(["run", "model.tflite", "--input", "count=2", "--output", out]) == 2
    err = capsys.readouterr().err
    assert f"the folder {missing} does not exist" in err and ".tmp" not in err
