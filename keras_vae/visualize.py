"""Pictures of a model: image grids as PNG files and TensorBoard images."""

from __future__ import annotations

import math
import os

import numpy as np
import tensorflow as tf


def image_grid(images, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """Tiles `(n, H, W, C)` images in [0, 1] into one uint8 `(rows*H, cols*W, C)`.

    Cells are separated by `pad` white pixels; a partly filled last row is
    left white.
    """
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    n, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.ones(
        (rows * (height + pad) + pad, columns * (width + pad) + pad, channels), np.float32
    )
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        grid[top : top + height, left : left + width] = image
    return np.round(grid * 255).astype(np.uint8)


def upscale(grid: np.ndarray, min_side: int = 512) -> np.ndarray:
    """Nearest-neighbour upscaling so a 28-pixel image grid is readable."""
    factor = max(1, math.ceil(min_side / max(grid.shape[:2])))
    return grid.repeat(factor, axis=0).repeat(factor, axis=1)


def save_png(path: str, grid: np.ndarray) -> None:
    """Writes a uint8 `(H, W, C)` array as a PNG (atomically)."""
    tmp = path + ".tmp"
    tf.io.write_file(tmp, tf.io.encode_png(grid))
    os.replace(tmp, path)


def sample_grid(model, num_images: int) -> np.ndarray:
    """A grid of images decoded from prior samples."""
    return image_grid(model.sample_prior(num_images)["images"].numpy())


def reconstruction_grid(model, images) -> np.ndarray:
    """Test images (odd columns) beside their reconstructions (even columns)."""
    images = np.asarray(images, dtype=np.float32)
    recon = model.reconstruct(images).numpy()
    pairs = np.stack([images, recon], axis=1).reshape((-1,) + images.shape[1:])
    return image_grid(pairs, columns=2 * math.ceil(math.sqrt(len(images) / 2)))


def write_run_pictures(model, test_images, out_dir: str, num_images: int = 64) -> dict:
    """Writes `samples.png` and `reconstructions.png`; returns their paths."""
    paths = {
        "samples": os.path.join(out_dir, "samples.png"),
        "reconstructions": os.path.join(out_dir, "reconstructions.png"),
    }
    save_png(paths["samples"], upscale(sample_grid(model, num_images)))
    save_png(
        paths["reconstructions"], upscale(reconstruction_grid(model, test_images[:num_images]))
    )
    return paths
