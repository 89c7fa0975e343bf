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
# A JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, ``Image.draft``) when both sides
# stay at least this long: every use shrinks it to 299x299 (the encoder) or 640 px at most (thumbnails),
# and preprocess_image's resize would box-reduce it to about 3x299 first anyway. A 12-megapixel phone
# photo loads and preprocesses 2.7x faster (bench/run.py, figure k). None: always decode at full size.
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
        # Only an image fresh from a file (it still has a format) has pixels in stored orientation; one
        # made by convert/transpose/etc. may keep the EXIF tag but is already as its owner wants it.
        if source.format:
            source = ImageOps.exif_transpose(source) or source
        return _to_rgb(source, label)
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
    except OSError as err:
        raise ImageError(f"{label}: cannot read file ({err.strerror or err})") from err
    if len(data) == 0:
        raise ImageError(f"{label}: file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{label}: file is larger than {MAX_FILE_BYTES // 2**20} MB")
    return decode_image_bytes(data, label)


def decode_image_bytes(data: bytes, label: str = "image") -> Image.Image:
    """Decode encoded image bytes into an upright RGB image, with size and integrity checks."""
    head = data[:1024].lstrip().lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        raise ImageError(f"{label}: SVG vector drawings are not supported; export it as PNG or JPEG first")
    with warnings.catch_warnings():
        # Pillow warns before it raises on bombs; we turn both into one clear error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{label}: image is too large ({width}x{height} pixels; the limit is {MAX_PIXELS:,} pixels)"
                )
            img.seek(0)  # first frame of GIF/WebP animations and multi-page TIFFs
            if DECODE_AT_LEAST:
                img.draft(None, (DECODE_AT_LEAST, DECODE_AT_LEAST))  # a no-op for formats other than JPEG
            img.load()  # decode now so truncation is caught here, not later
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ImageError(f"{label}: image is too large to decode safely ({err})") from err
        except UnidentifiedImageError as err:
            raise ImageError(f"{label}: not a recognised image format (is it really a picture?)") from err
        except (OSError, SyntaxError, ValueError, EOFError) as err:
            detail = " ".join(str(err).split())  # some decoders put newlines in their messages
            raise ImageError(f"{label}: image data is corrupt or truncated ({detail})") from err
    img = ImageOps.exif_transpose(img) or img  # phones store portrait shots rotated + an EXIF flag
    return _to_rgb(img, label)


def _to_rgb(img: Image.Image, label: str) -> Image.Image:
    """Flatten any mode (L, I;16, P, RGBA, CMYK, ...) to 8-bit RGB; transparency goes onto white."""
    if img.width < 1 or img.height < 1:
        raise ImageError(f"{label}: image has no pixels")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        span = max(arr.max() - arr.min(), 1.0)
        img = Image.fromarray(((arr - arr.min()) / span * 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB") if img.mode != "RGB" else img


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
