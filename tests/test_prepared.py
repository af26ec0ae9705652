"""Prepared folders: decoded once into a TFDS dataset, streamed, never stale, atomic."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO
from PIL import Image

from keras_vae import cli, data, local_data, prepared
from keras_vae.config import TrainConfig
from keras_vae.errors import UsageError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(prepared.CACHE_ENV, str(tmp_path / "cache"))
    prepared.forget()
    yield
    prepared.forget()


def _folder(root, n=24, classes=("cats", "dogs"), size=(20, 24), seed=0):
    """Class subfolders of PNG and JPEG images, a third of them grey."""
    rng = np.random.default_rng(seed)
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(n // len(classes)):
            pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            if i % 3 == 0:
                Image.fromarray(pixels[..., 0]).save(os.path.join(root, c, f"{i}.png"))
            else:
                Image.fromarray(pixels).save(os.path.join(root, c, f"{i}.jpg"))
    return str(root)


def _items(ds):
    return list(ds.as_numpy_iterator())


def _assert_same(streamed, in_memory):
    assert len(streamed) == len(in_memory)
    for a, b in zip(streamed, in_memory, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize(
    "shape, index, label", [((2, 3, 1), 0, None), ((17, 5, 3), 300, 7), ((128, 1, 1), 2**40, 0)]
)
def test_records_are_the_ones_tfds_writes(shape, index, label):
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    example = {"image": image, "index": index}
    if label is not None:
        example["label"] = label
    features = prepared.features(labelled=label is not None)
    record = prepared.serialize(image, index, label)
    theirs = features.serialize_example(example)
    assert tf.train.Example.FromString(record) == tf.train.Example.FromString(theirs)
    back = features.deserialize_example_np(record)
    np.testing.assert_array_equal(back["image"], image)
    assert back["index"] == index


@pytest.mark.parametrize("image_size, channels", [(16, None), (None, 1), (12, 3)])
def test_prepared_and_in_memory_give_the_same_images_labels_and_splits(
    tmp_path, image_size, channels, monkeypatch
):
    monkeypatch.setattr(prepared, "POOL_MIN_IMAGES", 0)  # decoding processes, each its shards
    if image_size is None:  # one size: no resize needed
        folder = _folder(tmp_path / "photos")
    else:
        folder = _folder(tmp_path / "photos")
        _folder(tmp_path / "photos", n=6, size=(31, 17), seed=1)  # other sizes, resized
    kwargs = dict(image_size=image_size, channels=channels, test_fraction=0.25)
    splits, names = local_data.load_local(folder, image_size, channels, 0.25)
    options = prepared.Options(folder, image_size, channels, 0.25)
    found = prepared.ensure(options, processes=2, any_size=True)
    assert found["class_names"] == names == ["cats", "dogs"]
    assert found["splits"] == {k: len(v[0]) for k, v in splits.items()}
    for split in ("train", "test", "train[:5]", "test[1:]+train[-2:]"):
        streamed, info = data.load(folder, split, **kwargs)
        assert info.streamed and info.source == options.slot
        reference = data._slice_arrays(split, splits, folder, with_index=True)
        _assert_same(_items(streamed), _items(reference))
        assert info.image_shape == tuple(reference.element_spec["image"].shape)
    # Shuffled shards: the same examples, each once.
    shuffled, _ = data.load(folder, "train", shuffle_files=True, seed=3, **kwargs)
    assert sorted(e["index"] for e in _items(shuffled)) == list(range(len(splits["train"][0])))


def test_train_test_subfolders_and_npz_prepare_as_they_read(tmp_path):
    for split, n in (("train", 8), ("test", 4)):
        _folder(tmp_path / "split" / split, n=n, seed=n)
    folder = str(tmp_path / "split")
    arrays = {
        "x_train": np.random.default_rng(0).integers(0, 255, (9, 8, 8), dtype=np.uint8),
        "x_test": np.random.default_rng(1).integers(0, 255, (3, 8, 8), dtype=np.uint8),
        "y_train": np.arange(9) % 3,
        "y_test": np.arange(3),
    }
    npz = str(tmp_path / "arrays.npz")
    np.savez(npz, **arrays)
    for source in (folder, npz):
        splits, _ = local_data.load_local(source)
        prepared.ensure(prepared.Options(source), processes=1, any_size=True)
        for split in ("train", "test"):
            streamed, info = data.load(source, split)
            assert info.streamed
            _assert_same(
                _items(streamed), _items(data._slice_arrays(split, splits, source, with_index=True))
            )


def test_a_changed_folder_is_prepared_again_and_the_stale_data_never_read(tmp_path, capsys):
    folder = _folder(tmp_path / "photos", n=12, classes=("a", "b"))
    options = prepared.Options(folder, 16)
    prepared.ensure(options, processes=1, any_size=True)
    before = _items(data.load(folder, "train+test", image_size=16)[0])
    assert len(before) == 12
    # One file added, one replaced (same name, new pixels), one folder later.
    Image.new("RGB", (20, 24), (255, 0, 0)).save(os.path.join(folder, "a", "new.png"))
    replaced = os.path.join(folder, "b", "1.jpg")
    Image.new("RGB", (20, 24), (0, 0, 255)).save(replaced)
    os.utime(replaced, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime, surely
    prepared.forget()  # a new command
    capsys.readouterr()
    after, _ = data.load(folder, "train+test", image_size=16)
    message = capsys.readouterr().out
    assert "changed since it was prepared (1 added, 1 changed, 0 removed)" in message
    images = np.stack([e["image"] for e in _items(after)])
    assert len(images) == 13
    blue = np.abs(images.astype(int) - [0, 0, 255]).max(axis=(1, 2, 3)) < 20  # JPEG
    red = np.all(images == [255, 0, 0], axis=-1).all(axis=(1, 2))
    assert red.sum() == 1 and blue.sum() == 1  # no stale image where the new one belongs
    assert prepared.is_fresh(options)


def test_a_prepare_killed_midway_leaves_the_next_command_correct(tmp_path):
    folder = _folder(tmp_path / "photos", n=3000, classes=("a", "b"), size=(40, 40))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}
    command = [sys.executable, "-m", "keras_vae.cli", "prepare", folder, "--image-size", "8"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cache = tmp_path / "cache"
    deadline = time.time() + 120
    # Killed once its staging folder holds the first shard.
    while time.time() < deadline and proc.poll() is None:
        try:
            if any(".tfrecord-" in p.name for p in cache.rglob("*")):
                break
        except FileNotFoundError:  # a folder went while it was listed
            pass
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    options = prepared.Options(folder, 8)
    assert prepared.manifest(options) is None and not os.path.isdir(options.slot)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "interrupted: starting it again" in done.stdout
    assert not [p for p in os.listdir(cache) if p.startswith(".tmp-")]  # the staging folder went
    splits, _ = local_data.load_local(folder, 8)
    for split in ("train", "test"):
        _assert_same(
            _items(data.load(folder, split, image_size=8)[0]),
            _items(data._slice_arrays(split, splits, folder, with_index=True)),
        )


def test_a_corrupt_image_names_its_file_and_nothing_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(prepared, "POOL_MIN_IMAGES", 0)
    folder = _folder(tmp_path / "photos", n=10)
    bad = os.path.join(folder, "cats", "broken.jpg")
    with open(bad, "wb") as f:
        f.write(b"\xff\xd8 not a jpeg")
    options = prepared.Options(folder)
    for processes in (1, 2):
        with pytest.raises(UsageError, match=r"broken\.jpg.*Remove or replace that file"):
            prepared.ensure(options, processes=processes, any_size=True)
        assert not os.path.exists(options.slot)
        assert not [p for p in os.listdir(tmp_path / "cache") if p.startswith(".tmp-")]


def test_no_room_on_disk_is_refused_before_writing(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "photos", n=10)
    usage = prepared.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(prepared.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(UsageError, match="Not enough disk space.*--data-dir"):
        prepared.ensure(prepared.Options(folder), any_size=True)
    assert not [p for p in os.listdir(tmp_path / "cache") if not p.endswith(".lock")]


def test_a_full_disk_midway_keeps_nothing(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "photos", n=10)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepared.files, "write_json", full)  # after TFDS wrote its shards
    with pytest.raises(UsageError, match="Not enough disk space"):
        prepared.ensure(prepared.Options(folder), processes=1, any_size=True)
    assert not [p for p in os.listdir(tmp_path / "cache") if not p.endswith(".lock")]


def test_small_folders_stay_in_memory_and_large_ones_are_prepared(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "photos", n=12)
    _, info = data.load(folder, "train")
    assert not info.streamed and not os.path.isdir(prepared.Options(folder).slot)
    monkeypatch.setattr(prepared, "STREAM_MIN_IMAGES", 12)
    prepared.forget()
    _, info = data.load(folder, "train")
    assert info.streamed and prepared.is_fresh(prepared.Options(folder))


def test_prepare_command(tmp_path, capsys):
    folder = _folder(tmp_path / "photos", n=12)
    assert cli.main(["prepare", folder, "--image-size", "8", "--processes", "1"]) == 0
    out = capsys.readouterr().out
    assert "Prepared 12 images (train 11, test 1)" in out
    assert cli.main(["prepare", folder, "--image-size", "8"]) == 0
    assert "up to date (train 11, test 1 images)" in capsys.readouterr().out
    assert cli.main(["prepare", str(tmp_path / "nothing")]) == 2
    assert "no such folder or file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["prepare", folder, "--channels", "2"])
    assert "invalid choice: 2" in capsys.readouterr().err


def test_a_training_run_streams_a_prepared_folder_without_caching_it(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "photos", n=40, size=(28, 28))
    prepared.ensure(prepared.Options(folder, 28), any_size=True)
    caches = []
    pipeline = data.pipeline
    monkeypatch.setattr(
        data, "pipeline", lambda *a, **k: caches.append(k.get("cache", True)) or pipeline(*a, **k)
    )
    config = TrainConfig(dataset=folder, image_size=28, batch_size=8, epochs=1)
    datasets = data.load_datasets(config)
    assert datasets.info.streamed and datasets.steps_per_epoch == 5  # 36 training images
    assert caches and not any(caches)  # nothing held in memory
    batch = next(iter(datasets.train))
    assert batch.shape == (8, 28, 28, 3) and float(batch.numpy().max()) <= 1.0


def test_each_worker_reads_its_own_files(tmp_path, monkeypatch):
    monkeypatch.setattr(prepared, "SHARD_IMAGES", 10)
    folder = _folder(tmp_path / "photos", n=60, size=(8, 8))
    options = prepared.Options(folder)
    found = prepared.ensure(options, any_size=True)
    builder = data.tfds.builder_from_directory(options.tfds_dir)
    instructions = builder.info.splits["train[5:]"].file_instructions  # 49 images
    everything = [
        (name, skip + k)
        for name, skip, take in data.prepared_share(instructions, 1, 0)
        for k in range(take)
    ]
    assert len(everything) == 49 and len({name for name, _ in everything}) == 6  # 9 a shard
    shares = [data.prepared_share(instructions, 3, i) for i in range(3)]
    read = [[(n, skip + k) for n, skip, take in share for k in range(take)] for share in shares]
    assert [len(r) for r in read] == [16, 16, 16]  # equal steps; one image left out
    assert sum(read, []) == everything[:48]  # in order, disjoint, each once
    for share in shares:  # a third of the files each, give or take a boundary
        assert len({name for name, _, _ in share}) <= 3
    streamed, _ = data.load(folder, "train[5:]", share=(3, 1))
    ids = [int(e["index"]) for e in _items(streamed)]
    assert ids == list(range(5 + 16, 5 + 32)) and found["splits"]["train"] == 54


MEMORY_RUN = r"""
import json, sys
from keras_vae import cli, data, prepared
data.SHUFFLE_BUFFER_BYTES = 16 << 20  # the bound, lowered so that a small folder exceeds it
if sys.argv[1] == "in-memory":
    prepared.STREAM_MIN_IMAGES = 10**9
code = cli.main([
    "train", "--dataset", sys.argv[2], "--output-dir", sys.argv[3], "--epochs", "1",
    "--architecture", "gated_mlp", "--hidden-units", "8", "--latent-dim", "2",
    "--batch-size", "100", "--no-export", "--iw-samples", "0",
])
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a
# large pytest worker would report the worker's own peak.
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
print("PEAK", json.dumps({"code": code, "mb": peak}))
"""


@pytest.mark.slow
def test_a_folder_larger_than_the_memory_cap_trains_under_it(tmp_path):
    """A whole epoch of a prepared folder holds a bounded part of it: the run
    stays under a cap (the in-memory run's peak less the folder's decoded
    size) that the same folder read into memory exceeds."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    count, shape = 8000, (64, 64, 3)
    for i in range(count):
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        image.save(folder / f"{i:04d}.png", compress_level=0)
    decoded_mb = count * int(np.prod(shape)) / 2**20  # 94 MB
    prepared.ensure(prepared.Options(str(folder)), processes=2)
    runs = {  # the two at once: each measures its own peak
        mode: subprocess.Popen(
            [sys.executable, "-c", MEMORY_RUN, mode, str(folder), str(tmp_path / mode)],
            env={**os.environ, prepared.CACHE_ENV: str(cache), "TF_CPP_MIN_LOG_LEVEL": "3"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode, cache in (("streamed", tmp_path / "cache"), ("in-memory", tmp_path / "empty"))
    }
    peaks = {}
    for mode, run in runs.items():
        stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stdout[-3000:] + stderr[-3000:]
        result = json.loads(stdout.split("PEAK ", 1)[1].splitlines()[0])
        assert result["code"] == 0
        assert "Prepared" not in stdout  # neither run prepares again
        peaks[mode] = result["mb"]
    cap = peaks["in-memory"] - decoded_mb
    print(f"peak RSS {peaks}, folder {decoded_mb:.0f} MB decoded")
    assert peaks["streamed"] < cap, (peaks, decoded_mb)


WORKER = r"""
import json, os, sys
import numpy as np, tensorflow as tf
from keras_vae import data, distribute
from keras_vae.config import TrainConfig
strategy = distribute.make_strategy("multi_worker")
config = TrainConfig(dataset=sys.argv[1], batch_size=10, seed=1)
datasets = data.load_datasets(config, strategy)
assert datasets.info.streamed
batches = iter(datasets.train)
epochs = []
for _ in range(2):
    seen = []
    for _ in range(datasets.steps_per_epoch):
        for images in strategy.experimental_local_results(next(batches)):
            pixels = np.round(images.numpy()[:, 0, :2, 0] * 255).astype(int)
            seen += (pixels[:, 0] + 256 * pixels[:, 1]).tolist()
    epochs.append(seen)
print("SEEN", json.dumps({"steps": datasets.steps_per_epoch, "epochs": epochs}))
"""


def test_two_loopback_workers_each_read_a_disjoint_share(tmp_path):
    from test_distribute import _env, _free_ports, _tf_config

    folder = tmp_path / "ids"
    folder.mkdir()
    for i in range(289):  # each image says its number in its first two pixels
        pixels = np.zeros((28, 28), np.uint8)
        pixels[0, 0], pixels[0, 1] = i % 256, i // 256
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    prepared.ensure(prepared.Options(str(folder)), any_size=True)
    ports = _free_ports(2)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(folder)],
            env=_env(TF_CONFIG=_tf_config(ports, i), KERAS_VAE_CACHE_DIR=str(tmp_path / "cache")),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    seen = [json.loads(o.split("SEEN ", 1)[1].splitlines()[0]) for o in outputs]
    train_ids = {
        int(e["image"][0, 0, 0]) + 256 * int(e["image"][0, 1, 0])
        for e in _items(data.load(str(folder), "train")[0])
    }
    # 260 training images (29 held out), 2 workers, 5 a worker per step.
    assert len(train_ids) == 260
    assert seen[0]["steps"] == seen[1]["steps"] == 260 // 2 // 5
    for epoch in range(2):
        a, b = set(seen[0]["epochs"][epoch]), set(seen[1]["epochs"][epoch])
        assert not a & b  # disjoint shares
        assert len(seen[0]["epochs"][epoch]) == len(a) and len(seen[1]["epochs"][epoch]) == len(b)
        assert a | b == train_ids  # together, every training example once
