"""Users' own images: a folder of image files or a `.npz`/`.npy` array file
-> uint8 splits and class names, with no TensorFlow.

`train.py` reads a `--dataset PATH` here before TensorFlow loads, so that bad
data (an empty folder, a corrupt image, a wrong dtype) fails in under a
second; `data.load` then builds its tf.data pipeline from the same cached
arrays.
"""

from __future__ import annotations

import functools
import os
import sys

import numpy as np
from PIL import Image

from keras_vae.config import check_dataset_path
from keras_vae.errors import UsageError
from keras_vae.images import read_image

# The files a folder dataset reads: keras.utils.image_dataset_from_directory's list.
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# A folder or array without its own test split holds out a fraction chosen
# with this fixed seed, so train, evaluate and visualize see the same split
# whatever `--seed` is.
SPLIT_SEED = 0
# Labels are class indices; a class costs a name here and an embedding row in
# a conditional model, so an absurd label is refused before anything is built.
MAX_CLASSES = 65_536


class _Progress:
    """A one-line count of the images read, on a terminal only (no Keras here)."""

    def __init__(self, total: int):
        self.total, self.shown = total, -1
        self.enabled = sys.stdout.isatty() and total >= 1000

    def update(self, done: int):
        percent = 100 * done // self.total
        if self.enabled and (percent != self.shown or done == self.total):
            self.shown = percent
            end = "\n" if done == self.total else ""
            print(f"\rReading images: {done}/{self.total}", end=end, flush=True)


def load_local(path, image_size=None, channels=None, test_fraction=0.1):
    """A folder of images or a `.npz`/`.npy` file -> uint8 splits and class names.

    - **A folder**: every `IMAGE_EXTENSIONS` file in any depth of
      subfolders, read by `export.images.read_image` (the reader of
      `serve_signature.py`: 16-bit, palette, 1-bit and alpha images by
      their PIL mode). Where every image sits in a first-level subfolder
      and there are two or more, those are the classes, named after the
      folders. `train/` and `test/` subfolders are the splits.
    - **A `.npz`**: `images` (or `x`) with optional integer `labels` (or
      `y`) and `class_names`; or `x_train`, `x_test` (+ `y_train`,
      `y_test`), as `keras.datasets` returns them. **A `.npy`**: images.
      uint8 pixels of rank 4 `(N, H, W, C)`, C = 1, 3 or 4, or rank 3
      `(N, H, W)` for grey.
    - Without its own test split, `test_fraction` of the images (at least
      one) is held out with `SPLIT_SEED`.
    - Channels follow the data (RGB if any image is RGB; alpha dropped), or
      `channels`. Images of mixed sizes need `image_size`.

    Returns:
        `({"train": (images, labels or None), "test": (...)}, class_names)`.

    Raises:
        UsageError: naming the path and the fix, for a missing path, an
            empty folder, a folder without images, an unreadable image, a
            bad array, mixed sizes without `image_size`, or too few images.
    """
    check_dataset_path(path)
    path = os.path.abspath(os.path.expanduser(path))
    stamp = os.stat(path).st_mtime_ns
    return _load_local(path, stamp, image_size, channels, float(test_fraction))


@functools.lru_cache(maxsize=2)  # one run reads its train, test and pictures from one parse
def _load_local(path, _stamp, image_size, channels, test_fraction):
    if os.path.isdir(path):
        splits, class_names = _read_folder(path, image_size)
    elif path.endswith((".npz", ".npy")):
        splits, class_names = _read_array_file(path)
    else:
        raise UsageError(
            f"--dataset {path}: not a folder, .npz or .npy file. Pass a folder of images "
            "(in any depth of subfolders) or a .npz/.npy file of uint8 images (N, H, W, C)."
        )
    if "test" not in splits:
        splits = _hold_out(path, *splits["all"], test_fraction)
    target = channels or (3 if any(x.shape[-1] >= 3 for x, _ in splits.values()) else 1)
    splits = {k: (_with_channels(x, target), y) for k, (x, y) in splits.items()}
    sizes = {x.shape[1:3] for x, _ in splits.values()}
    if len(sizes) > 1 and not image_size:
        raise UsageError(
            f"--dataset {path}: the splits have images of different sizes "
            f"{sorted(sizes)}; pass --image-size SIZE to resize them all to SIZE x SIZE."
        )
    return splits, class_names


def hold_out(path, n, fraction):
    """`(train, test)` index arrays of a split held out from `n` examples with `SPLIT_SEED`."""
    n_test = max(1, round(n * fraction))
    if n_test >= n:
        raise UsageError(
            f"--dataset {path}: {n} image(s) cannot be split into training and test "
            f"images with --test-fraction {fraction}; add images, or give the data "
            "train/ and test/ subfolders (x_train and x_test in a .npz)."
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    return order[n_test:], order[:n_test]


def _hold_out(path, images, labels, fraction):
    train, test = hold_out(path, len(images), fraction)
    pick = lambda index: None if labels is None else labels[index]  # noqa: E731
    return {"train": (images[train], pick(train)), "test": (images[test], pick(test))}


def _with_channels(images, channels):
    """uint8 (N, H, W, C) with C in 1, 3, 4 -> C = `channels` (alpha dropped)."""
    images = images[..., :3]
    if images.shape[-1] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    weights = np.array([0.2989, 0.587, 0.114])  # tf.image.rgb_to_grayscale's
    return np.round(images @ weights)[..., None].astype(np.uint8)


def plan_folder(root, test_fraction=0.1):
    """A folder's splits as files: `({"train": (files, labels), "test": ...}, class names)`.

    The same files, labels and order as `load_local` reads them into memory:
    `train/` and `test/` subfolders are the splits, or `test_fraction` is
    held out with `SPLIT_SEED`. Labels are an int64 array or None.
    """
    subfolders = {d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))}
    if {"train", "test"} <= subfolders:
        train_files, train_labels, names = list_images(os.path.join(root, "train"))
        test_files, test_labels, test_names = list_images(os.path.join(root, "test"))
        _check_same_classes(root, names, test_names)
        return {"train": (train_files, train_labels), "test": (test_files, test_labels)}, names
    files, labels, names = list_images(root)
    train, test = hold_out(root, len(files), test_fraction)
    splits = {}
    for split, index in (("train", train), ("test", test)):
        splits[split] = ([files[i] for i in index], None if labels is None else labels[index])
    return splits, names


def _check_same_classes(root, names, test_names):
    if test_names != names:
        raise UsageError(
            f"--dataset {root}: train/ has the classes {names} but test/ has "
            f"{test_names}; give both the same class subfolders."
        )


def _read_folder(root, image_size):
    subfolders = {d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))}
    if {"train", "test"} <= subfolders:
        train, names = _read_image_tree(os.path.join(root, "train"), image_size)
        test, test_names = _read_image_tree(os.path.join(root, "test"), image_size)
        _check_same_classes(root, names, test_names)
        return {"train": train, "test": test}, names
    images, names = _read_image_tree(root, image_size)
    return {"all": images}, names


def _walk_once(root):
    """`(folder, sorted file names)` of every folder under `root`, in order.

    Links to folders are followed, but each folder (by device and inode) is
    visited once: a link loop ends, and a folder reached through two links
    is read once, where it is first met.
    """
    seen = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        stat = os.stat(folder)
        key = (stat.st_dev, stat.st_ino)
        if key in seen:
            dirs[:] = []
            continue
        seen.add(key)
        dirs.sort()
        yield folder, sorted(names)


def list_images(root):
    """`(files, labels or None, class names)` of a folder's image files, in order.

    Every `IMAGE_EXTENSIONS` file in any depth of subfolders, sorted; where
    every one sits in a first-level subfolder and there are two or more,
    those are the classes. The one listing behind reading a folder into
    memory and preparing it (`keras_vae.prepared`).
    """
    files, others = [], 0
    for folder, names in _walk_once(root):
        for name in names:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.join(folder, name))
            elif not name.startswith("."):
                others += 1
    if not files:
        what = f"holds {others} file(s) but no images" if others else "is empty"
        raise UsageError(
            f"--dataset {root}: the folder {what}. Put image files "
            f"({', '.join(IMAGE_EXTENSIONS)}) in it or in its subfolders."
        )
    first_level = [os.path.relpath(f, root).split(os.sep) for f in files]
    classes = sorted({parts[0] for parts in first_level if len(parts) > 1})
    labelled = len(classes) > 1 and all(len(parts) > 1 for parts in first_level)
    if not labelled:
        return files, None, []
    index = {name: i for i, name in enumerate(classes)}
    return files, np.array([index[parts[0]] for parts in first_level], np.int64), classes


def decode(file, image_size=None, channels=None):
    """One listed file -> uint8 `(H, W, C)` as a dataset holds it.

    `read_image`'s pixels (C = 1 or 3), resized to `image_size` where given
    and the size differs, then converted to `channels` where given.

    Raises:
        UsageError: the file is not a readable image, naming it.
    """
    try:
        image = read_image(file)
    except ValueError as e:
        raise UsageError(f"--dataset: {e} Remove or replace that file.") from None
    if image_size and image.shape[:2] != (image_size, image_size):
        image = _resize(image, image_size)
    if channels:
        image = _with_channels(image[None], channels)[0]
    return image


def mixed_sizes_error(root, shapes: dict) -> UsageError:
    """The refusal of images of several sizes without `--image-size`.

    `shapes` maps each `(H, W)` met to the first file of that size."""
    examples = ", ".join(
        f"{h}x{w} ({os.path.relpath(f, root)})" for (h, w), f in list(shapes.items())[:3]
    )
    return UsageError(
        f"--dataset {root}: the images have {len(shapes)} different sizes, e.g. "
        f"{examples}. Pass --image-size SIZE to resize them all to SIZE x SIZE."
    )


def _read_image_tree(root, image_size):
    files, labels, classes = list_images(root)
    images, shapes = [], {}
    progress = _Progress(len(files))
    for i, file in enumerate(files):
        image = decode(file, image_size)
        shapes.setdefault(image.shape[:2], file)  # only checked without image_size
        images.append(image)
        progress.update(i + 1)
    if len(shapes) > 1 and not image_size:
        raise mixed_sizes_error(root, shapes)
    target = 3 if any(x.shape[-1] == 3 for x in images) else 1
    stacked = np.stack([_with_channels(x[None], target)[0] for x in images])
    return (stacked, labels), classes


def _resize(image, size):
    """uint8 (H, W, C) -> (size, size, C), bilinear with PIL's antialiasing."""
    channels = image.shape[-1]
    picture = Image.fromarray(image[..., 0] if channels == 1 else image)
    resized = np.asarray(picture.resize((size, size), Image.Resampling.BILINEAR))
    return resized.reshape(size, size, channels)


def _read_array_file(path):
    fix = "Save uint8 images (N, H, W, C) with np.savez(path, images=..., labels=...)."
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:  # numpy raises ValueError, OSError, EOFError or zipfile errors
        raise UsageError(
            f"--dataset {path}: not a readable {path[-4:]} file ({e}). {fix}"
        ) from None
    if isinstance(loaded, np.ndarray):
        return {"all": (_checked_images(path, "the array", loaded), None)}, []
    with loaded:
        keys = set(loaded.files)
        if "x_train" in keys and "x_test" in keys:
            parts = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
        elif keys & {"images", "x"}:
            parts = {
                "all": (
                    "images" if "images" in keys else "x",
                    "labels" if "labels" in keys else "y",
                )
            }
        else:
            raise UsageError(
                f"--dataset {path}: found the arrays {sorted(keys)}, expected `images` "
                f"(with optional `labels`) or `x_train` and `x_test`. {fix}"
            )
        splits = {}
        for split, (x_key, y_key) in parts.items():
            images = _checked_images(path, f"`{x_key}`", _member(loaded, path, x_key))
            labels = (
                _checked_labels(path, y_key, _member(loaded, path, y_key), len(images))
                if y_key in keys
                else None
            )
            splits[split] = (images, labels)
        labelled = [y for _, y in splits.values() if y is not None]
        if labelled and len(labelled) != len(splits):
            raise UsageError(f"--dataset {path}: labels are given for one split only. {fix}")
        class_names = []
        if labelled:
            count = int(max(y.max() for y in labelled)) + 1
            if count > MAX_CLASSES:
                raise UsageError(
                    f"--dataset {path}: a label is {count - 1}, and labels must be class "
                    f"indices 0 to {MAX_CLASSES - 1} (at most {MAX_CLASSES:,} classes). "
                    "Number the classes 0, 1, 2, ... and save them as `labels`."
                )
            class_names = [str(i) for i in range(count)]
            if "class_names" in keys:
                class_names = [str(n) for n in _member(loaded, path, "class_names").tolist()]
                if len(class_names) < count:
                    raise UsageError(
                        f"--dataset {path}: {len(class_names)} class_names for labels up "
                        f"to {count - 1}. {fix}"
                    )
    return splits, class_names


def _member(loaded, path, key):
    """One array of an `.npz`: NpzFile reads each member when it is asked for,
    outside the guarded `np.load`, and refuses a pickled (object) one there."""
    try:
        return loaded[key]
    except Exception as e:  # ValueError for object arrays; zipfile and OS errors for damage
        raise UsageError(
            f"--dataset {path}: its array `{key}` cannot be read ({e}). Arrays of Python "
            "objects are never unpickled; save plain uint8 images and integer labels with "
            "np.savez(path, images=..., labels=...)."
        ) from None


def _checked_images(path, what, images):
    fix = "Save uint8 images (N, H, W, C) with np.savez(path, images=..., labels=...)."
    if images.dtype != np.uint8:
        raise UsageError(
            f"--dataset {path}: {what} holds {images.dtype} values; expected uint8 pixels "
            "0-255 (from [0, 1] floats: (x * 255).round().astype(np.uint8))."
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or not len(images):
        raise UsageError(
            f"--dataset {path}: {what} has shape {images.shape}; expected (N, H, W, C) "
            f"with N > 0 and C = 1, 3 or 4, or (N, H, W) for grey. {fix}"
        )
    return images


def _checked_labels(path, key, labels, count):
    if (
        labels.dtype.kind not in "iu"
        or labels.ndim != 1
        or len(labels) != count
        or (count and labels.min() < 0)
    ):
        raise UsageError(
            f"--dataset {path}: `{key}` must be {count} non-negative integer labels, one "
            f"per image; it is {labels.dtype} of shape {labels.shape}."
        )
    return labels.astype(np.int64)
