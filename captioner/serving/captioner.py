"""The ``Captioner`` facade: encoder + decoder + vocabulary, loaded once, captions for any images.

    from captioner import Captioner, DecodeConfig
    cap = Captioner.load()
    [result] = cap.caption(["photo.jpg"], DecodeConfig(beam_width=3))
    print(result.text)        # the caption
    print(result.sentence)    # as shown and spoken: "Probably a dog runs on the grass."
    print(result.assessment)  # confidence, band, in_domain, reason (models with a confidence.json)
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import DecodeConfig
from . import sentence as wording
from .confidence import Assessment, ConfidenceError, ConfidenceModel
from .images import ImageError, ImageSource, load_image, preprocess_image, source_name

THUMBNAIL_SIDE = 640  # longest side of ``CaptionResult.thumbnail``


@dataclass
class Caption:
    text: str  # as people write it in the model's language (English: the decoder's words as they are)
    log_prob: float  # total log-probability of the words and <end>
    score: float  # the ranking score (length-normalised log-probability)
    ids: list[int] = field(default_factory=list)  # the word ids the decoder chose (no <start>/<end>)
    attention: np.ndarray | None = field(default=None, repr=False)  # (words, g, g) where it looked, when kept
    tokens: str = ""  # the decoder's tokens joined by spaces (what BLEU/CIDEr compare); "" = same as text

    def __post_init__(self):
        self.tokens = self.tokens or self.text

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
    thumbnail: object | None = field(default=None, repr=False)  # upright PIL image (<= 640 px), when asked for
    assessment: Assessment | None = None  # how sure the best caption is (None: the model has no calibration)
    lang: str = "en"  # the captions' language (ISO 639-1); hedges and warnings are worded in it

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        """The best caption as its language writes it (``Caption.text``), not the decoder's raw tokens."""
        return self.captions[0].text if self.captions else ""

    @property
    def hedged(self) -> str:
        """The best caption in its band's words, as written prose: "A dog runs." (high), "Probably a dog
        runs." (medium), "Maybe a dog runs." (low); without a calibration, the caption as prose."""
        if not self.captions:
            return ""
        return wording.sentence(self.text, self.lang, self.assessment.band if self.assessment else None)

    @property
    def warning(self) -> str | None:
        """The out-of-domain warning to show and say before the caption, or None."""
        if self.assessment is None or self.assessment.in_domain:
            return None
        return wording.out_of_domain_warning(self.lang)

    @property
    def sentence(self) -> str:
        """The best caption as it is shown, spoken and written everywhere (page, speech, CLI, JSON/CSV, API,
        XMP, alt text): the hedged caption after the out-of-domain warning, as prose (``sentence.py``)."""
        if not self.captions:
            return ""
        sure = self.assessment
        return wording.sentence(self.text, self.lang, sure.band if sure else None, sure.in_domain if sure else True)


class Captioner:
    """Encoder + decoder + vocabulary, loaded once and reused for every image."""

    def __init__(self, encoder, checkpoint, confidence: ConfidenceModel | None = None,
                 confidence_problem: str | None = None):
        self.encoder = encoder
        self.checkpoint = checkpoint
        self.vocab = checkpoint.vocab
        if checkpoint.model is None:  # loaded without Keras: OpenVINO or NumPy steps over the folder's weights
            from .decoders.portable import OpenVINOStepper, portable_stepper

            self.stepper = portable_stepper(checkpoint.folder, vocab_size=len(checkpoint.vocab))
            self.decoder_backend = "openvino" if isinstance(self.stepper, OpenVINOStepper) else "numpy"
        else:
            from .decoders import checkpoint_stepper

            self.stepper, self.decoder_backend = checkpoint_stepper(checkpoint), "tensorflow"
        self.confidence = confidence  # None: captions come without an assessment
        self.confidence_problem = confidence_problem  # why there is no confidence model (for the page and CLI)

    @property
    def lang(self) -> str:
        """The language this model captions in (ISO 639-1, from its config.json)."""
        return self.checkpoint.config.lang

    @property
    def feature_kind(self) -> str:
        """What the decoder reads: "spatial" (10x10 region grids) or "pooled" (2048-d vectors)."""
        return self.checkpoint.family.feature_kind

    @property
    def has_attention(self) -> bool:
        """True when the decoder can show where it looked (a single attention model, not an ensemble)."""
        return self.checkpoint.family.has_attention and not self.checkpoint.is_ensemble

    def default_decode(self, **overrides) -> DecodeConfig:
        """DecodeConfig's defaults with this model's tuned length exponent, plus ``overrides``."""
        return self.checkpoint.default_decode(**overrides)

    def attention_maps(self, caption: Caption) -> np.ndarray:
        """(words, g, g) weights showing where the model looked for each word of ``caption``, as recorded by
        the decode that chose those words (caption with ``keep_attention=True``)."""
        if not self.has_attention:
            raise ValueError("this model has no attention (it is not a single attention decoder)")
        if caption.attention is None:
            raise ValueError("this caption was decoded without keep_attention=True")
        return caption.attention

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """(B, 299, 299, 3) preprocessed pixels -> the features this model's decoder reads."""
        return self.encoder.encode(pixels, spatial=self.feature_kind == "spatial")

    @classmethod
    def load(cls, model_dir: str | Path | None = None, weights: str | Path | None = None,
             allow_download: bool = True, backend: str | None = None, lang: str | None = None,
             precision: str | None = None) -> "Captioner":
        """Load a model folder (default: the default model of ``lang``, English when None) and the
        Xception encoder (on ``backend``: "auto", "openvino" or "tensorflow"; default
        ``$CAPTIONER_BACKEND``, else the encoder's default; at ``precision``: "float32", "bfloat16", "int8"
        (once ``python -m captioner quantize`` has built it) or "auto", the fastest of them that keeps the
        captions on this CPU (``precision.py``); default ``$CAPTIONER_PRECISION``, else "auto").

        When the encoder runs on OpenVINO and every decoder is a merge decoder, the decoders step on
        OpenVINO too (or NumPy; ``decoders/portable.py``) and TensorFlow is never imported; otherwise
        they run on TensorFlow. ``decoder_backend`` says which.

        Raises CheckpointError, LanguageError or WeightsError with a message that says how to fix it.
        """
        from .encoder import XceptionEncoder, resolve_precision
        from .model_folder import CheckpointError, default_model_dir, load_checkpoint

        checkpoint = load_checkpoint(model_dir or default_model_dir(lang), keras=False)  # files checked, no Keras
        if lang and checkpoint.config.lang != lang:
            raise CheckpointError(f"{checkpoint.folder} captions in {checkpoint.config.lang!r}, not {lang!r}: "
                                  f"leave out the model folder to get the {lang!r} default, or pass a {lang!r} folder")
        if resolve_precision(precision) == "auto":  # the fastest precision that keeps captions here (precision.py)
            from .precision import load_auto

            return load_auto(cls.load, checkpoint.folder, weights, allow_download, backend, lang)
        confidence, problem = load_confidence(checkpoint.folder)
        encoder = XceptionEncoder.load(weights, allow_download=allow_download, backend=backend, precision=precision)
        if encoder.backend == "openvino" and portable_folder(checkpoint):
            from .decoders.portable import PortableUnavailable

            try:
                return cls(encoder, checkpoint, confidence, problem)
            except PortableUnavailable as err:  # unusual layer settings: TensorFlow steps them
                print(f"captioner: decoders run on TensorFlow, because {err}", file=sys.stderr)
        return cls(encoder, load_checkpoint(checkpoint.folder), confidence, problem)

    def assess(self, features: np.ndarray, captions: Sequence[Caption]) -> list[Assessment | None]:
        """How sure each picture's chosen caption is: ``features`` as ``encode`` returns them (B, ...),
        one Caption per picture. Nones when the model folder has no calibration."""
        if self.confidence is None:
            return [None] * len(captions)
        return self.confidence.assess(features, captions)

    def caption_features(self, features: np.ndarray, decode: DecodeConfig | None = None,
                         keep_attention: bool = False) -> list[list[Caption]]:
        """(B, 2048) pooled features (or (B, 10, 10, 2048) for attention models) -> B lists of captions.

        ``decode`` defaults to ``default_decode()``; ``keep_attention`` (attention models) records
        where the decoder looked for each word.
        """
        from .decoding import decode_with

        decode = decode or self.default_decode()
        keep_attention = keep_attention and self.has_attention
        hyps = decode_with(self.stepper, features, self.vocab, decode, keep_attention)
        return [[self._caption(h) for h in per_image] for per_image in hyps]

    def _caption(self, hyp) -> Caption:
        maps = None
        if hyp.attention is not None:
            regions = len(hyp.attention[0]) if hyp.attention else 1
            side = int(round(regions ** 0.5))
            maps = np.asarray(hyp.attention, np.float32).reshape(len(hyp.ids), side, side)
        tokens = self.vocab.decode(hyp.ids)
        return Caption(self.checkpoint.write(tokens), hyp.log_prob, hyp.score, list(hyp.ids), maps, tokens)

    def caption(self, images: Sequence[ImageSource], decode: DecodeConfig | None = None,
                names: Sequence[str] | None = None, keep_features: bool = False,
                keep_attention: bool = False, keep_thumbnail: bool = False) -> list[CaptionResult]:
        """Caption several images (paths, bytes, file objects or PIL images) in one encoder batch.

        ``decode`` (default ``default_decode()``) says how: beam width, n-best, length, n-gram
        blocking, ``<unk>``. An image that cannot be read gets ``result.error`` and the others are still
        captioned. ``keep_features`` keeps each image's features; ``keep_attention`` each word's
        attention map (attention models); ``keep_thumbnail`` an upright copy of the picture (at most
        640 px), so callers never decode the upload twice.
        """
        decode = decode or self.default_decode()
        decode.validate()
        results, pixels, readable = [], [], []
        for i, source in enumerate(images):
            name = names[i] if names else None
            start = time.perf_counter()
            try:
                img = load_image(source, name)
                pixels.append(preprocess_image(img))
                readable.append(len(results))
                result = CaptionResult(source_name(source, name))
                if keep_thumbnail:
                    result.thumbnail = img.copy()
                    result.thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
                result.seconds = time.perf_counter() - start
                results.append(result)
            except ImageError as err:
                results.append(CaptionResult(source_name(source, name), error=str(err)))
        if readable:
            start = time.perf_counter()
            features = self.encode(np.stack(pixels))
            captions = self.caption_features(features, decode, keep_attention)
            assessments = self.assess(features, [caps[0] for caps in captions])
            if keep_features:
                for index, f in zip(readable, features):
                    results[index].features = f
            share = (time.perf_counter() - start) / len(readable)
            for index, caps, assessment in zip(readable, captions, assessments):
                results[index].captions = caps
                results[index].assessment = assessment
                results[index].lang = self.lang
                results[index].seconds += share
        return results


def portable_folder(checkpoint) -> bool:
    """True when every decoder of ``checkpoint`` can step without TensorFlow (``decoders/portable.py``)."""
    from .decoders.portable import PORTABLE_FAMILIES

    members = checkpoint.members or [checkpoint]
    return all(m.config.decoder in PORTABLE_FAMILIES for m in members)


def load_confidence(model_dir: Path) -> tuple[ConfidenceModel | None, str | None]:
    """The folder's confidence model, or (None, why not): a missing or broken calibration never stops
    captioning; callers show the reason instead of a confidence."""
    try:
        return ConfidenceModel.load(model_dir), None
    except ConfidenceError as err:
        return None, str(err)
