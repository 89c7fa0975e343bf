"""The Xception image encoder: preprocessed pixels -> pooled 2048-d features, compiled once."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import FEATURE_DIM, IMAGE_SIZE


class XceptionEncoder:
    """Frozen ImageNet Xception-notop with global average pooling.

    ``encode`` runs a ``tf.function`` with a fixed input signature, so any batch size reuses
    one traced graph instead of re-tracing (or falling back to ``model.predict`` overheads).
    """

    def __init__(self, weights_path: str | Path, weights_digest: str = ""):
        import keras
        import tensorflow as tf

        from .weights import build_xception

        self.weights_digest = weights_digest
        base = build_xception()
        base.load_weights(str(weights_path))
        pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
        self.model = keras.Model(base.input, pooled, name="xception_pooled")
        self.model.trainable = False
        spec = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)
        self._forward = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])

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
