"""Image folders of 20k and 200k CelebA-sized JPEGs: prepare, start-up, memory, input speed.

    python benchmarks/folder_scale.py --sizes 20000 200000 --root /tmp/folders
        [--image-size 64] [--skip-prepare-1]

For each N it makes (once, kept under `--root`) a folder of N synthetic
178x218 RGB JPEGs in 10 class subfolders, then measures, each in a fresh
process:
1. `keras-vae prepare DIR --image-size 64 --processes P` for P = 1 and 2
   (each into an empty `--data-dir`): wall seconds;
2. a short `keras-vae train` on the prepared folder (`--epochs 1`, 40 steps of
   the default model at batch 128): wall seconds from the command's start to
   its first training step, the peak RSS of the whole run, and the training
   step's examples/s (steps 10-40);
3. the input pipeline alone (`data.load` + `data.pipeline` as `train` builds
   them, shuffled, batch 128): examples/s over 20,000 images after a warm-up.
Prints one JSON line per measurement and a Markdown table at the end.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from cli_startup import cpu_model  # noqa: E402

CLASSES = 10
STEPS = 40
BATCH = 128


def _make_one(args):
    path, seed = args
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:218, 0:178]
    colour = rng.integers(0, 256, (3,))
    centre = rng.integers(40, 140, (2,))
    radius = rng.integers(20, 60)
    image = np.empty((218, 178, 3), np.uint8)
    for c in range(3):
        image[..., c] = (x * (c + 1) + y * (3 - c)) % 256 // 2 + colour[c] // 2
    disc = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 < radius**2
    image[disc] = 255 - image[disc]
    Image.fromarray(image).save(path, quality=90)


def make_folder(root: str, n: int) -> str:
    folder = os.path.join(root, f"jpegs_{n}")
    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    tasks = []
    for i in range(n):
        sub = os.path.join(folder, f"class_{i % CLASSES}")
        tasks.append((os.path.join(sub, f"{i:06d}.jpg"), i))
    for c in range(CLASSES):
        os.makedirs(os.path.join(folder, f"class_{c}"))
    start = time.perf_counter()
    with multiprocessing.Pool(os.cpu_count()) as pool:
        for _ in pool.imap_unordered(_make_one, tasks, chunksize=256):
            pass
    open(done, "w").close()
    print(f"made {n} JPEGs in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return folder


def run(command, env=None):
    """Wall seconds and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds, done


TRAIN_PROBE = r"""
import json, os, sys, time
BATCH = %d
start = float(os.environ["PROBE_START"])
import keras
from keras_vae import training
from keras_vae.cli import train as cli_train

marks = {}

class Probe(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        marks.setdefault("first_step", time.time() - start)

    def on_train_batch_end(self, batch, logs=None):
        steps = int(self.model.optimizer.iterations)
        if steps >= 10 and "t10" not in marks:
            marks["t10"], marks["s10"] = time.perf_counter(), steps
        marks["tN"], marks["sN"] = time.perf_counter(), steps

original = training._callbacks
training._callbacks = lambda *a, **k: [*original(*a, **k), Probe()]
code = cli_train.main(sys.argv[1:])
rate = (marks["sN"] - marks["s10"]) * BATCH / (marks["tN"] - marks["t10"])
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024  # not ru_maxrss
print(json.dumps({"code": code, "first_step_seconds": round(marks["first_step"], 2),
                  "peak_rss_mb": round(peak), "model_examples_per_second": round(rate)}))
""".replace("%d", str(BATCH))

PIPELINE_PROBE = r"""
import json, sys, time
BATCH = %d
from keras_vae import data
folder, data_dir, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
ds, info = data.load(
    folder, "train", data_dir=data_dir, image_size=size, shuffle_files=True, seed=0
)
batches = data.pipeline(ds, BATCH, image_size=size, shuffle=True, cache=False, repeat=True)
it = iter(batches)
for _ in range(20):
    next(it)
start, count = time.perf_counter(), 0
while count < 20000:
    count += int(next(it).shape[0])
print(json.dumps({"pipeline_examples_per_second": round(count / (time.perf_counter() - start))}))
""".replace("%d", str(BATCH))


def training_probe(folder, data_dir, size):
    out = tempfile.mkdtemp(prefix="folder_scale_run_")
    env = dict(os.environ, PROBE_START=repr(time.time()), TF_CPP_MIN_LOG_LEVEL="3")
    try:
        _, done = run(
            [
                sys.executable,
                "-c",
                TRAIN_PROBE,
                "--dataset",
                folder,
                "--data-dir",
                data_dir,
                "--image-size",
                str(size),
                "--epochs",
                "1",
                "--train-split",
                f"train[:{STEPS * BATCH}]",
                "--batch-size",
                str(BATCH),
                "--output-dir",
                os.path.join(out, "run"),
            ],  # fmt: skip
            env,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[20000, 200000])
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "folder_scale"))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--skip-prepare-1", action="store_true", help="only 2 processes")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep a dataset prepared by an earlier run: no prepare timings",
    )
    args = parser.parse_args()
    os.makedirs(args.root, exist_ok=True)
    rows = []
    for n in args.sizes:
        folder = make_folder(args.root, n)
        row = {"images": n, "cpu": cpu_model()}
        data_dir = None
        for processes in (2,) if args.skip_prepare_1 else (1, 2):
            data_dir = os.path.join(args.root, f"prepared_{n}_{processes}")
            if args.reuse and os.path.isdir(data_dir):
                continue
            shutil.rmtree(data_dir, ignore_errors=True)
            seconds, _ = run(
                [
                    sys.executable,
                    "-m",
                    "keras_vae.cli",
                    "prepare",
                    folder,
                    "--image-size",
                    str(args.image_size),
                    "--processes",
                    str(processes),
                    "--data-dir",
                    data_dir,
                ]  # fmt: skip
            )
            row[f"prepare_{processes}_seconds"] = round(seconds, 1)
            print(json.dumps({"images": n, "processes": processes, "seconds": seconds}), flush=True)
        row.update(training_probe(folder, data_dir, args.image_size))
        _, done = run(
            [sys.executable, "-c", PIPELINE_PROBE, folder, data_dir, str(args.image_size)]
        )
        row.update(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"\n--image-size {args.image_size}, {rows[0]['cpu']}\n")
    print(
        "| images | prepare, 1 process (s) | prepare, 2 processes (s) | speed-up "
        "| start to first step (s) | peak RSS (MB) | pipeline ex/s | model ex/s | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        one, two = r.get("prepare_1_seconds"), r.get("prepare_2_seconds", "-")
        speedup = f"{one / two:.2f}x" if one and two != "-" else "-"
        ratio = r["pipeline_examples_per_second"] / r["model_examples_per_second"]
        print(
            f"| {r['images']:,} | {one or '-'} | {two} | {speedup} | {r['first_step_seconds']} "
            f"| {r['peak_rss_mb']:,} | {r['pipeline_examples_per_second']:,} "
            f"| {r['model_examples_per_second']:,} | {ratio:.1f}x |"
        )


if __name__ == "__main__":
    main()
