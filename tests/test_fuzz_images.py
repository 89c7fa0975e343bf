"""Fuzzing the batch path: a few hundred seeded mutations of pictures in every format captioner reads go
through ``caption_to_file`` and the real ``Captioner.caption`` (reading, turning, preprocessing, the
per-picture error net; a stand-in encoder and decoder keep it fast). Whatever a file holds, it gets exactly
one record, a caption or an error that names it, and no exception escapes to stop the others."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from captioner.serving.batch import caption_to_file

pillow_heif = pytest.importorskip("pillow_heif")
pillow_heif.register_heif_opener()

SEED = 20240611
MUTANTS_PER_FORMAT = 30


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def seeds() -> dict[str, bytes]:
    """One small, valid picture per format and mode captioner reads (name -> encoded bytes)."""
    rng = np.random.default_rng(SEED)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: exercises the turn upright
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    grey16 = Image.fromarray(rng.integers(0, 65535, (24, 32), dtype=np.uint16))
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    gif, tiff = io.BytesIO(), io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    frames[0].save(tiff, format="TIFF", save_all=True, append_images=frames[1:], compression="tiff_lzw")
    return {
        "jpg": _save(rgb, "JPEG", quality=85, exif=exif.tobytes()),
        "progressive.jpg": _save(rgb.convert("CMYK"), "JPEG", progressive=True),
        "png": _save(rgb, "PNG"),
        "rgba.png": _save(rgba, "PNG"),
        "palette.png": _save(palette, "PNG"),
        "grey16.png": _save(grey16, "PNG"),
        "webp": _save(rgb, "WEBP", quality=80),
        "bmp": _save(rgb, "BMP"),
        "gif": gif.getvalue(),
        "tiff": tiff.getvalue(),
        "heic": _save(rgb, "HEIF"),
        "avif": _save(rgb, "AVIF"),
    }


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One seeded mutation of ``data``: flipped bytes, a cut, inserted or repeated bytes, a zeroed span, or
    a 4-byte field (a width, a length, an offset) set to an extreme."""
    data = bytearray(data)
    kind = rng.integers(6)
    at = int(rng.integers(len(data)))
    if kind == 0:
        for _ in range(int(rng.integers(1, 9))):
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        del data[at:]
    elif kind == 2:
        data[at:at] = rng.bytes(int(rng.integers(1, 64)))
    elif kind == 3:
        span = data[at:at + int(rng.integers(1, 256))]
        data[at:at] = span * int(rng.integers(1, 4))
    elif kind == 4:
        data[at:at + int(rng.integers(1, 64))] = b"\0" * len(data[at:at + 64])
    else:
        data[at:at + 4] = [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00", b"\x00\x01\x00\x00"][
            int(rng.integers(4))]
    return bytes(data)


ZEROED_STRIDE = 3  # AVIF and HEIC: also every 3rd byte zeroed in turn (their decoders raise RuntimeError)


def pillow_failure(data: bytes) -> str | None:
    """The exception type Pillow itself raises opening, decoding and turning ``data``, or None."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            ImageOps.exif_transpose(im)
    except Exception as err:
        return type(err).__name__
    return None


def test_mutated_pictures_each_get_one_record_and_nothing_escapes(tmp_path):
    from fake_model import FakeModelCaptioner

    rng = np.random.default_rng(SEED)
    folder = tmp_path / "fuzz"
    folder.mkdir()
    names, raised = [], set()
    for fmt, data in seeds().items():
        mutants = [mutate(data, rng) for _ in range(MUTANTS_PER_FORMAT)]
        if fmt in ("avif", "heic"):
            mutants += [data[:at] + b"\0" + data[at + 1:] for at in range(0, len(data), ZEROED_STRIDE)]
        (folder / f"seed.{fmt}").write_bytes(data)
        names.append(f"seed.{fmt}")
        for i, mutant in enumerate(mutants):
            name = f"m{i:03d}.{fmt}"
            (folder / name).write_bytes(mutant)
            names.append(name)
            raised.add(pillow_failure(mutant))
    # the corpus holds what used to escape the per-picture net: errors that are not OSError or ValueError
    assert {"RuntimeError", "OSError", "UnidentifiedImageError", "ValueError"} <= raised, raised
    out = tmp_path / "fuzz.jsonl"
    summary = caption_to_file(FakeModelCaptioner(), [folder], out, batch_size=16, progress=False)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["image"].rsplit("/", 1)[-1] for r in records) == sorted(names)  # each file exactly once
    assert summary.captioned + summary.failed == len(names) > 12 * MUTANTS_PER_FORMAT
    for r in records:
        assert ("caption" in r) != ("error" in r), r
        if "error" in r:
            assert r["image"] in r["error"] and "Traceback" not in r["error"] and "\n" not in r["error"], r
    seeds_ok = [r for r in records if r["image"].rsplit("/", 1)[-1].startswith("seed.")]
    assert all("caption" in r for r in seeds_ok), [r for r in seeds_ok if "error" in r]  # the originals read
    assert summary.failed > 0 and summary.captioned > len(seeds_ok)  # mutations both break and survive
