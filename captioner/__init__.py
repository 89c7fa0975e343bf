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
    features: np.ndarray | None = field(default=None, repr=False)  # kept only when asked for

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        return self.captions[0].text if self.captions else ""


class Captioner:
    """Encoder + decoder + vocabulary, loaded once and reused for every image."""

    def __init__(self, encoder, checkpoint):
        from .decoders import checkpoint_stepper

        self.encoder = encoder
        self.checkpoint = checkpoint
        self.vocab = checkpoint.vocab
        self.stepper = checkpoint_stepper(checkpoint)

    @property
    def feature_kind(self) -> str:
        """"spatial" (10x10 region grids) for attention decoders, else "pooled" (2048-d vectors)."""
        return "spatial" if getattr(self.stepper, "needs_spatial", False) else "pooled"

    @property
    def has_attention(self) -> bool:
        """True when the decoder can show where it looked (a single attention model, not an ensemble)."""
        return self.feature_kind == "spatial" and hasattr(self.stepper, "attention")

    def attention_maps(self, features: np.ndarray, caption: "Caption") -> np.ndarray:
        """For attention models: (words, g, g) weights showing where the model looked for each word of
        ``caption``, given the image's (10, 10, 2048) features (``encode``)."""
        if not self.has_attention:
            raise ValueError("this model has no attention (it is a merge decoder)")
        ids = self.vocab.encode(caption.text)[1:-1]  # without <start> and <end>
        return self.stepper.attention(features, ids, self.vocab.start_id)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """(B, 299, 299, 3) preprocessed pixels -> the features this model's decoder reads."""
        return self.encoder.encode(pixels, spatial=self.feature_kind == "spatial")

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
        """(B, 2048) pooled features (or (B, 10, 10, 2048) for attention models) -> B lists of captions."""
        from .decoding import SuppressWords, decode_batch

        decode = decode or DecodeConfig(length_alpha=self.checkpoint.length_alpha)
        decode.validate()
        stepper = self.stepper if decode.allow_unk else SuppressWords(self.stepper, [self.vocab.unk_id])
        hyps = decode_batch(stepper, features, self.vocab.start_id, self.vocab.end_id,
                            decode.beam_width, decode.max_words, decode.length_alpha, decode.n_best,
                            decode.block_ngram)
        return [[Caption(self.vocab.decode(h.ids), h.log_prob, h.score) for h in per_image] for per_image in hyps]

    def caption(self, images: Sequence[ImageSource], beam_width: int = 3, n_best: int = 1, max_words: int = 30,
                names: Sequence[str] | None = None, length_alpha: float | None = None,
                keep_features: bool = False, block_ngram: int = DecodeConfig.block_ngram) -> list[CaptionResult]:
        """Caption several images (paths, bytes, file objects or PIL images) in one encoder batch.

        An image that cannot be read gets ``result.error`` and the others are still captioned.
        ``length_alpha`` defaults to the checkpoint's tuned value (``decoding.json``). With
        ``keep_features`` each result keeps its image features (for ``attention_maps``). ``block_ngram``
        n keeps a caption from repeating its own n-grams (0 allows it).
        """
        alpha = self.checkpoint.length_alpha if length_alpha is None else length_alpha
        decode = DecodeConfig(beam_width=beam_width, n_best=n_best, max_words=max_words, length_alpha=alpha,
                              block_ngram=block_ngram)
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
            features = self.encode(np.stack(pixels))
            captions = self.caption_features(features, decode)
            if keep_features:
                for index, f in zip(readable, features):
                    results[index].features = f
            share = (time.perf_counter() - start) / len(readable)
            for index, caps in zip(readable, captions):
                results[index].captions = caps
                results[index].seconds += share
        return results


__all__ = ["Captioner", "Caption", "CaptionResult", "DecodeConfig", "ImageError", "__version__"]
