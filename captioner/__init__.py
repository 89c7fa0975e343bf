"""captioner: image captioning with a frozen Xception encoder and an LSTM/GRU decoder.

    from captioner import Captioner
    cap = Captioner.load()                      # shipped checkpoint + cached Xception weights
    [result] = cap.caption(["photo.jpg"], beam_width=3)
    print(result.captions[0].text)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .config import DecodeConfig
from .images import ImageError, ImageSource, load_image, preprocess_image, source_name

__version__ = "0.1.0"


@dataclass
class Caption:
    text: str
    log_prob: float  # total log-probability of the words and <end>
    score: float  # the ranking score (length-normalised log-probability)

    @property
    def probability(self) -> float:
        return float(np.exp(self.log_prob))


@dataclass
class CaptionResult:
    """Captions for one input image, or the reason it could not be captioned."""

    name: str
    captions: list[Caption] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        return self.captions[0].text if self.captions else ""


class Captioner:
    """Encoder + decoder + vocabulary, loaded once and reused for every image."""

    def __init__(self, encoder, checkpoint):
        from .decoders import MergeStepper

        self.encoder = encoder
        self.checkpoint = checkpoint
        self.vocab = checkpoint.vocab
        self.stepper = MergeStepper(checkpoint.model)

    @classmethod
    def load(cls, model_dir: str | Path | None = None, weights: str | Path | None = None,
             allow_download: bool = True) -> "Captioner":
        """Load a model folder (default: the shipped one) and the Xception encoder.

        Raises CheckpointError or WeightsError with a message that says how to fix it.
        """
        from .checkpoint import load_checkpoint
        from .encoder import XceptionEncoder

        checkpoint = load_checkpoint(model_dir)
        return cls(XceptionEncoder.load(weights, allow_download=allow_download), checkpoint)

    def caption_features(self, features: np.ndarray, decode: DecodeConfig | None = None) -> list[list[Caption]]:
        """(B, 2048) pooled features -> B lists of captions, best first."""
        from .decoding import decode_batch

        decode = decode or DecodeConfig(length_alpha=self.checkpoint.length_alpha)
        decode.validate()
        hyps = decode_batch(self.stepper, features, self.vocab.start_id, self.vocab.end_id,
                            decode.beam_width, decode.max_words, decode.length_alpha, decode.n_best)
        return [[Caption(self.vocab.decode(h.ids), h.log_prob, h.score) for h in per_image] for per_image in hyps]

    def caption(self, images: Sequence[ImageSource], beam_width: int = 3, n_best: int = 1, max_words: int = 30,
                names: Sequence[str] | None = None, length_alpha: float | None = None) -> list[CaptionResult]:
        """Caption several images (paths, bytes, file objects or PIL images) in one encoder batch.

        An image that cannot be read gets ``result.error`` and the others are still captioned.
        ``length_alpha`` defaults to the checkpoint's tuned value (``decoding.json``).
        """
        alpha = self.checkpoint.length_alpha if length_alpha is None else length_alpha
        decode = DecodeConfig(beam_width=beam_width, n_best=n_best, max_words=max_words, length_alpha=alpha)
        decode.validate()
        results, pixels, readable = [], [], []
        for i, source in enumerate(images):
            name = names[i] if names else None
            start = time.perf_counter()
            try:
                img = load_image(source, name)
                pixels.append(preprocess_image(img))
                readable.append(len(results))
                results.append(CaptionResult(source_name(source, name), seconds=time.perf_counter() - start))
            except ImageError as err:
                results.append(CaptionResult(source_name(source, name), error=str(err)))
        if readable:
            start = time.perf_counter()
            features = self.encoder.encode(np.stack(pixels))
            captions = self.caption_features(features, decode)
            share = (time.perf_counter() - start) / len(readable)
            for index, caps in zip(readable, captions):
                results[index].captions = caps
                results[index].seconds += share
        return results


__all__ = ["Captioner", "Caption", "CaptionResult", "DecodeConfig", "ImageError", "__version__"]
