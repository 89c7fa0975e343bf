"""The page's words: every caption language has every phrase, with the same blanks to fill."""
from __future__ import annotations

import pytest

from captioner.serving.languages import LANGUAGES
from captioner.serving.page_words import ENGLISH, TRANSLATIONS, page_words, placeholders


@pytest.mark.parametrize("lang", [code for code in LANGUAGES if code != "en"])
def test_every_language_has_every_phrase_with_its_placeholders(lang):
    words = TRANSLATIONS[lang]
    assert set(words) == set(ENGLISH), set(ENGLISH) ^ set(words)
    for key, english in ENGLISH.items():
        assert placeholders(words[key]) == placeholders(english), key
    # filled in as the page fills them, nothing raises
    sample = {"name": "x", "count": 2, "ok": 1, "total": 2, "seconds": 1.5, "error": "e", "band": "b",
              "percent": 61, "reason": "r", "ratio": "3", "caption": "c", "engine": "espeak-ng", "language": "l"}
    for key, text in words.items():
        assert text.format(**sample)


def test_the_hedges_quoted_in_how_sure_are_the_ones_captions_get():
    for code, spec in LANGUAGES.items():
        how_sure = page_words(code)["how_sure"]
        for band in ("medium", "low"):
            quoted = spec.hedges[band].replace("{text}", "").strip()
            assert quoted in how_sure, (code, band, quoted)


def test_unknown_language_and_missing_phrase_fall_back_to_english(monkeypatch):
    assert page_words("xx") == ENGLISH
    monkeypatch.setitem(TRANSLATIONS, "de", {k: v for k, v in TRANSLATIONS["de"].items() if k != "speak"})
    words = page_words("de")
    assert words["speak"] == ENGLISH["speak"] and words["settings"] == "Einstellungen"
