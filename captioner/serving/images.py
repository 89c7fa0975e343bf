"""Reading images people give us, and the one preprocessing function shared by training and serving.

Every failure is raised as :class:`ImageError` with a message that names the file and the problem,
so the CLI, the batch runner and the web page can show it and carry on with the other images.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import IMAGE_SIZE

try:  # HEIC/HEIF as iPhones save them; AVIF is built into Pillow >= 11.3
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - optional at import time, listed in requirements.txt
    pass

MAX_FILE_BYTES = 50 * 1024 * 1024  # larger uploads are refused before decoding
MAX_PIXELS = 64_000_000  # about 8000x8000; beyond that it is a decompression bomb, not a photo
# The most memory one picture may take to decode and flatten (``memory_needed``: bytes per pixel as
# decoded, plus the full-size copies made on the way to RGB). A 64-megapixel RGB photo needs 256 MB.
MAX_DECODE_BYTES = 512 * 2**20
# A JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, ``Image.draft``) when both sides
# stay at least this long: every use shrinks it to 299x299 (the encoder) or 640 px at most (thumbnails),
# and preprocess_image's resize would box-reduce it to about 3x299 first anyway. Phone photos load and
# preprocess several times faster (figure k in docs/PERFORMANCE.md). None: always decode at full size.
DECODE_AT_LEAST: int | None = 3 * IMAGE_SIZE

ImageSource = Union[str, Path, bytes, bytearray, BinaryIO, Image.Image]


class ImageError(ValueError):
    """An input that cannot be captioned; ``str(err)`` is a message fit to show a person."""


def source_name(source: ImageSource, name: str | None = None) -> str:
    """How to call an input in messages: the given name, else its path or file name, else "image"."""
    if name:
        return name
    if isinstance(source, (str, Path)):
        return str(source)
    return getattr(source, "name", None) or "image"


def load_image(source: ImageSource, name: str | None = None) -> Image.Image:
    """Open a path, bytes or file object as an upright RGB PIL image (first frame of animations).

    Raises ImageError for missing, empty, oversized, corrupt, truncated or non-image input.
    """
    label = source_name(source, name)
    if isinstance(source, Image.Image):
        try:
            # Only an image fresh from a file (it still has a format) has pixels in stored orientation; one
            # made by convert/transpose/etc. may keep the EXIF tag but is already as its owner wants it.
            if source.format:
                source = ImageOps.exif_transpose(source) or source
            return _to_rgb(source, label)
        except ImageError:
            raise
        except Exception as err:  # a lazily loaded picture decodes here: its failure is its own
            raise picture_error(label, err) from err
    try:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise ImageError(f"{label}: file not found")
            data = path.read_bytes() if path.stat().st_size <= MAX_FILE_BYTES else None
            if data is None:
                raise ImageError(f"{label}: file is larger than {MAX_FILE_BYTES // 2**20} MB")
        elif isinstance(source, (bytes, bytearray)):
            data = bytes(source)
        else:
            data = source.read(MAX_FILE_BYTES + 1)
    except ImageError:
        raise
    except OSError as err:
        raise ImageError(f"{label}: cannot read file ({err.strerror or err})") from err
    except Exception as err:  # a file object that fails in its own way (closed, wrong type, ...)
        raise ImageError(f"{label}: cannot read file ({type(err).__name__}: {_one_line(err)})") from err
    if len(data) == 0:
        raise ImageError(f"{label}: file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{label}: file is larger than {MAX_FILE_BYTES // 2**20} MB")
    return decode_image_bytes(data, label)


def decode_image_bytes(data: bytes, label: str = "image") -> Image.Image:
    """Decode encoded image bytes into an upright RGB image, with size, memory and integrity checks.

    Whatever goes wrong while decoding, turning or flattening this one picture (a decoder's RuntimeError
    or NotImplementedError, MemoryError, ...) becomes an ImageError naming it, so a batch goes on with the
    other pictures; KeyboardInterrupt and SystemExit are never caught.
    """
    head = data[:1024].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        raise ImageError(f"{label}: SVG vector drawings are not supported; export it as PNG or JPEG first")
    try:
        with warnings.catch_warnings():
            # Pillow warns before it raises on bombs; we turn both into one clear error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{label}: image is too large ({width}x{height} pixels; the limit is {MAX_PIXELS:,} pixels)"
                )
            img.seek(0)  # first frame of GIF/WebP animations and multi-page TIFFs
            if DECODE_AT_LEAST:
                img.draft(None, (DECODE_AT_LEAST, DECODE_AT_LEAST))  # a no-op for formats other than JPEG
            check_memory(img, label)  # from the header: refused before a byte is decoded
            img.load()  # decode now so truncation is caught here, not later
            turn = _orientation(img)
            img = _shrink(img)
            img = img.transpose(turn) if turn is not None else img  # phones store portrait shots rotated
            return _to_rgb(img, label)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{label}: image is too large to decode safely ({err})") from err
    except UnidentifiedImageError as err:
        raise ImageError(f"{label}: not a recognised image format (is it really a picture?)") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageError(f"{label}: image data is corrupt or truncated ({_one_line(err)})") from err
    except Exception as err:  # a decoder's own failure (RuntimeError, NotImplementedError, ...): this picture only
        raise picture_error(label, err) from err


def picture_error(label: str, err: Exception) -> ImageError:
    """The ImageError for an unforeseen failure while reading, turning or preprocessing one picture:
    "LABEL: could not decode this picture (RuntimeError: ...)"; MemoryError gets its own words."""
    if isinstance(err, ImageError):
        return err
    if isinstance(err, MemoryError):
        return ImageError(f"{label}: not enough memory to decode this picture")
    return ImageError(f"{label}: could not decode this picture ({type(err).__name__}: {_one_line(err)})")


def _one_line(err: BaseException) -> str:
    """An exception's message on one line (some decoders put newlines in theirs), at most 200 characters."""
    return " ".join(str(err).split())[:200]


# How many bytes Pillow keeps per pixel of each mode (bands are padded to 4 bytes; "I;16" is 2, "L"/"P" 1).
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
_DEPTH = {"1": "1-bit", "L": "8-bit grey", "P": "8-bit palette", "I;16": "16-bit grey", "I;16L": "16-bit grey",
          "I;16B": "16-bit grey", "I;16N": "16-bit grey", "I": "32-bit integer", "F": "32-bit float",
          "LA": "8-bit grey + alpha", "PA": "palette + alpha", "RGB": "8-bit RGB", "RGBA": "8-bit RGBA",
          "CMYK": "8-bit CMYK", "YCbCr": "8-bit YCbCr"}
# Modes Image.reduce works on; others are converted (strip by strip) to the mode named here first.
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F", "RGBX", "LAB", "HSV"}
_TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_90}


def _shrink_factor(size: tuple[int, int]) -> int:
    """The whole factor a picture of ``size`` is box-reduced by on load: its short side stays at least
    DECODE_AT_LEAST (1 = kept as it is)."""
    return max(1, min(size) // DECODE_AT_LEAST) if DECODE_AT_LEAST else 1


def _reducible_mode(img: Image.Image) -> str:
    """The mode ``img`` is box-reduced in: its own, else the nearest one Image.reduce works on."""
    if img.mode in _REDUCIBLE:
        return img.mode
    if img.mode.startswith("I;16"):
        return "I"
    if img.mode == "1":
        return "L"
    if img.mode == "PA" or (img.mode == "P" and "transparency" in img.info):
        return "RGBA"
    return "RGB"


def memory_needed(mode: str, size: tuple[int, int]) -> int:
    """Bytes decoding and flattening a picture of ``mode`` and ``size`` needs at its peak: the decoded
    pixels as Pillow stores them, plus the full-size copies ``_to_rgb`` makes when the picture is not
    reduced on load (the 16-bit/32-bit integer stretch, the alpha composite, the RGB conversion)."""
    width, height = size
    pixels = width * height
    stored = _STORED_BYTES.get(mode, 4)
    factor = _shrink_factor(size)
    if factor > 1:  # reduced strip by strip: full-size only what the decoder holds, plus the small result
        return pixels * stored + pixels // (factor * factor) * (4 + 4 + 8 + 4)
    if mode in ("I", "F") or mode.startswith("I;16"):
        copies = stored + 8 + 1 + 4  # the array, its float stretch (in rows, counted whole), L, RGB
    elif mode in ("RGBA", "LA", "PA", "P"):
        copies = 4 + 4 + 1  # RGBA, the white background, the alpha mask
    elif mode == "RGB":
        copies = 0
    else:
        copies = 4
    return pixels * (stored + copies)


def check_memory(img: Image.Image, label: str = "image") -> None:
    """ImageError when decoding ``img`` (opened, not yet loaded) would need more than MAX_DECODE_BYTES."""
    need = memory_needed(img.mode, img.size)
    if need > MAX_DECODE_BYTES:
        width, height = img.size
        raise ImageError(f"{label}: this picture would need {_size(need)} to decode ({width}x{height}, "
                         f"{_DEPTH.get(img.mode, img.mode)}); the limit is {_size(MAX_DECODE_BYTES)}")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def _orientation(img: Image.Image) -> Image.Transpose | None:
    """How to turn ``img`` upright, from its EXIF (or XMP) orientation; None when it already is."""
    try:
        return _TURNS.get(img.getexif().get(0x0112))
    except Exception:  # a damaged EXIF block must not cost the picture: it is shown as stored
        return None


def _shrink(img: Image.Image) -> Image.Image:
    """``img`` box-reduced by ``_shrink_factor`` (every use shrinks it to 299 or 640 px anyway), in strips
    when its mode needs converting first, so no second full-size copy is ever made."""
    factor = _shrink_factor(img.size)
    if factor < 2:
        return img
    mode = _reducible_mode(img)  # (Image.reduce itself copies RGBA and LA whole, premultiplied: strips here too)
    width, height = img.width // factor * factor, img.height // factor * factor
    out = Image.new(mode, (width // factor, height // factor))
    step = factor * max(1, 256 // factor)  # about 256 source rows per strip
    for top in range(0, height, step):
        strip = img.crop((0, top, width, min(top + step, height)))
        strip = (strip if strip.mode == mode else strip.convert(mode)).reduce(factor)
        out.paste(strip, (0, top // factor))
    if mode in ("I", "F"):  # stretched by the whole picture's darkest and brightest samples, as unreduced
        out = Image.fromarray(_stretch(np.asarray(out), *img.getextrema()), mode="L")
    return out


def _to_rgb(img: Image.Image, label: str) -> Image.Image:
    """Flatten any mode (L, I;16, P, RGBA, CMYK, ...) to 8-bit RGB; transparency goes onto white."""
    if img.width < 1 or img.height < 1:
        raise ImageError(f"{label}: image has no pixels")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = Image.fromarray(_stretch(np.asarray(img)), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB") if img.mode != "RGB" else img


def _stretch(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """16/32-bit samples stretched to 0-255 (``lo``..``hi``, default darkest to brightest), a few rows at
    a time so that no full-size float copy is made."""
    lo = float(np.nanmin(values)) if lo is None else float(lo)
    hi = float(np.nanmax(values)) if hi is None else float(hi)
    scale = 255 / max(hi - lo, 1.0)
    out = np.empty(values.shape, np.uint8)
    rows = max(1, 2**20 // max(values.shape[1], 1))
    for top in range(0, values.shape[0], rows):
        band = (values[top:top + rows].astype(np.float64) - lo) * scale
        out[top:top + rows] = np.rint(np.nan_to_num(band, nan=0.0)).clip(0, 255).astype(np.uint8)
    return out


def preprocess_image(img: Image.Image) -> np.ndarray:
    """The ONE image transform used by training and serving.

    Resizes the whole picture to 299x299 (no crop: the training copies were squashed the same way,
    so serving squashes too) and scales pixels to [-1, 1] as Xception expects.
    Returns float32 array of shape (299, 299, 3).
    """
    img = _to_rgb(img, "image")
    if img.size != (IMAGE_SIZE, IMAGE_SIZE):
        img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC, reducing_gap=3.0)
    pixels = np.asarray(img, dtype=np.float32)  # (299, 299, 3) in [0, 255]
    return pixels / 127.5 - 1.0  # == keras.applications.xception.preprocess_input


def load_and_preprocess(source: ImageSource, name: str | None = None) -> np.ndarray:
    """``preprocess_image(load_image(source))``: (299, 299, 3) float32."""
    return preprocess_image(load_image(source, name))
