"""Fuzz `--dataset PATH`: generated folders and `.npz` files through the one reader.

    python benchmarks/fuzz_datasets.py [--cases 1000] [--seed 0]

Each case is a folder (valid images of random modes and sizes, random bytes,
truncated and empty files, class folders, train/ and test/, links, loops) or
an `.npz` (random keys, dtypes, shapes, labels, pickled members, truncated
archives), read by `keras_vae.local_data.load_local` as `keras-vae train`
reads it before TensorFlow loads. A case is **refused** (a `UsageError`),
**answered** (the arrays are checked: uint8 of rank 4, one label per image,
a class name for every label), a **traceback** (any other exception), a
**hang** (over 20 s) or a **wrong answer** (an answer that fails the checks).
Prints the counts, the CPU and the time; exits 1 unless there are 0
tracebacks, 0 hangs and 0 wrong answers.
"""

import argparse
import io
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_vae import local_data  # noqa: E402
from keras_vae.errors import UsageError  # noqa: E402

MODES = ["L", "RGB", "RGBA", "P", "1", "LA", "I;16", "I", "F", "CMYK"]
EXTENSIONS = [".png", ".jpg", ".bmp", ".gif", ".txt", ".png"]


class Hang(Exception):
    pass


def _image_bytes(rng, dirty: bool) -> bytes:
    mode = MODES[rng.integers(len(MODES) if dirty else 5)]
    size = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
    image = Image.new(mode, size)
    if mode in ("L", "RGB", "RGBA", "P"):
        channels = len(mode) if mode != "P" else 1
        pixels = rng.integers(0, 256, (size[1], size[0], channels)).astype(np.uint8)
        image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    buffer = io.BytesIO()
    fmt = ["PNG", "JPEG", "BMP", "GIF"][rng.integers(4)]
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):
        image.convert("RGB").save(buffer, format="PNG")
    data = buffer.getvalue()
    kind = rng.integers(10) if dirty else 9
    if kind == 0:
        return data[: int(rng.integers(0, len(data)))]  # truncated
    if kind == 1:
        return rng.integers(0, 256, int(rng.integers(0, 200))).astype(np.uint8).tobytes()
    if kind == 2:
        return b""
    return data


def make_folder(root, rng):
    os.makedirs(root)
    dirty = rng.random() < 0.5  # half the folders hold only readable images
    layout = rng.integers(4)
    folders = [""]
    if layout == 1:  # class folders
        folders = [f"class{i}" for i in range(int(rng.integers(1, 4)))]
    elif layout == 2:  # train/ and test/
        classes = [f"c{i}" for i in range(int(rng.integers(0, 3)))] or [""]
        folders = [os.path.join(split, c) for split in ("train", "test") for c in classes]
    elif layout == 3:
        folders = ["", "a/b/c", "a"]
    for folder in folders:
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        for i in range(int(rng.integers(0, 6))):
            ext = EXTENSIONS[rng.integers(len(EXTENSIONS))]
            with open(os.path.join(root, folder, f"{i}{ext}"), "wb") as f:
                f.write(_image_bytes(rng, dirty))
    if rng.random() < 0.2:  # a link loop, or a folder linked twice
        os.symlink(root, os.path.join(root, folders[-1], "loop"))
    if rng.random() < 0.1:
        os.symlink(os.path.join(root, folders[0]), os.path.join(root, "twice"))
    return root


def make_npz(path, rng):
    n = int(rng.integers(0, 12))
    dtype = [np.uint8, np.uint8, np.uint8, np.uint8, np.float32, np.int64][rng.integers(6)]
    shape = [(n, 8, 8, 1), (n, 8, 8), (n, 8, 8, 3), (n, 8, 8, 2), (n, 8), (8, 8, 4)][
        rng.integers(6)
    ]
    arrays = {["images", "x", "x_train", "pixels"][rng.integers(4)]: np.zeros(shape, dtype)}
    if "x_train" in arrays and rng.random() < 0.8:
        arrays["x_test"] = np.zeros(shape, dtype)
    kind = rng.integers(6)
    labels = {
        0: None,
        1: rng.integers(0, 5, n),
        2: rng.integers(-3, 3, n),
        3: np.array([2**40] * n),
        4: np.array([{}] * n, dtype=object),
        5: rng.integers(0, 3, max(n - 1, 0)),
    }[kind]
    if labels is not None:
        arrays["labels" if "images" in arrays else "y"] = labels
        if "x_train" in arrays:
            arrays["y_train"] = labels
            arrays["y_test"] = labels
    if rng.random() < 0.2:
        arrays["class_names"] = np.array(["a", "b"][: int(rng.integers(0, 3))])
    np.savez(path, **arrays)
    if rng.random() < 0.1:
        data = open(path, "rb").read()
        open(path, "wb").write(data[: int(rng.integers(0, len(data)))])
    return path


def check_answer(splits, class_names) -> str | None:
    """What is wrong with an answer, or None."""
    if set(splits) != {"train", "test"}:
        return f"splits {sorted(splits)}"
    for name, (images, labels) in splits.items():
        if images.dtype != np.uint8 or images.ndim != 4 or not len(images):
            return f"{name}: {images.dtype} {images.shape}"
        if images.shape[-1] not in (1, 3):
            return f"{name}: {images.shape[-1]} channels"
        if labels is not None:
            if len(labels) != len(images):
                return f"{name}: {len(labels)} labels for {len(images)} images"
            if labels.min() < 0 or labels.max() >= max(len(class_names), 1):
                return f"{name}: labels {labels.min()}..{labels.max()}, {len(class_names)} classes"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    counts = dict.fromkeys(("refused", "answered", "traceback", "hang", "wrong"), 0)
    examples = {}

    def alarm(*_):
        raise Hang()

    signal.signal(signal.SIGALRM, alarm)
    start = time.perf_counter()
    work = tempfile.mkdtemp(prefix="fuzz_datasets_")
    try:
        for case in range(args.cases):
            target = os.path.join(work, f"case{case}")
            path = (
                make_folder(target, rng) if rng.random() < 0.6 else make_npz(target + ".npz", rng)
            )
            image_size = int(rng.integers(4, 16)) if rng.random() < 0.5 else None
            signal.alarm(20)
            try:
                splits, names = local_data.load_local(path, image_size=image_size)
                wrong = check_answer(splits, names)
                outcome = "wrong" if wrong else "answered"
                if wrong:
                    examples.setdefault("wrong", f"{path}: {wrong}")
            except UsageError:
                outcome = "refused"
            except Hang:
                outcome = "hang"
                examples.setdefault("hang", path)
            except Exception:
                outcome = "traceback"
                examples.setdefault("traceback", f"{path}: {traceback.format_exc()[-800:]}")
            finally:
                signal.alarm(0)
            counts[outcome] += 1
            if os.path.isdir(target):
                shutil.rmtree(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cpu = platform.processor() or "unknown"
    with open("/proc/cpuinfo") as f:
        cpu = next(
            (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu
        )
    print(f"CPU: {cpu}; {args.cases} cases, seed {args.seed}, {time.perf_counter() - start:.0f} s")
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    for kind, text in examples.items():
        print(f"first {kind}: {text}")
    return 0 if counts["traceback"] == counts["hang"] == counts["wrong"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
