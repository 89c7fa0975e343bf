"""The one sentence a person hears and reads: parts, order, prose form and each language's words."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from captioner.serving.languages import LANGUAGES
from captioner.serving.sentence import BANDS, finish, hedge, join, out_of_domain_warning, sentence


@pytest.mark.parametrize("text, written", [
    ("a dog runs", "A dog runs."),  # the decoder's English gets a capital and a full stop
    ("  a dog runs  ", "A dog runs."),
    ("Ein Hund läuft.", "Ein Hund läuft."),  # already prose: left as it is
    ("一只狗在跑。", "一只狗在跑。"),  # a Chinese full stop counts
    ("Is it a dog?", "Is it a dog?"),
    ("ßtraße", "ßtraße."),  # "ß".upper() is "SS": the letter is left alone
    ("", ""),
])
def test_finish_writes_prose_once(text, written):
    """Catches a sentence without its capital, or one with a doubled full stop."""
    assert finish(text) == written
    assert finish(finish(text)) == written


def test_parts_come_in_their_order_and_english_is_prose():
    """Catches a warning after the caption, notes in the wrong place, or the English caption left in lower
    case without a full stop (as the page used to differ from every other output)."""
    said = sentence("a dog runs", "en", "low", in_domain=False, before=["the photo is dark"],
                    after=["the sign says: 'open'"])
    assert said == ("The photo is dark. " + out_of_domain_warning("en") + " Maybe a dog runs. The sign says: 'open'.")
    assert sentence("a dog runs", "en") == "A dog runs."  # no calibration: the caption, unhedged
    assert sentence("a dog runs", "en", "high") == "A dog runs."
    assert sentence("a dog runs", "en", "medium") == "Probably a dog runs."


def test_chinese_parts_are_joined_without_spaces():
    """Catches a space put between Chinese sentences."""
    said = sentence("一只狗在跑。", "zh", "medium", in_domain=False)
    assert said == out_of_domain_warning("zh") + "大概是：一只狗在跑。" and " " not in said
    assert join(["照片太暗", "一只狗在跑。"], "zh") == "照片太暗。一只狗在跑。"


@pytest.mark.parametrize("code", sorted(LANGUAGES))
def test_every_language_hedges_and_warns_in_its_own_words(code):
    """Catches a language whose hedge drops the caption, or that falls back to English words."""
    text = {"en": "a dog runs", "de": "Ein Hund läuft.", "zh": "一只狗在跑。", "fr": "Un chien court.",
            "es": "Un perro corre."}[code]
    for band in BANDS:
        assert text in hedge(text, band, code)
    assert hedge(text, "high", code) == text
    assert hedge(text, "medium", code) != hedge(text, "low", code)
    if code != "en":
        assert out_of_domain_warning(code) != out_of_domain_warning("en")
        assert hedge(text, "medium", code) != hedge(text, "medium", "en")


def test_unknown_band_and_language_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="band must be one of high, medium, low"):
        hedge("a dog", "certain")
    with pytest.raises(ValueError, match="no captions in language 'xx'"):
        sentence("a dog", "xx")
    assert hedge("", "low") == ""


@given(st.text(min_size=1, max_size=40))
def test_a_sentence_always_ends_closed(text):
    """Whatever the decoder writes, the sentence ends like one (or is empty when there are no words)."""
    said = sentence(text, "en", "medium")
    assert said.endswith((".", "。", "!", "?", "！", "？", "…", ":", "：")) or not said
