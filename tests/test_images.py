"""Loading uploads and the shared preprocessing function."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from captioner.serving.images import ImageError, load_image, preprocess_image


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_preprocess_shape_range_and_squash():
    img = Image.new("RGB", (500, 100), (255, 0, 128))
    x = preprocess_image(img)
    assert x.shape == (299, 299, 3) and x.dtype == np.float32
    np.testing.assert_allclose(x[150, 150], [1.0, -1.0, 128 / 127.5 - 1], atol=1e-2)


def test_exif_rotation_is_applied():
    # A 40x20 picture, left half black, stored with "rotate 90" orientation: upright it is 20x40.
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    upright = load_image(_bytes(img, "JPEG", exif=exif.tobytes()))
    assert upright.size == (20, 40)


def test_modes_are_flattened_to_rgb():
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent -> white background
    assert load_image(_bytes(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    grey16 = Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    assert load_image(_bytes(grey16, "PNG")).mode == "RGB"
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 0, 0))
    assert load_image(_bytes(cmyk, "JPEG")).mode == "RGB"


@pytest.mark.parametrize("data, message", [
    (b"", "file is empty"),
    (b"hello, I am text", "not a recognised image format"),
])
def test_bad_bytes_get_specific_messages(data, message):
    with pytest.raises(ImageError, match=message):
        load_image(data, name="upload.jpg")


def test_truncated_jpeg_and_missing_file(tmp_path):
    data = _bytes(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(data[: len(data) // 2], name="half.jpg")
    with pytest.raises(ImageError, match="missing.png: file not found"):
        load_image(tmp_path / "missing.png")


def test_large_jpegs_decode_at_dct_scale_but_never_below_what_preprocessing_needs(monkeypatch):
    from captioner.serving import images

    rng = np.random.default_rng(0)
    smooth = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).resize((4000, 3000), Image.BICUBIC)
    jpeg, png = _bytes(smooth, "JPEG", quality=92), _bytes(smooth.resize((2000, 1500)), "PNG")
    side = images.DECODE_AT_LEAST
    scaled = load_image(jpeg)
    assert scaled.size == (2000, 1500)  # 1/2 scale: 1/4 (1000x750) would be under 3x299 on the short side
    assert min(scaled.size) >= side
    assert load_image(png).size == (2000, 1500)  # only JPEG has DCT scaling
    monkeypatch.setattr(images, "DECODE_AT_LEAST", None)
    full = load_image(jpeg)
    assert full.size == (4000, 3000)
    # the picture the encoder sees barely changes: pixels within a few levels of 255
    difference = np.abs(preprocess_image(full) - preprocess_image(scaled))
    assert difference.mean() < 0.01 and difference.max() < 0.1
