"""The JSON data files stored beside the models (``domain.json``, ``neighbours*.json``, each folder's
``confidence.json``): their format header, reading them, and numeric arrays inside them (no pickle).

Two array encodings, both little-endian, both readable with nothing but base64, zlib and a dtype:

* ``encode_array`` / ``decode_array``: ``{"dtype", "shape", "base64"}``, the array's raw bytes
  (the domain check's mean and directions);
* ``pack_array`` / ``unpack_array``: ``{"dtype", "shape", "encoding": "byte-planes+zlib+base64", "data"}``,
  the bytes split into byte planes (all first bytes, then all second bytes, ...) before zlib: the high
  bytes of small numbers compress to almost nothing (the neighbour index's coordinates and n-gram counts).
"""
from __future__ import annotations

import base64
import binascii
import json
import zlib
from pathlib import Path

import numpy as np

PACKING = "byte-planes+zlib+base64"


class StoredArrayError(ValueError):
    """An array inside a JSON file that cannot be decoded (wrong dtype, shape, encoding or data)."""


def require_format(data, fmt: str, version: int, what: str, source: str, error: type[Exception]) -> None:
    """Raise ``error`` naming ``source`` unless ``data`` is a JSON object of format ``fmt`` at ``version``."""
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise error(f"{source}: not a captioner {what} (format {fmt!r} expected)")
    if data.get("version") != version:
        raise error(f"{source}: version {data.get('version')!r} is not supported (expected {version})")


def read_json(path: str | Path, what: str, error: type[Exception]):
    """The parsed JSON at ``path``; ``error`` saying "PATH: unreadable WHAT (why)" when it cannot be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise error(f"{path}: unreadable {what} ({err})") from err


# ------------------------------------------------------------------------------------ raw base64

def encode_array(array: np.ndarray, dtype: str = "float16") -> dict:
    """A numpy array as JSON: ``{"dtype", "shape", "base64"}`` (little-endian bytes; float16 halves the
    file and keeps ~3 significant digits, ample for projections and distances)."""
    array = np.ascontiguousarray(np.asarray(array, dtype=np.dtype(dtype).newbyteorder("<")))
    return {"dtype": dtype, "shape": list(array.shape), "base64": base64.b64encode(array.tobytes()).decode("ascii")}


def decode_array(data: dict) -> np.ndarray:
    """The inverse of ``encode_array``, as float32 (or the stored integer type)."""
    try:
        dtype = np.dtype(data["dtype"]).newbyteorder("<")
        if dtype.kind not in "fiu":
            raise ValueError(f"unsupported dtype {data['dtype']!r}")
        array = np.frombuffer(base64.b64decode(data["base64"]), dtype=dtype).reshape(data["shape"])
    except (KeyError, TypeError, ValueError) as err:
        raise StoredArrayError(f"unreadable stored array ({err})") from err
    return array.astype(np.float32) if dtype.kind == "f" else array.astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------------------- byte planes + zlib

def pack_array(array: np.ndarray) -> dict:
    """A numeric array as JSON: its little-endian bytes split into byte planes (the high bytes of small
    numbers compress to almost nothing), zlib, base64."""
    array = np.ascontiguousarray(array, dtype=np.dtype(array.dtype).newbyteorder("<"))
    planes = array.reshape(-1).view(np.uint8).reshape(-1, array.dtype.itemsize).T
    return {"dtype": array.dtype.name, "shape": list(array.shape), "encoding": PACKING,
            "data": base64.b64encode(zlib.compress(planes.tobytes(), 9)).decode("ascii")}


def unpack_array(data: dict, name: str) -> np.ndarray:
    """The inverse of ``pack_array``, in the stored dtype; StoredArrayError naming the array ``name``."""
    try:
        dtype = np.dtype(data["dtype"]).newbyteorder("<")
        shape = tuple(int(s) for s in data["shape"])
        if dtype.kind not in "iuf" or data.get("encoding") != PACKING:
            raise ValueError(f"unsupported dtype {data['dtype']!r} or encoding {data.get('encoding')!r}")
        raw = np.frombuffer(zlib.decompress(base64.b64decode(data["data"], validate=True)), np.uint8)
        array = np.ascontiguousarray(raw.reshape(dtype.itemsize, -1).T).view(dtype).reshape(shape)
    except (KeyError, TypeError, ValueError, zlib.error, binascii.Error) as err:
        raise StoredArrayError(f"array {name!r}: {err}") from err
    return array.astype(dtype.newbyteorder("="))


def smallest_uint(largest: int):
    """The narrowest unsigned integer type that holds ``largest`` (what packed counts are stored as)."""
    return next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if largest <= np.iinfo(t).max)
