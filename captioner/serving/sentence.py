"""The sentence a person hears and reads: one function writes it for every output (the page, speech, the
command line, JSON and CSV records, the HTTP API, XMP sidecars, EXIF and alt text).

    >>> sentence("a dog runs on the grass", "en", band="medium")
    'Probably a dog runs on the grass.'
    >>> sentence("Ein Hund läuft.", "de", band="low", in_domain=False)[:26]
    'Dieses Bild sieht nicht au'

A sentence is made of parts, each written as finished prose in the caption's language (capital first
letter, closing full stop) and joined in this order:

1. ``before``: what a person should know first (for example that the photo itself is the problem);
2. the out-of-domain warning, when the picture is unlike the photos the model learned from;
3. the caption, in its confidence band's words ("Probably …", "Maybe …");
4. ``after``: what comes with the caption (for example text read in the picture: ``text_said``).

A picture that is mostly text (a page, a sign filling the frame) leads with what it is and the text
(``text_lead``, ``text_said``) instead; ``CaptionResult.sentence`` leaves an unsure caption out of it.

The words of each language (hedges, warning) live in ``languages.py``; this module only assembles them.
"""
from __future__ import annotations

from typing import Iterable

from .languages import language

BANDS = ("high", "medium", "low")  # how sure a caption is, from most to least
_CLOSERS = (".", "。", "!", "?", "！", "？", "…", ":", "：")  # a part ending in one of these is already closed


def hedge(text: str, band: str, lang: str = "en") -> str:
    """The caption in its band's words, in the caption's language: high as it is, medium "Probably …",
    low "Maybe …" (German "Wahrscheinlich: …", Chinese "大概是：…")."""
    if band not in BANDS:
        raise ValueError(f"band must be one of {', '.join(BANDS)}, not {band!r}")
    return language(lang).hedges[band].format(text=text) if text else text


def out_of_domain_warning(lang: str = "en") -> str:
    """The warning said before a caption of a picture unlike the training photos, in the caption's language."""
    return language(lang).out_of_domain_warning


def finish(text: str, lang: str = "en") -> str:
    """A part as written prose: surrounding space removed, a capital first letter (never "ß" -> "SS"), and
    the language's full stop ("." or "。") unless it already ends like a sentence."""
    text = text.strip()
    if not text:
        return text
    if len(text[:1].upper()) == 1:
        text = text[:1].upper() + text[1:]
    return text if text.endswith(_CLOSERS) else text + (language(lang).full_stop or ".")


def join(parts: Iterable[str], lang: str = "en") -> str:
    """Finished parts joined as one paragraph in ``lang`` (a space between them; none in Chinese)."""
    separator = "" if language(lang).separator == "" else " "
    return separator.join(p for p in (finish(p, lang) for p in parts) if p)


def sentence(text: str, lang: str = "en", band: str | None = None, in_domain: bool = True,
             before: Iterable[str] = (), after: Iterable[str] = ()) -> str:
    """The one sentence shown and said for a caption: ``before`` notes, the out-of-domain warning (when
    ``in_domain`` is False), the caption hedged by ``band`` (None: as it is), then ``after`` notes."""
    caption = hedge(text, band, lang) if band is not None else text
    warning = [] if in_domain else [out_of_domain_warning(lang)]
    return join([*before, *warning, caption, *after], lang)


SAY_LINES = 3  # lines of read text quoted in the sentence; the rest are counted ("There are 9 more lines")
SAY_CHARS = 200  # at most this many characters of them


def text_said(lines: Iterable[str], lang: str = "en", max_lines: int = SAY_LINES,
              max_chars: int = SAY_CHARS, count_more: bool = True) -> list[str]:
    """The parts that say the text read in a picture, in ``lang``'s words: 'It says: "A, B".' with the
    first ``max_lines`` lines (at most ``max_chars`` characters), then how many lines are left out (with
    ``count_more``). No lines: no parts."""
    lines = [" ".join(line.split()) for line in lines if line.strip()]
    if not lines:
        return []
    words = language(lang).reading
    said: list[str] = []
    for line in lines[:max_lines]:
        if said and sum(len(s) for s in said) + len(line) > max_chars:
            break
        said.append(line)
    if len(said[0]) > max_chars:
        said[0] = said[0][:max_chars].rstrip() + "…"
    comma = words["comma"]
    pieces = []
    for i, line in enumerate(said):
        if i:  # a line that ends a sentence needs no comma after it
            ended = said[i - 1].endswith(_CLOSERS + (",", "，"))
            pieces.append(("" if comma == "，" else " ") if ended else comma)
        pieces.append(line)
    quoted = "".join(pieces)
    parts = [words["says"].format(text=quoted)]
    left = len(lines) - len(said)
    if left and count_more:
        parts.append(words["more1"] if left == 1 else words["more"].format(n=left))
    return parts


def text_lead(kind: str, lang: str = "en") -> str:
    """What a mostly-text picture is, in ``lang``'s words ("A page of text."); "" for a photo."""
    return language(lang).reading.get(kind, "")
