"""One image's caption record: the JSON object ``caption --json`` prints, each line of a ``--out`` .jsonl
file, each row of a .csv file and each result of the HTTP API's ``POST /v1/captions``.

``CaptionRecord`` is the one definition of that record: its fields in output order, what each one means
(the API's OpenAPI schema is built from these docs) and which are CSV columns. ``CaptionRecord.from_result``
computes the values and ``to_json`` gives the plain dict every output writes. A field an image's record
does not have stays ``ABSENT`` and is left out of the dict (not written as null): records of a model
without calibration have no confidence keys, a failed image's record is just ``{"image", "error"}``.

Adding an output field: declare it below and give it its value in ``from_result``.

    >>> from captioner import Caption, CaptionResult
    >>> record = CaptionRecord.from_result("dog.jpg", CaptionResult("dog.jpg", [Caption("a dog runs", -2.0, -0.51)]))
    >>> record.to_json()  # doctest: +NORMALIZE_WHITESPACE
    {'image': 'dog.jpg', 'caption': 'A dog runs.', 'lang': 'en', 'photo_problems': [],
     'model_caption': 'a dog runs', 'score': -0.51, 'read_text': None, 'kind': 'photo'}
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal


class _Absent:
    """The value of a field an image's record leaves out: the key is missing, which is not the same as null."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def _field(doc: str, csv: bool = True) -> Any:
    """A record field that a record may leave out, with its documentation; ``csv``: a column of .csv files."""
    return field(default=ABSENT, metadata={"doc": doc, "csv": csv})


@dataclass
class Alternative:
    """One of the captions asked for with `n_best` > 1, best first."""

    caption: str = field(metadata={"doc": "the caption in the model's words, written as in `model_caption`"})
    score: float = field(metadata={"doc": "its ranking score, as in `score`"})


@dataclass
class TextLine:
    """One line of text read in the picture."""

    text: str = field(metadata={"doc": "the line as read"})
    score: float = field(metadata={"doc": "the recogniser's confidence in it (0-1)"})
    box: list[list[int]] = field(metadata={"doc": "where it is: its four corners (x, y) in the picture's "
                                                  "pixels, clockwise from the top left"})


@dataclass
class CaptionRecord:
    """The result for one image. A captioned image has `caption`, `lang`, `model_caption` and `score` (and,
    with a calibrated model, `confidence`, `band`, `in_domain` and `reason`; with several captions asked
    for, `alternatives`); an image that could not be captioned has only `image` and `error`."""

    image: str = field(metadata={"doc": "the image as it was named: the path given on the command line, or "
                                        "the uploaded file's name (the `name` query parameter for a raw body)",
                                 "csv": True})
    caption: str = _field("the sentence as it is shown and spoken: the best caption in its confidence band's "
                          "words (\"Probably …\", \"Maybe …\"), after the out-of-domain warning when the picture "
                          "is unlike the training photos, written as prose in the caption's language")
    lang: str = _field("the captions' language (ISO 639-1: en, de, zh, fr or es)")
    photo_problems: list[str] = _field("what is wrong with the photo itself, said first in `caption` with advice: "
                                       "some of \"blurry\", \"dark\", \"bright\" ([] when fine; in CSV joined "
                                       "by \";\")")
    confidence: float = _field("with a calibrated model: the chance (0-1, 3 decimals) that the caption is a good "
                               "description of the picture")
    band: Literal["high", "medium", "low"] = _field("with a calibrated model: how sure the caption is, which sets "
                                                    "its hedge in `caption`")
    in_domain: bool = _field("with a calibrated model: false when the picture is unlike the photos the model "
                             "learned from (then `caption` starts with a warning)")
    reason: str | None = _field("with a calibrated model: why the picture was flagged as unlike the training "
                                "photos; null when `in_domain` is true")
    model_caption: str = _field("the best caption without hedge or warning: the model's words as its language "
                                "writes them (English: as decoded)")
    score: float = _field("the best caption's ranking score: its length-normalised log-probability (4 decimals; "
                          "higher is more likely)")
    read_text: str | None = _field("every line of text read in the picture (signs, labels, pages, screens), in "
                                   "reading order, joined by newlines; null when none was read")
    kind: Literal["photo", "document", "sign"] = _field("what the picture is: a photo, or mostly text (a page "
                                                        "of text or a screen: document; a label or sign: sign)")
    text_lines: list[TextLine] = _field("only when text was read: each line with its recognition score and "
                                        "where it is", csv=False)
    short_caption: str = _field("only when text was read: the sentence with just the first line of text, for "
                                "alt text", csv=False)
    alternatives: list[Alternative] = _field("only when several captions were asked for (`n_best` > 1): each "
                                             "caption with its score, best first (not a CSV column)", csv=False)
    error: str = _field("only for an image that could not be captioned: why, as the command line prints it")

    @classmethod
    def from_result(cls, image: str | Path, result) -> CaptionRecord:
        """The record of one ``CaptionResult`` (``image``: the name the record gives it)."""
        if not result.ok:
            return cls(image=str(image), error=result.error)
        calibration = result.assessment.to_json() if result.assessment is not None else {}
        best = result.captions[0]
        alternatives = ([Alternative(c.text, round(float(c.score), 4)) for c in result.captions]
                        if len(result.captions) > 1 else ABSENT)
        return cls(image=str(image), caption=result.sentence, lang=result.lang,
                   photo_problems=list(result.photo_problems), **calibration,
                   model_caption=result.text, score=round(float(best.score), 4), read_text=result.read_text,
                   kind=result.kind, alternatives=alternatives, **_text_fields(result))

    def to_json(self) -> dict:
        """The record as a plain dict in field order, without the fields it leaves out."""
        return {f.name: _plain(value) for f in fields(self) if (value := getattr(self, f.name)) is not ABSENT}


def _text_fields(result) -> dict:
    """The read lines and the short sentence, when the picture had text."""
    if not result.read_text:
        return {}
    return {"text_lines": [TextLine(**line.to_json()) for line in result.reading.lines],
            "short_caption": result.short_sentence}


def _plain(value):
    """Nested records (the alternatives) as plain dicts."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return asdict(value) if is_dataclass(value) else value


def field_docs(record: type = CaptionRecord) -> dict[str, str]:
    """Each field's documentation, by name."""
    return {f.name: f.metadata["doc"] for f in fields(record)}


CSV_FIELDS = tuple(f.name for f in fields(CaptionRecord) if f.metadata["csv"])  # the columns of a .csv file
