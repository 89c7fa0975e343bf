"""``--precision auto``: the chooser (fake timings and cosines), the per-CPU cache, the fallback of a failing
candidate, float32 staying bit-identical to the plain OpenVINO float32 encoder, and ``info``'s report."""
from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest

from captioner.serving import precision as P
from captioner.serving.precision import Trial, choose

ALL = {"float32": "", "bfloat16": "", "int8": ""}


def test_the_fastest_acceptable_candidate_wins():
    trials = {"float32": Trial(ms=60.0), "bfloat16": Trial(ms=15.0, cosine=0.9998, same_captions=True),
              "int8": Trial(ms=24.0, cosine=0.99, same_captions=False)}
    choice = choose(ALL, trials)
    assert choice.precision == "bfloat16" and "4.00x" in choice.reason
    assert choice.verdicts["int8"].startswith("acceptable")  # int8 need not give identical captions
    trials["int8"].ms = 10.0
    assert choose(ALL, trials).precision == "int8"
    # a candidate the CPU or model does not allow is never chosen, however fast its (stale) trial
    assert choose({**ALL, "int8": "the CPU has neither VNNI nor AMX-INT8"}, trials).precision == "bfloat16"


@pytest.mark.parametrize("bad", [
    {"bfloat16": Trial(ms=15.0, cosine=0.995, same_captions=True)},   # features drift
    {"bfloat16": Trial(ms=15.0, cosine=0.9999, same_captions=False)},  # captions change
    {"bfloat16": Trial(ms=57.0, cosine=0.9999, same_captions=True)},   # within timing noise
    {"bfloat16": Trial(ms=180.0, cosine=0.9999, same_captions=True)},  # slower (AVX512-BF16 without AMX)
    {"int8": Trial(ms=20.0, cosine=0.80, same_captions=False)},        # a broken int8 IR
    {"int8": Trial(ms=20.0, cosine=float("nan"), same_captions=False)},
], ids=["cosine", "captions", "noise", "slower", "int8-cosine", "nan"])
def test_a_candidate_that_drifts_or_does_not_pay_is_refused(bad):
    name = next(iter(bad))
    choice = choose(ALL, {"float32": Trial(ms=60.0), **bad})
    assert choice.precision == "float32"
    assert choice.verdicts[name].startswith("refused")


def test_a_failing_candidate_is_not_chosen_and_float32_needs_a_timing():
    choice = choose(ALL, {"float32": Trial(ms=60.0), "bfloat16": Trial(error="RuntimeError: no bf16 kernel")})
    assert choice.precision == "float32" and "no bf16 kernel" in choice.verdicts["bfloat16"]
    assert choose(ALL, {"float32": Trial(error="boom")}).precision == "float32"


class _FakeOpenVINO:
    def __init__(self, scale=1.0):
        self.scale = scale

    def run(self, pixels, spatial=False):
        time.sleep(0.001)  # a measurable time per inference
        return pixels.reshape(len(pixels), -1)[:, :8].astype(np.float32) * self.scale + 1.0


class _FakeCaptioner:
    """Enough of a Captioner for the self-check: an encoder with an OpenVINO model and decoders."""

    feature_kind = "pooled"

    def __init__(self):
        from types import SimpleNamespace

        self.encoder = SimpleNamespace(_openvino=_FakeOpenVINO(), weights_digest="0" * 64, _float32_keras=None,
                                       backend="openvino", backend_note="", precision="float32", precision_note="")

    def default_decode(self):
        return None

    def caption_features(self, features, decode):
        from types import SimpleNamespace

        return [[SimpleNamespace(tokens="a dog" if f.sum() > 0 else "a cat")] for f in features]


def test_a_failing_candidate_falls_back_with_one_log_line(monkeypatch, caplog):
    import captioner.serving.openvino_encoder as ov

    class Broken:
        def __init__(self, *args, precision="float32", **kw):
            if precision == "bfloat16":
                raise ov.OpenVINOUnavailable("compiling with the bf16 hint failed")
            self.model = _FakeOpenVINO(scale=1.001)

        def run(self, pixels, spatial=False):
            return self.model.run(pixels, spatial)

    monkeypatch.setattr(ov, "OpenVINOXception", Broken)
    pixels = np.random.default_rng(0).uniform(0, 1, (2, 4, 4, 3)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="captioner.serving.precision"):
        trials = P.self_check(_FakeCaptioner(), ALL, pixels)
    lines = [r for r in caplog.records if "bfloat16" in r.getMessage()]
    assert len(lines) == 1 and "failed its self-check" in lines[0].getMessage()
    assert "bf16 hint" in trials["bfloat16"].error and trials["bfloat16"].ms is None
    assert trials["int8"].cosine > 0.999 and trials["int8"].ms is not None and trials["float32"].ms is not None
    assert choose(ALL, trials).verdicts["bfloat16"].startswith("failed")


def test_a_chosen_precision_that_fails_to_load_falls_back_to_float32(monkeypatch, caplog):
    monkeypatch.setattr(P, "auto_precision", lambda *a: ("int8", "auto: int8, 2.6x", None))
    loaded = []

    def load(folder, weights, precision, **kw):
        loaded.append(precision)
        if precision == "int8":
            raise RuntimeError("int8 IR vanished")
        return _FakeCaptioner()

    with caplog.at_level(logging.INFO, logger="captioner.serving.precision"):
        captioner = P.load_auto(load, "models/x", None, False, None, None)
    assert loaded == ["int8", "float32"]
    assert captioner.encoder.precision_note.startswith("auto: float32, because int8 failed to load")
    assert len([r for r in caplog.records if "int8" in r.getMessage()]) == 1


def test_candidates_follow_the_cpu_flags_and_the_model_verdict(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path / "cache"))  # no int8 IR there
    folder = tmp_path / "model"
    folder.mkdir()
    amd = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
    got = P.candidates(folder, "0" * 64, amd, ["FP32", "BF16", "INT8"])
    assert got["float32"] == got["bfloat16"] == "" and "never measured" in got["int8"]
    assert "AVX512-BF16" in P.candidates(folder, "0" * 64, {"avx2"}, ["FP32", "BF16"])["bfloat16"]
    assert "VNNI" in P.candidates(folder, "0" * 64, {"avx2"}, ["FP32", "BF16"])["int8"]
    assert "OpenVINO reports" in P.candidates(folder, "0" * 64, amd, ["FP32"])["bfloat16"]
    (folder / P.PRECISION_FILE).write_text(json.dumps({"int8": {"auto": True}}))
    assert "not built" in P.candidates(folder, "0" * 64, amd, ["FP32", "BF16"])["int8"]
    (folder / P.PRECISION_FILE).write_text(json.dumps({"int8": {"auto": False, "why": "drifted: ece 0.02"}}))
    assert "ece 0.02" in P.candidates(folder, "0" * 64, amd, ["FP32", "BF16"])["int8"]


def test_the_cache_is_keyed_by_cpu_and_model(tmp_path, monkeypatch):
    monkeypatch.setattr(P, "cache_folder", lambda: tmp_path)
    ident = {"cpu": "AMD EPYC", "arch": "x86_64", "flags": ["avx512_bf16"], "openvino": "2026.4.1",
             "model": "merge-ensemble", "model_sha256": "a" * 64, "weights_sha256": "b" * 64, "int8_ir_sha256": ""}
    identities = iter([ident, ident, {**ident, "cpu": "Intel Xeon", "flags": ["amx_bf16"]},
                       {**ident, "model_sha256": "c" * 64}])
    monkeypatch.setattr(P, "identity", lambda folder, digest: next(identities))
    monkeypatch.setattr("captioner.serving.weights.ensure_weights", lambda *a, **k: ("w.h5", "b" * 64))
    monkeypatch.setattr(P, "candidates", lambda folder, digest: ALL)
    checks = []

    def fake_check(captioner, cands):
        checks.append(1)
        return {"float32": Trial(ms=60.0), "bfloat16": Trial(ms=20.0, cosine=0.9999, same_captions=True)}

    monkeypatch.setattr(P, "self_check", fake_check)

    def auto():
        return P.auto_precision(lambda p: _FakeCaptioner(), "models/merge-ensemble", None, False, "openvino")

    first = auto()
    assert first[0] == "bfloat16" and "self-check just now" in first[1] and len(checks) == 1
    second = auto()  # same CPU and model: read back, no new check
    assert second[0] == "bfloat16" and "cached self-check" in second[1] and len(checks) == 1
    auto()  # another CPU
    auto()  # another model
    assert len(checks) == 3 and len(list(tmp_path.glob("*.json"))) == 3
    assert P.cpu_identity("model name\t: Intel Xeon\nflags\t\t: avx2 amx_bf16 amx_int8 sse\n")["flags"] == \
        ["amx_bf16", "amx_int8", "avx2"]


def test_tensorflow_backend_means_float32():
    precision, note, captioner = P.auto_precision(None, "models/x", None, False, "tensorflow")
    assert (precision, captioner) == ("float32", None) and "TensorFlow" in note


@pytest.fixture(scope="module")
def openvino_here(xception_weights):
    pytest.importorskip("openvino")
    from captioner.serving.openvino_encoder import OpenVINOUnavailable, import_openvino, ir_path

    path, digest = xception_weights
    if not ir_path(digest, import_openvino().__version__).is_file():
        pytest.skip("the cached float32 IR is not built here")
    try:
        import_openvino()
    except OpenVINOUnavailable as err:
        pytest.skip(str(err))
    return path, digest


def test_float32_is_bit_identical_to_the_plain_float32_encoder(openvino_here, monkeypatch):
    """--precision float32 compiles the same IR with the same settings as before auto existed."""
    import openvino as ov

    from captioner import Captioner
    from captioner.serving.images import load_and_preprocess
    from captioner.serving.openvino_encoder import ir_path
    from conftest import ASSETS

    path, digest = openvino_here
    pixels = np.stack([load_and_preprocess(ASSETS / n) for n in ("cat.jpg", "coffee.jpg")])
    compiled = ov.Core().compile_model(str(ir_path(digest, ov.__version__)), "CPU",
                                       {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    request.infer([pixels])
    plain = np.array(request.get_tensor(compiled.output("pooled")).data, np.float32)
    monkeypatch.setenv("CAPTIONER_PRECISION", "float32")
    captioner = Captioner.load(weights=path, allow_download=False, backend="openvino")
    assert captioner.encoder.precision == "float32" and captioner.encoder.precision_note == ""
    ours = captioner.encode(pixels)
    assert ours.dtype == np.float32 and np.array_equal(ours, plain)


def test_info_reports_the_choice(openvino_here, tmp_path, monkeypatch, capsys):
    """A cached self-check for this very CPU and model: info prints its choice, reason and verdicts."""
    from captioner.cli import main
    from captioner.serving.model_folder import default_model_dir

    path, digest = openvino_here
    monkeypatch.setattr(P, "cache_folder", lambda: tmp_path)
    monkeypatch.delenv("CAPTIONER_PRECISION", raising=False)
    folder = default_model_dir()
    ident = P.identity(folder, digest)
    P.write_cached(ident, {"precision": "float32", "reason": "float32: a reason only this test writes",
                           "verdicts": {"float32": "reference, 60.0 ms per image",
                                        "bfloat16": "refused: a verdict only this test writes"},
                           "checked": "2026-01-01"})
    assert main(["info", "--weights", str(path)]) == 0
    out = capsys.readouterr().out
    assert "precision: float32" in out
    assert "precision_note: auto (cached self-check 2026-01-01): float32: a reason only this test writes" in out
    assert "bfloat16: refused: a verdict only this test writes" in out
