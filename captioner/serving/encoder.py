"""The Xception image encoder: preprocessed pixels -> pooled 2048-d features (or the 10x10 grid of
2048-d region features that attention decoders look at), compiled once."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..config import FEATURE_DIM, GRID_SIZE, IMAGE_SIZE


BACKENDS = ("auto", "openvino", "tensorflow")
# What XceptionEncoder.load uses when neither its ``backend`` nor CAPTIONER_BACKEND says otherwise.
DEFAULT_BACKEND = "auto"  # OpenVINO float32 where it works: same captions, faster (bench figure h)
SELF_CHECK_COSINE = 0.9999  # "auto" keeps OpenVINO only when its features match TensorFlow's this closely
PRECISIONS = ("float32", "bfloat16", "int8")  # int8: OpenVINO only, after `python -m captioner quantize`
# What --precision / CAPTIONER_PRECISION accept: "auto" lets Captioner.load pick per CPU and model
# (serving/precision.py); an encoder loaded on its own (training, features) runs float32 for "auto".
PRECISION_CHOICES = ("auto",) + PRECISIONS
DEFAULT_PRECISION = "auto"


# Falling back from OpenVINO to TensorFlow is worth a line even where logging is not configured: a warning.
_log = logging.getLogger(__name__).warning


def resolve_backend(backend: str | None = None) -> str:
    """``backend``, else ``$CAPTIONER_BACKEND``, else DEFAULT_BACKEND; ValueError for an unknown name."""
    choice = (backend or os.environ.get("CAPTIONER_BACKEND") or DEFAULT_BACKEND).strip().lower()
    if choice not in BACKENDS:
        raise ValueError(f"encoder backend must be one of {', '.join(BACKENDS)}, not {choice!r}"
                         + ("" if backend else " (from CAPTIONER_BACKEND)"))
    return choice


def resolve_precision(precision: str | None = None) -> str:
    """``precision``, else ``$CAPTIONER_PRECISION``, else DEFAULT_PRECISION ("auto"); ValueError for an
    unknown name."""
    choice = (precision or os.environ.get("CAPTIONER_PRECISION") or DEFAULT_PRECISION).strip().lower()
    if choice not in PRECISION_CHOICES:
        raise ValueError(f"encoder precision must be one of {', '.join(PRECISION_CHOICES)}, not {choice!r}"
                         + ("" if precision else " (from CAPTIONER_PRECISION)"))
    return choice


def bf16_supported() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere it would be slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class XceptionEncoder:
    """Frozen ImageNet Xception-notop with global average pooling.

    ``encode`` runs a ``tf.function`` with a fixed input signature, so any batch size reuses
    one traced graph instead of re-tracing (or falling back to ``model.predict`` overheads).

    ``backend``: "tensorflow" (that tf.function), "openvino" (the same model converted to OpenVINO IR,
    float32, bfloat16 or int8; raises OpenVINOUnavailable when it cannot be used) or "auto" (OpenVINO when it imports,
    converts, compiles and matches TensorFlow on a check image, else TensorFlow with one log line saying
    why). ``self.backend`` says which one runs; ``self.backend_note`` why, for "auto".
    """

    def __init__(self, weights_path: str | Path, weights_digest: str = "", precision: str = "float32",
                 backend: str = "tensorflow", log=_log):
        precision = "float32" if precision == "auto" else precision  # alone, there is no model to check
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if precision == "int8" and backend == "tensorflow":
            raise ValueError("the int8 encoder runs on OpenVINO: use backend 'openvino' or 'auto'")
        self.weights_path = Path(weights_path)
        self.weights_digest = weights_digest
        self.precision = precision
        self.precision_note = ""  # why this precision runs, when Captioner.load chose it ("auto")
        # features differ slightly by precision, so each has its own cache folder (OpenVINO float32 shares
        # TensorFlow float32's: they agree to float rounding: figure h in docs/PERFORMANCE.md)
        self.cache_key = weights_digest[:16] + ("" if precision == "float32" else f"-{precision}")
        self._model = None
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        if backend == "tensorflow":
            self._build_tensorflow()  # OpenVINO builds the Keras model only when it must convert or check
        self.backend, self.backend_note, self._openvino = "tensorflow", "", None
        if precision == "int8":  # asked for by name: no silent fallback to another precision
            self._use_openvino(log)
            self.backend_note = "OpenVINO int8 (NNCF post-training quantisation)"
        elif backend == "openvino":
            self._use_openvino(log)
        elif backend == "auto":
            self._auto(log)

    def _build_tensorflow(self) -> None:
        import keras
        import tensorflow as tf

        from .weights import build_xception

        previous = keras.config.dtype_policy()
        if self.precision == "bfloat16":  # weights stay float32; convolutions run in bfloat16
            keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            base = build_xception()
        finally:
            keras.config.set_dtype_policy(previous)
        base.load_weights(str(self.weights_path))
        base.trainable = False
        self._model = base  # (B, 299, 299, 3) -> (B, 10, 10, 2048)
        spec = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)
        # one graph per output kind; pooled = mean over the grid, exactly GlobalAveragePooling2D
        self._forward_pooled = tf.function(
            lambda x: tf.reduce_mean(tf.cast(base(x, training=False), tf.float32), axis=[1, 2]),
            input_signature=[spec])
        self._forward_grid = tf.function(lambda x: tf.cast(base(x, training=False), tf.float32),
                                         input_signature=[spec])

    def _float32_keras(self):
        """A float32 Keras Xception with these weights (to convert the IR from, whatever runs here)."""
        from .weights import build_xception

        base = build_xception()
        base.load_weights(str(self.weights_path))
        return base

    @property
    def model(self):
        """The frozen Keras Xception-notop (built on first use when OpenVINO runs the encoder)."""
        if self._model is None:
            self._build_tensorflow()
        return self._model

    @property
    def _forward(self):
        self.model
        return self._forward_pooled

    @property
    def _forward_spatial(self):
        self.model
        return self._forward_grid

    def _use_openvino(self, log) -> None:
        from .openvino_encoder import OpenVINOXception

        # the IR is always converted from the float32 Keras model (a bfloat16 one would bake bf16 into it)
        source = (lambda: self.model) if self.precision == "float32" else self._float32_keras
        self._openvino = OpenVINOXception(source, self.weights_digest, log, self.precision)
        self.backend = "openvino"
        if self.precision == "bfloat16":  # OpenVINO's bf16 rounds differently from TensorFlow's mixed_bfloat16
            self.cache_key = f"{self.weights_digest[:16]}-bfloat16-openvino"

    def _auto(self, log) -> None:
        """OpenVINO when it works here and agrees with TensorFlow on one check image, else TensorFlow."""
        from .openvino_encoder import OpenVINOUnavailable

        if self.precision == "bfloat16":  # asked for by name: OpenVINO's bf16, else TensorFlow's
            try:
                self._use_openvino(log)
                self.backend_note = "auto: OpenVINO with its bfloat16 inference hint"
                return
            except Exception as err:  # OpenVINOUnavailable or anything its compiler raises
                why = f"OpenVINO bfloat16 failed ({type(err).__name__}: {err})"
        else:
            try:
                self._use_openvino(log)
                why = self._self_check()
            except OpenVINOUnavailable as err:
                why = str(err)
            except Exception as err:  # anything else OpenVINO raises: TensorFlow still works
                why = f"OpenVINO failed ({type(err).__name__}: {err})"
            if why is None:
                self.backend_note = "auto: OpenVINO float32 matches TensorFlow on the check image"
                return
        self.backend, self._openvino = "tensorflow", None
        self.model  # build it now, so bad weights fail here as they do without OpenVINO
        self.backend_note = f"auto: TensorFlow, because {why}"
        log(f"captioner: encoder backend is TensorFlow, because {why}")

    def _self_check(self) -> str | None:
        """None when OpenVINO's spatial features match TensorFlow's on a fixed image, else why not.

        A pass is recorded beside the IR for this CPU, so later loads of the same IR skip the check."""
        from .openvino_encoder import checked_here, record_check

        xml = self._openvino.ir_path
        recorded = checked_here(xml)
        if recorded is not None and recorded > SELF_CHECK_COSINE:
            return None
        pixels = np.random.default_rng(0).uniform(-1, 1, (1, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
        a = self._forward_spatial(pixels).numpy().ravel().astype(np.float64)
        b = self._openvino.run(pixels, spatial=True).ravel().astype(np.float64)
        cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))
        if not np.isfinite(cos) or cos <= SELF_CHECK_COSINE:
            return f"OpenVINO's features differ from TensorFlow's (cosine {cos:.6f} <= {SELF_CHECK_COSINE})"
        record_check(xml, cos)
        return None

    @classmethod
    def load(cls, weights: str | Path | None = None, allow_download: bool = True,
             backend: str | None = None, precision: str | None = None) -> "XceptionEncoder":
        """Build the encoder from verified weights (see ``weights.ensure_weights``) on ``backend``
        (default: ``$CAPTIONER_BACKEND``, else DEFAULT_BACKEND) at ``precision`` (default:
        ``$CAPTIONER_PRECISION``, else "auto", which is float32 for an encoder loaded on its own)."""
        from .weights import ensure_weights

        backend, precision = resolve_backend(backend), resolve_precision(precision)
        precision = "float32" if precision == "auto" else precision
        path, digest = ensure_weights(weights, allow_download=allow_download)
        return cls(path, digest, precision=precision, backend=backend)

    def encode(self, pixels: np.ndarray, batch_size: int = 32, spatial: bool = False) -> np.ndarray:
        """(N, 299, 299, 3) float32 in [-1, 1] -> (N, 2048) pooled features, or with ``spatial``
        (N, 10, 10, 2048) region features; float32 either way."""
        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim != 4 or pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"expected (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) pixels, got {pixels.shape}")
        if self._openvino is not None:
            out = [self._openvino.run(pixels[i:i + batch_size], spatial) for i in range(0, len(pixels), batch_size)]
        else:
            forward = self._forward_spatial if spatial else self._forward
            out = [forward(pixels[i:i + batch_size]).numpy() for i in range(0, len(pixels), batch_size)]
        empty = (0, GRID_SIZE, GRID_SIZE, FEATURE_DIM) if spatial else (0, FEATURE_DIM)
        return np.concatenate(out, axis=0) if out else np.zeros(empty, np.float32)


def feature_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, ...) feature arrays: how backends, precisions and image
    decodings are compared (bench/run.py, experiments/)."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
