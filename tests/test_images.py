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


def _corner_colours(img: Image.Image) -> dict[str, tuple]:
    """The colour at each corner of an RGB picture (a few pixels in, away from JPEG edge ringing)."""
    w, h = img.size
    return {"top-left": img.getpixel((3, 3)), "top-right": img.getpixel((w - 4, 3)),
            "bottom-left": img.getpixel((3, h - 4)), "bottom-right": img.getpixel((w - 4, h - 4))}


def _red(pixel) -> bool:
    r, g, b = pixel
    return r > 180 and g < 80 and b < 80


@pytest.mark.parametrize("orientation, corner", [
    (1, "top-left"),  # stored upright: nothing moves
    (3, "bottom-right"),  # rotate 180
    (6, "top-right"),  # display rotated 90 clockwise: the stored top-left corner goes to the top right
    (8, "bottom-left"),  # display rotated 90 anticlockwise: it goes to the bottom left
])
def test_exif_rotation_is_applied(orientation, corner):
    """Catches an EXIF orientation that is ignored, or applied the wrong way round (clockwise for 8,
    anticlockwise for 6, a mirror): a 40x20 white picture with a red top-left corner must come out with
    the red where a phone's viewer shows it, and 20x40 for the quarter turns."""
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    img.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright = load_image(_bytes(img, "JPEG", quality=95, exif=exif.tobytes()))
    assert upright.size == ((20, 40) if orientation in (6, 8) else (40, 20))
    # the reference is Pillow's plain rotation of the stored pixels, written out here per orientation
    expected = {1: img, 3: img.transpose(Image.Transpose.ROTATE_180), 6: img.transpose(Image.Transpose.ROTATE_270),
                8: img.transpose(Image.Transpose.ROTATE_90)}[orientation]
    assert _red(_corner_colours(expected)[corner])  # the table above agrees with the reference rotation
    colours = _corner_colours(upright)
    assert [c for c, pixel in colours.items() if _red(pixel)] == [corner], colours


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
