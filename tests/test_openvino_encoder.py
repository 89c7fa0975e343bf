"""The Xception encoder on OpenVINO float32: same features as TensorFlow, IR cached by the weights' digest,
and TensorFlow whenever OpenVINO cannot be used."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ASSETS, ROOT

pytest.importorskip("openvino")

IMAGES = ["astronaut.jpg", "cat.jpg", "coffee.jpg"]


@pytest.fixture(scope="module")
def ir_cache(tmp_path_factory, xception_weights):
    """A private CAPTIONER_CACHE_DIR for the IR (the weights themselves stay where they are)."""
    folder = tmp_path_factory.mktemp("ov-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAPTIONER_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def encoders(ir_cache, xception_weights):
    from captioner.serving.encoder import XceptionEncoder

    path, digest = xception_weights
    return (XceptionEncoder(path, digest, backend="tensorflow"),
            XceptionEncoder(path, digest, backend="openvino"))


@pytest.fixture(scope="module")
def pixels():
    from captioner.serving.images import load_and_preprocess

    names = [n for n in IMAGES if (ASSETS / n).is_file()] or [p.name for p in sorted(ASSETS.glob("*.jpg"))[:3]]
    return np.stack([load_and_preprocess(ASSETS / n) for n in names])


def _cosines(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("spatial", [False, True], ids=["pooled", "spatial"])
def test_openvino_features_match_tensorflow(encoders, pixels, spatial):
    tf_enc, ov_enc = encoders
    assert (tf_enc.backend, ov_enc.backend) == ("tensorflow", "openvino")
    a, b = tf_enc.encode(pixels, spatial=spatial), ov_enc.encode(pixels, spatial=spatial)
    assert a.shape == b.shape == ((len(pixels), 10, 10, 2048) if spatial else (len(pixels), 2048))
    assert b.dtype == np.float32
    assert _cosines(a, b).min() > 0.9999
    np.testing.assert_allclose(b, a, rtol=0, atol=2e-3 * float(np.abs(a).max()))
    # any batch size, including one image and a ragged last batch
    np.testing.assert_allclose(ov_enc.encode(pixels, batch_size=2, spatial=spatial), b, rtol=1e-5, atol=1e-5)


def test_batches_past_the_largest_inference_are_split(monkeypatch, encoders, pixels):
    from captioner.serving import openvino_encoder

    _, ov_enc = encoders
    whole = ov_enc.encode(pixels)
    monkeypatch.setattr(openvino_encoder, "MAX_BATCH", 2)  # 3 pictures: inferences of 2 and 1
    split = ov_enc.encode(pixels)
    assert split.shape == whole.shape
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-5)


def test_ir_is_cached_reused_and_invalidated_by_the_weights_digest(encoders, ir_cache, xception_weights):
    from captioner.serving import openvino_encoder
    from captioner.serving.encoder import XceptionEncoder

    path, digest = xception_weights
    xml = encoders[1]._openvino.ir_path
    assert xml.parent.parent == ir_cache and xml.is_file() and xml.with_suffix(".bin").is_file()
    before, mtime = openvino_encoder.conversions, xml.stat().st_mtime_ns
    again = XceptionEncoder(path, digest, backend="openvino")
    assert openvino_encoder.conversions == before and xml.stat().st_mtime_ns == mtime  # no new conversion
    assert again._openvino.ir_path == xml

    other = "f" * 64  # as if the weights file had changed
    changed = XceptionEncoder(path, other, backend="openvino")
    assert openvino_encoder.conversions == before + 1
    assert changed._openvino.ir_path != xml and changed._openvino.ir_path.is_file()


def test_corrupt_ir_is_rebuilt_with_a_log_line(encoders, pixels, xception_weights):
    from captioner.serving import openvino_encoder
    from captioner.serving.encoder import XceptionEncoder

    path, digest = xception_weights
    xml = encoders[1]._openvino.ir_path
    with open(xml.with_suffix(".bin"), "r+b") as fh:  # flip some bytes of the weights blob
        fh.seek(1000)
        fh.write(b"\xff" * 64)
    before, lines = openvino_encoder.conversions, []
    rebuilt = XceptionEncoder(path, digest, backend="openvino", log=lines.append)
    assert openvino_encoder.conversions == before + 1
    assert any("unusable" in line and "sha256" in line for line in lines), lines
    np.testing.assert_allclose(rebuilt.encode(pixels[:1]), encoders[1].encode(pixels[:1]), rtol=1e-5, atol=1e-5)


def test_auto_falls_back_to_tensorflow_when_openvino_does_not_import(monkeypatch, encoders, xception_weights):
    from captioner import Captioner
    from captioner.serving.captioner import load_confidence
    from captioner.serving.encoder import XceptionEncoder
    from captioner.serving.model_folder import load_checkpoint

    path, digest = xception_weights
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    lines = []
    fallback = XceptionEncoder(path, digest, backend="auto", log=lines.append)
    assert fallback.backend == "tensorflow" and fallback._openvino is None
    assert len(lines) == 1 and "TensorFlow" in lines[0] and "openvino package does not import" in lines[0], lines

    checkpoint = load_checkpoint()
    confidence, problem = load_confidence(checkpoint.folder)
    images = sorted(ASSETS.glob("*.jpg"))
    texts = []
    for encoder in (fallback, encoders[1]):
        cap = Captioner(encoder, checkpoint, confidence, problem)
        texts.append([r.text for r in cap.caption(images, cap.default_decode(beam_width=3))])
    assert texts[0] == texts[1]


def test_backend_names_are_checked(monkeypatch):
    from captioner.serving.encoder import DEFAULT_BACKEND, resolve_backend

    monkeypatch.delenv("CAPTIONER_BACKEND", raising=False)
    assert resolve_backend() == DEFAULT_BACKEND == "auto"  # OpenVINO where it works (bench figure h)
    monkeypatch.setenv("CAPTIONER_BACKEND", "OpenVINO")
    assert resolve_backend() == "openvino" and resolve_backend("tensorflow") == "tensorflow"
    monkeypatch.setenv("CAPTIONER_BACKEND", "cuda")
    with pytest.raises(ValueError, match="CAPTIONER_BACKEND"):
        resolve_backend()


def test_cli_info_prints_the_backend(encoders, ir_cache, xception_weights):
    path, _ = xception_weights
    env = {**os.environ, "CAPTIONER_CACHE_DIR": str(ir_cache), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-m", "captioner", "info", "--backend", "openvino", "--weights", str(path),
                           "--precision", "float32"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "backend: openvino" in out and "precision: float32" in out
    assert "cpu: " in out and "tensorflow: " in out and "openvino: 20" in out and "model: " in out


def test_int8_encoder_is_built_on_request_checked_and_close_to_float32(ir_cache, encoders, pixels, xception_weights):
    """No int8 IR: a clear error naming the command. Built (here on a handful of images): it loads only at
    precision int8, has its own feature cache, and stays close to float32; a damaged file is refused."""
    from captioner.serving.encoder import XceptionEncoder
    from captioner.serving.openvino_encoder import OpenVINOUnavailable, quantize_ir

    path, digest = xception_weights
    with pytest.raises(OpenVINOUnavailable, match="python -m captioner quantize"):
        XceptionEncoder(path, digest, precision="int8", backend="auto")
    with pytest.raises(ValueError, match="runs on OpenVINO"):
        XceptionEncoder(path, digest, precision="int8", backend="tensorflow")
    float32 = encoders[1]
    xml = quantize_ir(lambda: float32.model, digest, [p[None] for p in pixels])
    assert xml.parent == ir_cache / "openvino" and xml.name.endswith("-int8.xml")
    int8 = XceptionEncoder(path, digest, precision="int8", backend="auto")
    assert int8.backend == "openvino" and int8.cache_key.endswith("-int8") and int8.cache_key != float32.cache_key
    a, b = float32.encode(pixels), int8.encode(pixels)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() > 0.8 and not np.allclose(a, b)  # quantised, and still the same picture
    with open(xml.with_suffix(".bin"), "r+b") as fh:  # one flipped byte
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(OpenVINOUnavailable, match="does not match its sha256"):
        XceptionEncoder(path, digest, precision="int8", backend="auto")
