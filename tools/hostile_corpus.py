"""Generates the corpus of odd and hostile image files used by the robustness tests and by
``python tools/reliability_report.py`` (which writes docs/RELIABILITY.md). Nothing large is committed:
every file is made here, from the repository's own sample photos."""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@dataclass(frozen=True)
class Case:
    filename: str
    what: str
    expect: str  # "caption" or the words an error message must contain

    @property
    def should_caption(self) -> bool:
        return self.expect == "caption"


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = zlib.compress(b"\0" * 1024, 9)  # far too little data; decoders that trust the header explode
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def dds_unknown_format() -> bytes:
    """A DDS texture whose pixel-format flags are 0: Pillow raises NotImplementedError (not an OSError)."""
    data = bytearray(_save(Image.new("RGB", (16, 16), (1, 2, 3)), "DDS"))
    data[80:84] = struct.pack("<I", 0)  # DDS_PIXELFORMAT.dwFlags
    return bytes(data)


def avif_decoder_failure(avif: bytes) -> bytes:
    """``avif`` with one byte zeroed so that libavif fails with a RuntimeError (the first such byte)."""
    for at in range(len(avif)):
        broken = avif[:at] + b"\0" + avif[at + 1:]
        try:
            Image.open(io.BytesIO(broken)).load()
        except RuntimeError:
            return broken
        except Exception:
            continue
    raise RuntimeError("no single zeroed byte makes this libavif fail with a RuntimeError")


def big_png(width: int, height: int, bit_depth: int = 16, colour_type: int = 0) -> bytes:
    """A real, decodable PNG of width x height pixels (a gradient of rows), written row by row: a few
    hundred KB that decode to hundreds of MB."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row_bytes = width * channels * bit_depth // 8
    packer, parts = zlib.compressobj(9), []
    for y in range(height):
        parts.append(packer.compress(b"\0" + bytes([y * 255 // max(height - 1, 1)]) * row_bytes))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


def build_corpus(folder: Path) -> list[Case]:
    """Write every case into ``folder``; return them in a fixed order."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    folder.mkdir(parents=True, exist_ok=True)
    photo = Image.open(ASSETS / "cat.jpg").convert("RGB")
    person = Image.open(ASSETS / "astronaut.jpg").convert("RGB")
    jpeg = _save(photo, "JPEG", quality=90)
    rotated = person.transpose(Image.Transpose.ROTATE_90)  # stored sideways, as a phone does
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": upright it is the original photo again
    frames = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT), photo.convert("L").convert("RGB")]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    tiff = io.BytesIO()
    frames[0].save(tiff, format="TIFF", save_all=True, append_images=frames[1:])
    grey16 = Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257))
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    heic = _save(photo, "HEIF")
    cases: list[tuple[Case, bytes]] = [
        (Case("zero-bytes.jpg", "empty file (0 bytes)", "file is empty"), b""),
        (Case("truncated.jpg", "JPEG cut off half-way", "corrupt or truncated"), jpeg[: len(jpeg) // 2]),
        (Case("random-bytes.jpg", "random bytes named .jpg", "not a recognised image format"),
         np.random.default_rng(0).bytes(5000)),
        (Case("text-file.png", "a text file renamed .png", "not a recognised image format"),
         b"Dear diary, today I renamed a text file.\n" * 20),
        (Case("decompression-bomb.png", "PNG declaring 100000x100000 pixels in 100 bytes", "too large"),
         png_bomb(100_000, 100_000)),
        (Case("huge-header.png", "header of a 20000x20000 image", "too large"), png_bomb(20_000, 20_000)),
        (Case("one-pixel.png", "a 1x1 image", "caption"), _save(Image.new("RGB", (1, 1), (90, 120, 200)), "PNG")),
        (Case("grey-16bit.png", "16-bit greyscale PNG", "caption"), _save(grey16, "PNG")),
        (Case("cmyk.jpg", "CMYK JPEG", "caption"), _save(photo.convert("CMYK"), "JPEG")),
        (Case("rgba.png", "RGBA PNG with a transparency gradient", "caption"), _save(rgba, "PNG")),
        (Case("palette-transparent.png", "palette PNG with a transparent colour", "caption"), _save(palette, "PNG")),
        (Case("animated.gif", "animated GIF, 3 frames", "caption"), gif.getvalue()),
        (Case("exif-rotated.jpg", "JPEG stored sideways with an EXIF orientation flag", "caption"),
         _save(rotated, "JPEG", quality=92, exif=exif.tobytes())),
        (Case("photo.webp", "WebP", "caption"), _save(photo, "WEBP", quality=85)),
        (Case("photo.bmp", "BMP", "caption"), _save(photo, "BMP")),
        (Case("multipage.tiff", "multi-page TIFF", "caption"), tiff.getvalue()),
        (Case("phone.heic", "HEIC, as iPhones save photos", "caption"), heic),
        (Case("phone.avif", "AVIF", "caption"), _save(photo, "AVIF")),
        (Case("broken.heic", "HEIC cut off half-way", "corrupt or truncated"), heic[: len(heic) // 2]),
        (Case("drawing.svg", "SVG vector drawing", "SVG vector drawings are not supported"),
         b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
         b'<rect width="10" height="10" fill="red"/></svg>'),
        (Case("broken.avif", "AVIF that libavif fails on (RuntimeError)", "could not decode this picture"),
         avif_decoder_failure(_save(photo, "AVIF"))),
        (Case("texture.jpg", "DDS texture named .jpg (NotImplementedError)", "could not decode this picture"),
         dds_unknown_format()),
        (Case("big-16bit.png", "16-bit greyscale PNG, 7999x7999, in a few hundred KB", "caption"),
         big_png(7999, 7999)),
        (Case("a" * 200 + ".jpg", "a 204-character file name", "caption"), jpeg),
        (Case("café-über-日本語.jpg", "a non-ASCII file name", "caption"), jpeg),
    ]
    for case, data in cases:
        (folder / case.filename).write_bytes(data)
    return [case for case, _ in cases]
