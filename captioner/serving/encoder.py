"""The Xception image encoder: preprocessed pixels -> pooled 2048-d features (or the 10x10 grid of
2048-d region features that attention decoders look at), compiled once."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import FEATURE_DIM, GRID_SIZE, IMAGE_SIZE


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
        finally:
            keras.config.set_dtype_policy(previous)
        base.load_weights(str(weights_path))
        base.trainable = False
        self.model = base  # (B, 299, 299, 3) -> (B, 10, 10, 2048)
        spec = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)
        # one graph per output kind; pooled = mean over the grid, exactly GlobalAveragePooling2D
        self._forward = tf.function(
            lambda x: tf.reduce_mean(tf.cast(base(x, training=False), tf.float32), axis=[1, 2]),
            input_signature=[spec])
        self._forward_spatial = tf.function(lambda x: tf.cast(base(x, training=False), tf.float32),
                                            input_signature=[spec])

    @classmethod
    def load(cls, weights: str | Path | None = None, allow_download: bool = True) -> "XceptionEncoder":
        """Build the encoder from verified weights (see ``weights.ensure_weights``)."""
        from .weights import ensure_weights

        path, digest = ensure_weights(weights, allow_download=allow_download)
        return cls(path, digest)

    def encode(self, pixels: np.ndarray, batch_size: int = 32, spatial: bool = False) -> np.ndarray:
        """(N, 299, 299, 3) float32 in [-1, 1] -> (N, 2048) pooled features, or with ``spatial``
        (N, 10, 10, 2048) region features; float32 either way."""
        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim != 4 or pixels.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise ValueError(f"expected (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3) pixels, got {pixels.shape}")
        forward = self._forward_spatial if spatial else self._forward
        out = [forward(pixels[i:i + batch_size]).numpy() for i in range(0, len(pixels), batch_size)]
        empty = (0, GRID_SIZE, GRID_SIZE, FEATURE_DIM) if spatial else (0, FEATURE_DIM)
        return np.concatenate(out, axis=0) if out else np.zeros(empty, np.float32)
