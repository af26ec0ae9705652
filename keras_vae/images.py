"""Image files in and out: uint8 pixels by PIL mode (or a clear refusal), grids, PNGs.

numpy and Pillow only: `serve_signature.py run` uses it beside LiteRT, in a
process that never imports TensorFlow. `--dataset PATH` reads folders with
the same `read_image`, and every PNG the package writes goes through
`write_png`.

| PIL mode | becomes |
|---|---|
| `L`, `RGB` | as they are |
| `1` (1-bit) | `L`, 0 or 255 |
| `P` (palette), `CMYK`, `YCbCr`, `LAB`, `HSV` | `RGB` (a palette's transparency dropped) |
| `LA`, `RGBA`, `PA` | alpha dropped: `L` or `RGB` |
| `I;16`, `I;16L`, `I;16B`, `I` (16-bit) | `L`, scaled by 255 / 65535 |
| `I` above 16 bits, `F` (float) | refused: no 8-bit scale to assume |

An EXIF orientation (phone photos) is applied, so images come out upright.
Images above PIL's `MAX_IMAGE_PIXELS` (a decompression bomb, or a photo far
larger than any model input) are refused, naming the file and its size.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_TO_RGB = {"P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBA", "RGBX"}


def read_image(path: str) -> np.ndarray:
    """One image file -> uint8 `(H, W, C)`, C = 1 or 3.

    Raises:
        ValueError: not an image, truncated, or a mode with no 8-bit meaning;
            the message names the file.
    """
    try:
        with warnings.catch_warnings():
            # PIL warns above MAX_IMAGE_PIXELS and raises above twice that: both refused.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()  # decode now: a truncated file fails here, not later
                # Phone photos store their rotation as an EXIF tag: apply it.
                upright = ImageOps.exif_transpose(image)
                return _to_uint8(upright, path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(
            f"{path}: refused as a possible decompression bomb: {e} Resize it below "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels first."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: not a readable image ({e}).") from None


def _to_uint8(image, path: str) -> np.ndarray:
    mode = image.mode
    if mode in ("L", "RGB"):
        array = np.asarray(image)
    elif mode == "1":
        array = np.asarray(image.convert("L"))
    elif mode == "LA":
        array = np.asarray(image.convert("L"))
    elif mode in _TO_RGB:
        array = np.asarray(image.convert("RGBA" if mode == "P" else "RGB"))[..., :3]
    elif mode.startswith("I;16") or mode == "I":
        wide = np.asarray(image).astype(np.int64)
        if wide.min() < 0 or wide.max() > 65535:
            raise ValueError(
                f"{path}: a 32-bit integer image with values from {wide.min()} to "
                f"{wide.max()}; convert it to 8-bit (L or RGB) first."
            )
        array = np.round(wide * (255 / 65535)).astype(np.uint8)
    else:
        raise ValueError(
            f"{path}: image mode {mode!r} has no 8-bit reading (e.g. float pixels); "
            "convert it to 8-bit grey (L) or RGB first."
        )
    array = np.asarray(array, np.uint8)
    return array[..., None] if array.ndim == 2 else array


def image_grid(images, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """Tiles `(n, H, W, C)` images in [0, 1] into one uint8 image.

    The result is `(rows * (H + pad) + pad, columns * (W + pad) + pad, C)`;
    cells are separated by white lines, and a partly filled last row is white.
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


def write_png(path: str, image: np.ndarray) -> None:
    """A uint8 `(H, W, C)` array, C = 1 or 3, as a PNG file."""
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path, format="PNG")
