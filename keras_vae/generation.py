"""New images as files: `keras-vae generate`.

    keras-vae generate --model runs/RUN --count 16 --out new_designs/
    keras-vae generate --model runs/RUN --count 64 --grid grid.png \\
        --sampler gmm --temperature 0.8 --label Sneaker --seed 0

One PNG per image (`00000.png`, ...) in `--out`, and/or one grid in
`--grid`. Images come out at the data's size and channels (grey or RGB) as
the likelihood's mean. `--seed` makes the files identical from run to run.
The output folder appears only when every image is written; an existing
non-empty folder is refused, never mixed into.
"""

from __future__ import annotations

import os

import numpy as np

from keras_vae import data, files, pictures, samplers, sources
from keras_vae.errors import UsageError
from keras_vae.images import image_grid, write_png

DECODE_BATCH = 256


def resolve_label(label: str | None, model, class_names) -> int | None:
    """`--label NAME|INDEX` -> a class index of a conditional model, or None."""
    if label is None:
        return None
    if not model.num_classes:
        raise UsageError(
            f"--label {label!r}: this model is not conditional (trained without "
            "--conditional), so it cannot draw a chosen class. Drop --label."
        )
    if label in class_names:
        return class_names.index(label)
    if label.isdigit() and int(label) < model.num_classes:
        return int(label)
    names = ", ".join(class_names) if class_names else f"0 to {model.num_classes - 1}"
    raise UsageError(f"--label {label!r} is not a class of this model. Classes: {names}.")


def generate_images(
    model,
    count: int,
    sampler: str = "prior",
    gmm=None,
    temperature: float = 1.0,
    seed: int | None = None,
    label: int | None = None,
) -> np.ndarray:
    """`count` new images, uint8 `(count, H, W, C)`.

    A conditional model draws class `label`, or cycles through its classes
    when `label` is None.
    """
    z = samplers.draw_latents(model, count, sampler, gmm, temperature, seed)
    labels = None
    if model.num_classes:
        labels = (
            np.full(count, label, np.int32)
            if label is not None
            else np.arange(count, dtype=np.int32) % model.num_classes
        )
    batches = []
    for start in range(0, count, DECODE_BATCH):
        batch_labels = None if labels is None else labels[start : start + DECODE_BATCH]
        batches.append(model.decode(z[start : start + DECODE_BATCH], labels=batch_labels)["mean"])
    return data.to_uint8(np.concatenate([b.numpy() for b in batches]))


def check_outputs(out_dir: str | None, grid: str | None) -> None:
    """Refuses outputs that would mix with or overwrite something, before any work."""
    if out_dir is None and grid is None:
        raise UsageError("Nothing to write: pass --out DIR (one PNG per image) and/or --grid FILE.")
    if out_dir and not files.is_new_or_empty_dir(out_dir):
        raise UsageError(
            f"--out {out_dir} exists and is not an empty folder; choose a new folder "
            "(generated images are never mixed into existing files)."
        )
    if grid and not grid.lower().endswith(".png"):
        raise UsageError(f"--grid {grid}: the grid is written as PNG; give a .png file name.")
    for path in (out_dir, grid):
        parent = os.path.dirname(os.path.abspath(path)) if path else None
        if parent and not os.path.isdir(parent):
            raise UsageError(f"{path}: the folder {parent} does not exist.")


def write_images(images: np.ndarray, out_dir: str | None = None, grid: str | None = None) -> dict:
    """One PNG per image in `out_dir` (which appears complete or not at all), and/or a grid."""
    check_outputs(out_dir, grid)
    written = {}
    if out_dir:
        with files.atomic_dir(out_dir) as staging:
            for i, image in enumerate(images):
                write_png(os.path.join(staging, f"{i:05d}.png"), image)
        written["out"] = os.path.abspath(out_dir)
    if grid:
        pictures.save_png(grid, image_grid(images.astype(np.float32) / 255.0))
        written["grid"] = os.path.abspath(grid)
    return written


def run(args) -> dict:
    """`keras-vae generate` after its flags are parsed."""
    check_outputs(args.out, args.grid)
    source = sources.open_source(args.model)
    label = resolve_label(args.label, source.model, source.class_names)
    gmm = source.gmm() if args.sampler == "gmm" else None
    images = generate_images(
        source.model, args.count, args.sampler, gmm, args.temperature, args.seed, label
    )
    written = write_images(images, args.out, args.grid)
    shape = "x".join(map(str, images.shape[1:]))
    print(f"Generated {len(images)} images ({shape}, sampler {args.sampler}): {written}")
    return written
