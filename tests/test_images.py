"""keras_vae/images.py: every PIL mode a user can plausibly hand over is read right or refused."""

import numpy as np
import pytest
from PIL import Image

from keras_vae.images import read_image

# A shoe-like grey picture: dark background, a bright band, every level used.
GREY = np.tile(np.linspace(0, 255, 28).round().astype(np.uint8), (28, 1))
GREY[10:18, 4:24] = 230


def _save(tmp_path, image, name):
    path = str(tmp_path / name)
    image.save(path)
    return path


def test_grey_and_rgb_are_read_as_they_are(tmp_path):
    got = read_image(_save(tmp_path, Image.fromarray(GREY), "grey.png"))
    np.testing.assert_array_equal(got[..., 0], GREY)
    rgb = np.stack([GREY, 255 - GREY, GREY // 2], axis=-1)
    np.testing.assert_array_equal(read_image(_save(tmp_path, Image.fromarray(rgb), "c.png")), rgb)


def test_sixteen_bit_is_scaled_not_cast(tmp_path):
    # Cast to uint8, a 16-bit shoe became an almost black image that scored
    # like a black one; scaled, it is the same picture.
    wide = GREY.astype(np.uint16) * 257
    path = _save(tmp_path, Image.fromarray(wide), "wide.png")
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(read_image(path)[..., 0], GREY)


@pytest.mark.parametrize("mode", ["P", "1", "LA", "RGBA", "CMYK", "YCbCr"])
def test_other_modes_become_grey_or_rgb(mode, tmp_path):
    rgb = np.stack([GREY, GREY, GREY], axis=-1)
    image = Image.fromarray(rgb)
    # An adaptive palette holds the 29 greys exactly; the web palette would dither.
    image = image.convert("P", palette=Image.ADAPTIVE) if mode == "P" else image.convert(mode)
    suffix = "jpg" if mode in ("CMYK", "YCbCr") else "png"
    if suffix == "jpg" or mode in ("1",):
        path = str(tmp_path / f"x.{suffix}")
        image.save(path)
    else:
        path = _save(tmp_path, image, "x.png")
    got = read_image(path)
    assert got.dtype == np.uint8 and got.shape[:2] == (28, 28) and got.shape[2] in (1, 3)
    if mode == "1":  # dithered: single pixels move, the brightness stays
        assert set(np.unique(got)) == {0, 255} and abs(got.mean() - GREY.mean()) < 5
        return
    tolerance = {"CMYK": 12, "YCbCr": 12}.get(mode, 1)  # JPEG is lossy
    assert np.abs(got.mean(axis=-1) - GREY).mean() < tolerance


def test_float_images_and_broken_files_are_refused(tmp_path):
    path = str(tmp_path / "float.tiff")
    Image.fromarray(GREY.astype(np.float32) / 255).save(path)
    with pytest.raises(ValueError, match="mode 'F' has no 8-bit reading"):
        read_image(path)
    good = _save(tmp_path, Image.fromarray(GREY), "ok.png")
    data = open(good, "rb").read()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.png: not a readable image"):
        read_image(str(truncated))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png: not a readable image"):
        read_image(str(text))
