"""A Captioner whose encoder and decoder are stand-ins, so that the real ``Captioner.caption`` (reading,
turning, preprocessing each picture, the per-picture error net, batching) runs in milliseconds."""
from __future__ import annotations

import numpy as np

from captioner import Caption, Captioner, DecodeConfig


class FakeModelCaptioner(Captioner):
    """``Captioner.caption`` as it is; ``encode`` is the mean colour, the 'caption' names it."""

    lang = "en"  # the real one reads the checkpoint's config

    def __init__(self):
        self.confidence = None
        self.confidence_problem = "a fake model has no calibration"
        self.encoded: list[int] = []  # batch sizes the encoder saw

    def default_decode(self, **overrides) -> DecodeConfig:
        return DecodeConfig(**overrides)

    def reranking(self, decode: DecodeConfig) -> str:
        return "score"  # one stand-in caption per picture: nothing to rank

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        assert pixels.shape[1:] == (299, 299, 3) and np.isfinite(pixels).all()
        self.encoded.append(len(pixels))
        return pixels.mean(axis=(1, 2))

    def caption_features(self, features, decode=None, keep_attention=False) -> list[list[Caption]]:
        return [[Caption(f"a picture of mean colour {' '.join(f'{v:.2f}' for v in f)}", -1.0, -0.5)]
                for f in features]
