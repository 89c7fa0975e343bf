"""The Xception encoder on OpenVINO (float32, CPU): the frozen Keras model converted once to OpenVINO IR.

The IR (``.xml`` + ``.bin``) is cached beside the weights (``weights.cache_dir()/openvino``), named by the
Xception weights' sha256 and the OpenVINO version, with a sidecar holding the sha256 of both files: other
weights or another OpenVINO mean another IR; a corrupt or half-written IR is rebuilt (with a log line).
Conversion runs locally from the Keras model (no download). The IR has two outputs, ``pooled`` (B, 2048)
and ``spatial`` (B, 10, 10, 2048), and a dynamic batch dimension.

An **int8** IR can be built from it once with ``python -m captioner quantize`` (NNCF post-training
quantisation on Flickr8k training images; ``quantize_ir``), cached beside it with its own digest file.
It is 2.7-3x faster and changes a quarter of the captions (dev figures in docs/PERFORMANCE.md).
**bfloat16** compiles the float32 IR with ``INFERENCE_PRECISION_HINT=bf16`` (nothing to build): about 4x
faster on CPUs with AMX, slower on CPUs with AVX512-BF16 alone. Which precision runs by default is
decided per CPU and model by ``precision.py``'s self-check (``--precision auto``).

``XceptionEncoder(backend="openvino")`` uses this; callers never need it directly.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import numpy as np

from ..config import IMAGE_SIZE

PERFORMANCE_HINT = "LATENCY"  # one stream over all cores: the app captions one picture at a time
# Largest batch one inference runs: past it the activations outgrow the caches and every image gets
# slower (docs/PERFORMANCE.md, "The encoder"), so bigger batches are split.
MAX_BATCH = 8
# The same limit per precision (``MAX_BATCH`` for any not named); see docs/PERFORMANCE.md "Precision per CPU".
MAX_BATCH_BY_PRECISION = {"float32": MAX_BATCH, "bfloat16": MAX_BATCH, "int8": MAX_BATCH}
# OpenVINO's INFERENCE_PRECISION_HINT for each precision (int8 is in the IR itself; its other layers run f32)
HINTS = {"float32": "f32", "bfloat16": "bf16", "int8": "f32"}
conversions = 0  # Keras -> IR conversions done in this process (tests check the cache is reused)


class OpenVINOUnavailable(RuntimeError):
    """OpenVINO is not installed, or could not convert or compile the encoder; the message says which."""


# Rebuilding a cached IR is worth a line on stderr even where logging is not configured: a warning.
_log = logging.getLogger(__name__).warning


def import_openvino():
    """The ``openvino`` module, or OpenVINOUnavailable saying why not."""
    try:
        import openvino
    except Exception as err:  # ImportError, or a broken install raising anything at import
        raise OpenVINOUnavailable(f"the openvino package does not import ({type(err).__name__}: {err})") from err
    return openvino


def openvino_version() -> str:
    """``2026.4.1-22982``-style version of the installed OpenVINO ("" when it does not import)."""
    try:
        return "-".join(import_openvino().__version__.split("-")[:2])
    except OpenVINOUnavailable:
        return ""


def short_version(version: str) -> str:
    return re.sub(r"[^0-9A-Za-z.]+", "_", "-".join(version.split("-")[:2]))


def ir_path(weights_digest: str, version: str) -> Path:
    """Where the IR for these weights and this OpenVINO version lives (the ``.xml``; ``.bin`` beside it)."""
    from .weights import cache_dir

    return cache_dir() / "openvino" / f"xception-{weights_digest[:16]}-ov{short_version(version)}.xml"


def int8_ir_path(weights_digest: str, version: str) -> Path:
    """Where the int8 IR (``python -m captioner quantize``) for these weights and this OpenVINO lives."""
    xml = ir_path(weights_digest, version)
    return xml.with_name(f"{xml.stem}-int8.xml")


QUANTIZE_FIX = "build it once with `python -m captioner quantize --data DIR` (needs `pip install nncf` and Flickr8k training images)"


def quantize_ir(get_model, weights_digest: str, images: list[np.ndarray], log=_log) -> Path:
    """NNCF post-training quantisation of the float32 IR on ``images`` ((1, 299, 299, 3) preprocessed
    pixels each; training images, never dev): saves the int8 IR and its digest file atomically."""
    ov = import_openvino()
    try:
        import nncf
    except ImportError as err:
        raise OpenVINOUnavailable(f"quantising needs NNCF: `pip install nncf` ({err})") from err

    source = ensure_ir(get_model, weights_digest, log)
    xml = int8_ir_path(weights_digest, ov.__version__)
    model = nncf.quantize(ov.Core().read_model(str(source)), nncf.Dataset(images), subset_size=len(images),
                          preset=nncf.QuantizationPreset.PERFORMANCE)
    _save_ir(model, xml, {"weights_sha256": weights_digest, "openvino": ov.__version__, "nncf": nncf.__version__,
                          "calibration_images": len(images)})
    return xml


def _save_ir(model, xml: Path, facts: dict) -> None:
    """Save an OpenVINO model as ``xml`` + ``.bin`` (float32 weights kept) with its digest file, atomically:
    a crash never leaves a pair that passes the digest check half-written."""
    from .weights import sha256_of

    ov = import_openvino()
    xml.parent.mkdir(parents=True, exist_ok=True)
    tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.tmp.xml")
    try:
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        digests = {**facts, "xml_sha256": sha256_of(tmp), "bin_sha256": sha256_of(tmp.with_suffix(".bin"))}
        _sidecar(xml).unlink(missing_ok=True)  # no sidecar while the pair is being replaced
        _check_record(xml).unlink(missing_ok=True)
        tmp.with_suffix(".bin").replace(xml.with_suffix(".bin"))
        tmp.replace(xml)
        _sidecar(xml).write_text(json.dumps(digests) + "\n")
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".bin").unlink(missing_ok=True)


def _sidecar(xml: Path) -> Path:
    return xml.with_suffix(".sha256.json")


def _check_record(xml: Path) -> Path:
    return xml.with_suffix(".check.json")


def machine_key() -> str:
    """The CPU as the self-check records it (the check is redone on another CPU)."""
    from ..machine import describe_machine, format_machine

    return format_machine(describe_machine())


def checked_here(xml: Path) -> float | None:
    """The cosine recorded when this very IR passed the self-check on this CPU, else None."""
    try:
        record = json.loads(_check_record(xml).read_text())
        sidecar = json.loads(_sidecar(xml).read_text())
    except (OSError, ValueError):
        return None
    if record.get("machine") != machine_key() or record.get("bin_sha256") != sidecar.get("bin_sha256"):
        return None
    return float(record.get("cosine", 0.0))


def record_check(xml: Path, cosine: float) -> None:
    """Remember that this IR passed the self-check on this CPU, so later loads skip the TensorFlow pass."""
    try:
        sidecar = json.loads(_sidecar(xml).read_text())
        _check_record(xml).write_text(json.dumps({"machine": machine_key(), "cosine": cosine,
                                                  "bin_sha256": sidecar.get("bin_sha256")}) + "\n")
    except (OSError, ValueError):
        pass  # only an optimisation: the check runs again next time


def _check_ir(xml: Path, weights_digest: str) -> str | None:
    """None when the cached IR is complete and unchanged, else why not ("" when there is none at all)."""
    from .weights import sha256_of

    bin_ = xml.with_suffix(".bin")
    if not xml.is_file() and not bin_.is_file() and not _sidecar(xml).is_file():
        return ""
    try:
        expected = json.loads(_sidecar(xml).read_text())
    except (OSError, ValueError) as err:
        return f"no readable digest file ({type(err).__name__})"
    if expected.get("weights_sha256") != weights_digest:
        return "it was converted from other weights"
    for path in (xml, bin_):
        if not path.is_file():
            return f"{path.name} is missing"
        if sha256_of(path) != expected.get(path.suffix.lstrip(".") + "_sha256"):
            return f"{path.name} does not match its sha256"
    return None


def _convert(get_model, xml: Path, weights_digest: str) -> None:
    """Convert the Keras Xception to IR with both outputs and save it atomically with its digest file."""
    global conversions
    import tensorflow as tf

    ov = import_openvino()
    keras_model = get_model()

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)])
    def both(x):
        grid = tf.cast(keras_model(x, training=False), tf.float32)
        return {"pooled": tf.reduce_mean(grid, axis=[1, 2]), "spatial": grid}

    model = ov.convert_model(both.get_concrete_function())
    _save_ir(model, xml, {"weights_sha256": weights_digest, "openvino": ov.__version__})
    conversions += 1


def ensure_ir(get_model, weights_digest: str, log=_log) -> Path:
    """The cached IR for these weights (converted now if missing, from other weights, or corrupt);
    ``get_model()`` gives the Keras Xception, and is called only to convert."""
    ov = import_openvino()
    xml = ir_path(weights_digest, ov.__version__)
    problem = _check_ir(xml, weights_digest)
    if problem is None:
        return xml
    if problem:
        log(f"captioner: OpenVINO IR {xml} is unusable ({problem}); converting the encoder again")
    try:
        _convert(get_model, xml, weights_digest)
    except OpenVINOUnavailable:
        raise
    except Exception as err:  # the converter raises many types
        raise OpenVINOUnavailable(f"converting Xception to OpenVINO IR failed ({type(err).__name__}: {err})") from err
    return xml


class OpenVINOXception:
    """The compiled IR: ``run(pixels, spatial)`` -> float32 features, as ``XceptionEncoder.encode`` returns.

    ``precision="int8"`` compiles the quantised IR, which must have been built (``quantize_ir``);
    ``precision="bfloat16"`` compiles the float32 IR with OpenVINO's bf16 inference hint."""

    def __init__(self, get_model, weights_digest: str, log=_log, precision: str = "float32"):
        ov = import_openvino()
        if precision == "int8":
            xml = int8_ir_path(weights_digest, ov.__version__)
            problem = _check_ir(xml, weights_digest)
            if problem is not None:
                raise OpenVINOUnavailable(f"no usable int8 encoder at {xml} ({problem or 'not built yet'}): {QUANTIZE_FIX}")
        else:
            xml = ensure_ir(get_model, weights_digest, log)
        self.version = ov.__version__
        self.ir_path = xml
        if precision not in HINTS:
            raise ValueError(f"OpenVINO encoder precision must be one of {', '.join(HINTS)}, not {precision!r}")
        self.precision = precision
        self.max_batch = MAX_BATCH_BY_PRECISION.get(precision, MAX_BATCH)
        config = {"PERFORMANCE_HINT": PERFORMANCE_HINT, "INFERENCE_PRECISION_HINT": HINTS[precision]}
        try:
            self.compiled = ov.Core().compile_model(str(xml), "CPU", config)
        except Exception as first:  # a verified IR that still fails to load: rebuild it once
            if precision == "int8":
                raise OpenVINOUnavailable(f"compiling the int8 encoder {xml} failed ({type(first).__name__}: "
                                          f"{first}); {QUANTIZE_FIX}") from first
            log(f"captioner: OpenVINO could not compile {xml} ({type(first).__name__}: {first}); converting again")
            try:
                _convert(get_model, xml, weights_digest)
                self.compiled = ov.Core().compile_model(str(xml), "CPU", config)
            except Exception as err:
                raise OpenVINOUnavailable(f"compiling the OpenVINO encoder failed ({type(err).__name__}: {err})") from err
        self._outputs = {"pooled": self.compiled.output("pooled"), "spatial": self.compiled.output("spatial")}

    def run(self, pixels: np.ndarray, spatial: bool = False) -> np.ndarray:
        """(N, 299, 299, 3) pixels -> features, ``self.max_batch`` images per inference; a fresh infer request
        per call, so concurrent callers (API threads) never share one."""
        request, output, out = self.compiled.create_infer_request(), self._outputs["spatial" if spatial else "pooled"], []
        for start in range(0, len(pixels), self.max_batch):
            request.infer([np.ascontiguousarray(pixels[start:start + self.max_batch], dtype=np.float32)])
            out.append(np.array(request.get_tensor(output).data, np.float32))
        return np.concatenate(out) if len(out) != 1 else out[0]
