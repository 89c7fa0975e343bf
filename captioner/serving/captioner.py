"""The ``Captioner`` facade: encoder + decoder + vocabulary, loaded once, captions for any images.

    from captioner import Captioner, DecodeConfig
    cap = Captioner.load()
    [result] = cap.caption(["photo.jpg"], DecodeConfig(beam_width=3))
    print(result.text)        # the caption
    print(result.sentence)    # as shown and spoken: "Probably a dog runs on the grass."
    print(result.assessment)  # confidence, band, in_domain, reason (models with a confidence.json)
    print(result.photo_problems)  # [] or some of "blurry", "dark", "bright" (serving/quality.py)
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import DecodeConfig
from . import sentence as wording
from .confidence import Assessment, ConfidenceError, ConfidenceModel
from .images import ImageSource, load_image, picture_error, preprocess_image, source_name
from .languages import language
from .quality import cap_assessment, check_pixels

logger = logging.getLogger(__name__)
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
    photo_problems: list[str] = field(default_factory=list)  # "blurry", "dark", "bright" (quality.py); [] = fine
    reading: object | None = None  # reading.Reading: the text read in the picture (None: not read)

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
    def advice(self) -> list[str]:
        """What to do about each of ``photo_problems`` ("The photo is too dark: turn on a light …"), in the
        caption's language; [] when the photo is fine."""
        words = language(self.lang).photo_advice
        return [words[p] for p in self.photo_problems]

    @property
    def read_text(self) -> str | None:
        """Every line of text read in the picture, joined by newlines; None when none was read."""
        return (self.reading.text or None) if self.reading is not None else None

    @property
    def kind(self) -> str:
        """"photo", or the kind of mostly-text picture ("document", "sign"; reading.py)."""
        return self.reading.kind if self.reading is not None else "photo"

    @property
    def sentence(self) -> str:
        """The best caption as it is shown, spoken and written everywhere (page, speech, CLI, JSON/CSV, API,
        XMP): the advice when the photo itself is the problem, the hedged caption after the out-of-domain
        warning, then the text read in the picture, as prose (``sentence.py``)."""
        return self._sentence()

    @property
    def short_sentence(self) -> str:
        """The sentence for alt text: the first line of read text, no count of the rest, and no advice for
        the photographer (alt text describes the picture to someone else)."""
        return self._sentence(short=True)

    def _sentence(self, short: bool = False) -> str:
        if not self.captions:
            return ""
        sure = self.assessment
        band, in_domain = (sure.band, sure.in_domain) if sure else (None, True)
        advice = [] if short else self.advice
        lines = [line.text for line in self.reading.lines] if self.reading is not None else []
        said = wording.text_said(lines, self.lang, **({"max_lines": 1, "count_more": False} if short else {}))
        if self.kind != "photo" and lines:  # mostly text: say what it is and the text first
            lead = wording.text_lead(self.kind, self.lang)
            if sure is not None and (not in_domain or band == "low"):
                return wording.join([*advice, lead, *said], self.lang)  # the Flickr-style guess stays in model_caption
            return wording.sentence(self.text, self.lang, band, in_domain, before=[*advice, lead, *said])
        return wording.sentence(self.text, self.lang, band, in_domain, before=advice, after=said)


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
        self.ranker = None  # ConsensusRanker for rerank="consensus": the calibration's domain check and neighbours
        if confidence is not None and confidence.neighbours is not None:
            from .rerank import ConsensusRanker

            self.ranker = ConsensusRanker(confidence.domain, confidence.neighbours)

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
             precision: str | None = None, encoder=None) -> "Captioner":
        """Load a model folder (default: the default model of ``lang``, English when None) and the
        Xception encoder (on ``backend``: "auto", "openvino" or "tensorflow"; default
        ``$CAPTIONER_BACKEND``, else the encoder's default; at ``precision``: "float32", "bfloat16", "int8"
        (once ``python -m captioner quantize`` has built it) or "auto", the fastest of them that keeps the
        captions on this CPU (``precision.py``); default ``$CAPTIONER_PRECISION``, else "auto").

        When the encoder runs on OpenVINO and every decoder is a merge decoder, the decoders step on
        OpenVINO too (or NumPy; ``decoders/portable.py``) and TensorFlow is never imported; otherwise
        they run on TensorFlow. ``decoder_backend`` says which.

        ``encoder``: an encoder already loaded (another language's Captioner's), shared instead of loading
        a second copy; ``weights``, ``backend`` and ``precision`` are then not used.

        Raises CheckpointError, LanguageError or WeightsError with a message that says how to fix it.
        """
        from .encoder import XceptionEncoder, resolve_precision
        from .model_folder import CheckpointError, default_model_dir, load_checkpoint

        checkpoint = load_checkpoint(model_dir or default_model_dir(lang), keras=False)  # files checked, no Keras
        if lang and checkpoint.config.lang != lang:
            raise CheckpointError(f"{checkpoint.folder} captions in {checkpoint.config.lang!r}, not {lang!r}: "
                                  f"leave out the model folder to get the {lang!r} default, or pass a {lang!r} folder")
        if encoder is None and resolve_precision(precision) == "auto":  # the fastest that keeps captions here
            from .precision import load_auto

            return load_auto(cls.load, checkpoint.folder, weights, allow_download, backend, lang)
        confidence, problem = load_confidence(checkpoint.folder)
        encoder = encoder or XceptionEncoder.load(weights, allow_download=allow_download, backend=backend,
                                                  precision=precision)
        if encoder.backend == "openvino" and portable_folder(checkpoint):
            from .decoders.portable import PortableUnavailable

            try:
                return cls(encoder, checkpoint, confidence, problem)
            except PortableUnavailable as err:  # unusual layer settings: TensorFlow steps them
                logger.warning("captioner: decoders run on TensorFlow, because %s", err)
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

        ``decode`` defaults to ``default_decode()``; its ``rerank`` says how each picture's beam captions are
        ordered (``reranking``: by score, or by consensus with the nearest training photos, ``rerank.py``);
        ``keep_attention`` (attention models) records where the decoder looked for each word.
        """
        from .decoding import decode_with

        decode = decode or self.default_decode()
        keep_attention = keep_attention and self.has_attention
        if self.reranking(decode) == "score" or decode.beam_width == 1:  # one candidate: nothing to reorder
            hyps = decode_with(self.stepper, features, self.vocab, decode, keep_attention)
            return [distinct([self._caption(h, decode.wording) for h in per_image]) for per_image in hyps]
        # consensus: every caption the beam finished, reordered, then the n_best asked for
        every = replace(decode, n_best=decode.beam_width)
        hyps = decode_with(self.stepper, features, self.vocab, every, keep_attention)
        captions = [[self._caption(h, decode.wording) for h in per_image] for per_image in hyps]
        orders = self.ranker.order(features, [[c.tokens for c in caps] for caps in captions])
        return [distinct([caps[i] for i in order])[:decode.n_best] for caps, order in zip(captions, orders)]

    def reranking(self, decode: DecodeConfig) -> str:
        """The ranking ``decode`` asks for, "auto" resolved to the folder's choice: "score" or "consensus".
        ValueError, saying the fix, when consensus is asked for and the folder has no neighbour index."""
        choice = self.checkpoint.rerank if decode.rerank == "auto" else decode.rerank
        if choice == "consensus" and self.ranker is None:
            if decode.rerank == "auto":
                return "score"  # the folder's choice without its calibration: reported with the confidence
            why = f" ({self.confidence_problem})" if self.confidence_problem else ""
            raise ValueError(f"rerank=consensus needs the model folder's calibration and neighbour index{why}: fit "
                             f"them with `python -m captioner calibrate --model {self.checkpoint.folder}`, or ask for "
                             "rerank=score")
        return choice

    def fitted_ranking(self) -> str | None:
        """The ranking of the beam's captions the confidence was fitted for: "score" or "consensus" (None: no
        confidence; "score" when the calibration does not say)."""
        if self.confidence is None:
            return None
        return self.confidence.calibrator.info.get("decoding", {}).get("rerank", "score")

    def _caption(self, hyp, wording: str = "as-learned") -> Caption:
        maps = None
        if hyp.attention is not None:
            regions = len(hyp.attention[0]) if hyp.attention else 1
            side = int(round(regions ** 0.5))
            maps = np.asarray(hyp.attention, np.float32).reshape(len(hyp.ids), side, side)
        tokens = self.vocab.decode(hyp.ids)
        if wording == "neutral":  # the written caption only: tokens stay the decoder's (metrics, confidence, maps)
            from .neutral import german_nouns, neutral, written_forms

            truecase = self.checkpoint.truecase
            text = self.checkpoint.language.write(neutral(tokens, self.lang, german_nouns(truecase)),
                                                  written_forms(self.lang, truecase))
            return Caption(text, hyp.log_prob, hyp.score, list(hyp.ids), maps, tokens)
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
        self.reranking(decode)  # an impossible ranking is refused before any picture is read
        results, pixels, readable, problems = [], [], [], []
        for i, source in enumerate(images):
            name = names[i] if names else None
            start = time.perf_counter()
            try:  # anything that goes wrong with ONE picture (not Ctrl-C) is that picture's own error
                img = load_image(source, name)
                x = preprocess_image(img)
                result = CaptionResult(source_name(source, name))
                result.reading = read_picture(img, decode.read_text)
                if keep_thumbnail:
                    result.thumbnail = img.copy()
                    result.thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            except Exception as err:
                label = source_name(source, name)
                results.append(CaptionResult(label, error=str(picture_error(label, err))))
                continue
            pixels.append(x)
            problems.append(check_pixels(x).problems)  # blurred, dark, blown out: a few ms
            readable.append(len(results))
            result.seconds = time.perf_counter() - start
            results.append(result)
        if readable:
            start = time.perf_counter()
            features = self.encode(np.stack(pixels))
            captions = self.caption_features(features, decode, keep_attention)
            assessments = self.assess(features, [caps[0] for caps in captions])
            if keep_features:
                for index, f in zip(readable, features):
                    results[index].features = f
            share = (time.perf_counter() - start) / len(readable)
            ceiling = self.confidence.calibrator.high if self.confidence is not None else 1.0
            # a confidence fitted for another ranking of the beam does not know these captions: never "high"
            # (greedy has nothing to rank)
            fitted = self.fitted_ranking()
            unfitted = ["ranking"] if decode.beam_width > 1 and fitted not in (None, self.reranking(decode)) else []
            for index, caps, assessment, flaws in zip(readable, captions, assessments, problems):
                results[index].captions = caps
                results[index].photo_problems = flaws
                results[index].assessment = cap_assessment(assessment, flaws or unfitted, ceiling)
                results[index].lang = self.lang
                results[index].seconds += share
        return results


def distinct(captions: list[Caption]) -> list[Caption]:
    """Captions whose written words differ, best first: neutral wording can write two hypotheses the
    same ("a man rides" and "a woman rides" both say "a person rides"), and nobody wants a line twice."""
    seen: set[str] = set()
    return [c for c in captions if not (c.text in seen or seen.add(c.text))]


def read_picture(img, mode: str):
    """The text in ``img`` (``reading.Reading``), or None when ``mode`` is "off" or the reader failed
    (logged: the caption still comes; the reader's modules are imported only when reading)."""
    if mode == "off":
        return None
    from .reading import Reader

    try:
        return Reader.shared().read(img, mode)
    except Exception as err:  # whatever the reader meets, the caption still comes
        logger.warning("text not read: %s", err)
        return None


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
