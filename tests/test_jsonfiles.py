"""Arrays inside the JSON data files (serving/jsonfiles.py): both encodings round-trip, broken ones are
refused with a clear error, and every committed data file under models/ still loads and re-encodes to
exactly its stored arrays."""
from __future__ import annotations

import json

import numpy as np
import pytest

from captioner.serving.jsonfiles import (StoredArrayError, decode_array, encode_array, pack_array, read_json,
                                         require_format, unpack_array)
from conftest import ROOT


def test_raw_arrays_round_trip_through_json():
    a = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(decode_array(encode_array(a, "float32")), a)
    np.testing.assert_allclose(decode_array(encode_array(a, "float16")), a, atol=2e-3)
    counts = np.array([0, 7, 65535], np.uint16)
    assert decode_array(encode_array(counts, "uint16")).dtype == np.uint16
    with pytest.raises(StoredArrayError):
        decode_array({"dtype": "object", "shape": [1], "base64": ""})
    with pytest.raises(StoredArrayError):
        decode_array({"dtype": "float32", "shape": [3], "base64": "AAAA"})  # 3 bytes for 3 floats


@pytest.mark.parametrize("array", [np.arange(-5, 300, dtype=np.int32).reshape(5, -1),
                                   np.array([2 ** 64 - 1, 0, 12345], np.uint64),
                                   np.linspace(0, 1, 7, dtype=np.float16), np.zeros((0, 4), np.uint8)])
def test_packed_arrays_round_trip_exactly(array):
    data = json.loads(json.dumps(pack_array(array)))
    back = unpack_array(data, "x")
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_broken_packed_arrays_name_the_array():
    data = pack_array(np.arange(10, dtype=np.uint16))
    for broken in ({**data, "encoding": "zip"}, {**data, "data": data["data"][:-8]}, {**data, "shape": [11]},
                   {k: v for k, v in data.items() if k != "dtype"}):
        with pytest.raises(StoredArrayError, match="'counts'"):
            unpack_array(broken, "counts")


def test_format_header_and_unreadable_files(tmp_path):
    require_format({"format": "f", "version": 2}, "f", 2, "thing", "x.json", KeyError)
    with pytest.raises(LookupError, match="x.json: not a captioner thing"):
        require_format({"format": "g", "version": 2}, "f", 2, "thing", "x.json", LookupError)
    with pytest.raises(LookupError, match="version 1 is not supported"):
        require_format({"format": "f", "version": 1}, "f", 2, "thing", "x.json", LookupError)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LookupError, match="bad.json: unreadable thing"):
        read_json(tmp_path / "bad.json", "thing", LookupError)


def test_the_committed_data_files_load_and_encode_to_their_stored_arrays():
    """models/domain.json and every neighbours*.json: read with today's code, written back, the same arrays
    (so files written before and after any refactoring are interchangeable)."""
    from captioner.serving.domain import DomainCheck
    from captioner.serving.neighbours import NeighbourIndex

    domain_path = ROOT / "models" / "domain.json"
    stored = json.loads(domain_path.read_text(encoding="utf-8"))
    assert DomainCheck.load(domain_path).to_json() == stored
    paths = sorted((ROOT / "models").glob("neighbours*.json"))
    assert paths, "no committed neighbour index"
    for path in paths:
        stored = json.loads(path.read_text(encoding="utf-8"))
        again = NeighbourIndex.load(path).to_json()
        assert again["references"] == stored["references"], path
        assert again["coords"] == stored["coords"], path
