"""Loading uploads and the shared preprocessing function."""
from __future__ import annotations

import io
import struct
import zlib

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


# ------------------------------------------------------------------------------------------ one picture's failure

def test_a_decoders_own_failure_is_that_pictures_error():
    """libavif's RuntimeError and the DDS plugin's NotImplementedError are not OSErrors: they still become
    the picture's ImageError with a plain message."""
    from hostile_corpus import avif_decoder_failure, dds_unknown_format

    rng = np.random.default_rng(1)
    avif = avif_decoder_failure(_bytes(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "AVIF"))
    with pytest.raises(RuntimeError):
        Image.open(io.BytesIO(avif)).load()  # what Pillow itself does with it
    with pytest.raises(ImageError, match=r"^broken.avif: could not decode this picture \(RuntimeError: .+\)$"):
        load_image(avif, name="broken.avif")
    with pytest.raises(NotImplementedError):
        Image.open(io.BytesIO(dds_unknown_format()))
    with pytest.raises(ImageError, match=r"texture.jpg: could not decode this picture \(NotImplementedError: "):
        load_image(dds_unknown_format(), name="texture.jpg")


def test_captioner_keeps_every_failure_to_its_own_picture(monkeypatch, tmp_path):
    """Through the real Captioner.caption: pictures that fail in decoding, turning upright or
    preprocessing (any exception, MemoryError included) get their own error; the rest are captioned in
    one encoder batch; Ctrl-C is never swallowed."""
    from fake_model import FakeModelCaptioner
    from hostile_corpus import dds_unknown_format

    from captioner.serving import captioner as captioner_module
    from captioner.serving import images

    good = [tmp_path / f"good-{i}.png" for i in range(3)]
    for i, path in enumerate(good):
        Image.new("RGB", (40 + i, 30), (10 * i, 100, 200)).save(path)
    dds = tmp_path / "texture.jpg"
    dds.write_bytes(dds_unknown_format())
    odd_sizes = {41: ValueError("preprocessing blew up"), 42: MemoryError()}
    real_preprocess = images.preprocess_image

    def fragile(img):
        if img.width in odd_sizes:
            raise odd_sizes[img.width]
        return real_preprocess(img)

    monkeypatch.setattr(captioner_module, "preprocess_image", fragile)
    model = FakeModelCaptioner()
    results = model.caption([good[0], dds, good[1], good[2], b"\xff\xd8\xff"], keep_thumbnail=True)
    assert [r.ok for r in results] == [True, False, False, False, False]
    assert "could not decode this picture (NotImplementedError" in results[1].error
    assert "could not decode this picture (ValueError: preprocessing blew up)" in results[2].error
    assert "not enough memory to decode this picture" in results[3].error
    assert model.encoded == [1] and results[0].text.startswith("a picture") and results[0].thumbnail is not None

    def interrupted(img):
        raise KeyboardInterrupt

    monkeypatch.setattr(captioner_module, "preprocess_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.caption([good[0]])


def test_a_damaged_orientation_tag_costs_only_the_turn():
    exif = Image.Exif()
    exif[0x0112] = 99  # no such orientation
    img = load_image(_bytes(Image.new("RGB", (40, 20), (1, 2, 3)), "JPEG", exif=exif.tobytes()))
    assert img.size == (40, 20)


# ------------------------------------------------------------------------------------------ memory by pixels

def test_memory_budget_counts_bytes_per_pixel_and_copies(monkeypatch):
    from hostile_corpus import png_bomb

    from captioner.serving import images

    # 62.9 megapixels: under the pixel limit, but an 8-bit RGBA picture this narrow is not reduced on load
    # and needs 4 bytes a pixel decoded plus the RGBA, white background and mask copies on the way to RGB.
    header = png_bomb(1700, 37000).replace(struct.pack(">IIBBBBB", 1700, 37000, 8, 0, 0, 0, 0),
                                           struct.pack(">IIBBBBB", 1700, 37000, 8, 6, 0, 0, 0))
    fixed = header[:8] + _rechunk(header[8:])
    need = images.memory_needed("RGBA", (1700, 37000))
    assert need == 1700 * 37000 * (4 + 4 + 4 + 1) > images.MAX_DECODE_BYTES
    with pytest.raises(ImageError, match=r"^tall.png: this picture would need 7\d\d MB to decode "
                                         r"\(1700x37000, 8-bit RGBA\); the limit is 512 MB$"):
        load_image(fixed, name="tall.png")
    # the same number of 16-bit pixels in a square picture is reduced on load: decoded size plus a little
    assert images.memory_needed("I;16", (7999, 7999)) < 7999 * 7999 * 2 * 1.2
    monkeypatch.setattr(images, "MAX_DECODE_BYTES", 100 * 2**20)
    with pytest.raises(ImageError, match=r"would need 1\d\d MB to decode \(7999x7999, 16-bit grey\)"):
        images.check_memory(Image.new("I;16", (7999, 7999)), "big.png")


def _rechunk(chunks: bytes) -> bytes:
    """PNG chunks with their CRCs recomputed (after editing a header in place)."""
    out, i = b"", 0
    while i < len(chunks):
        length = struct.unpack(">I", chunks[i:i + 4])[0]
        kind, body = chunks[i + 4:i + 8], chunks[i + 8:i + 8 + length]
        out += chunks[i:i + 8 + length] + struct.pack(">I", zlib.crc32(kind + body))
        i += 12 + length
    return out


PEAK = """
import resource, sys
from captioner.serving.images import load_and_preprocess
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
pixels = load_and_preprocess(sys.argv[1])
assert pixels.shape == (299, 299, 3)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def _peak_mb(path) -> float:
    """How much a fresh process's peak memory grows while it loads and preprocesses ``path``: its own
    ru_maxrss, so nothing the test process holds counts."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300, check=True).stdout
    return int(out.split()[-1]) / 1024


def test_a_small_16bit_png_costs_little_more_memory_than_a_photo(tmp_path):
    """A 140 KB 7999x7999 16-bit PNG (and an 8-bit RGBA one) decodes in little more than its pixels:
    no float64 copy, reduced strip by strip; measured in a subprocess."""
    from conftest import ASSETS
    from hostile_corpus import big_png

    grey16, rgba = tmp_path / "grey16.png", tmp_path / "rgba.png"
    grey16.write_bytes(big_png(7999, 7999))
    rgba.write_bytes(big_png(7999, 7999, bit_depth=8, colour_type=6))
    assert grey16.stat().st_size < 400_000
    photo = _peak_mb(ASSETS / "dog-field.jpg")
    assert _peak_mb(grey16) - photo < 700
    assert _peak_mb(rgba) - photo < 700
