"""The Xception image encoder: preprocessed pixels -> pooled 2048-d features, compiled once."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import FEATURE_DIM, IMAGE_SIZE


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
    """

    def __init__(self, weights_path: str | Path, weights_digest: str = "", precision: str = "float32"):
        import keras
        import tensorflow as tf

        from .weights import build_xception

        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be 'float32' or 'bfloat16', not {precision!r}")
        self.weights_digest = weights_digest
        self.precision = precision
        # features differ slightly by precision, so each has its own cache folder
        self.cache_key = weights_digest[:16] + ("" if precision == "float32" else f"-{precision}")
        previous = keras.config.dtype_policy()
        if precision == "bfloat16":  # weights stay float32; convolutions run in bfloat16
            keras.config.set_dtype_policy("mixed_bfloat16")
        try:
            base = build_xception()
            pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
        finally:
            keras.config.set_dtype_policy(previous)
        base.load_weights(str(weights_path))
        self.model = keras.Model(base.input, pooled, name="xception_pooled")
        self.model.trainable = False
        spec = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)
        self._forward = tf.function(lambda x: tf.cast(self.model(x, training=False), tf.float32),
                                    input_signature=[spec])

    @classmethod
    def load(cls, weights: str | Path | None = None, allow_download: bool = True) -> "XceptionEncoder":
        """Build the encoder from verified weights (see ``weights.ensure_weights``)."""
        from .weights import ensure_weights

        path, digest = ensure_weights(weights, allow_download=allow_download)
        return cls(path, digest)

    def encode(self, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """(N, 299, 299, 3) float32 in [-1, 1] -> (N, 2048) float32 pooled features."""
        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim != 4 or pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"expected (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) pixels, got {pixels.shape}")
        out = [self._forward(pixels[i:i + batch_size]).numpy() for i in range(0, len(pixels), batch_size)]
        return np.concatenate(out, axis=0) if out else np.zeros((0, FEATURE_DIM), np.float32)
