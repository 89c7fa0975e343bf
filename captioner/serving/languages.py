"""Caption languages: one registry maps a code ("en", "de", "zh", "fr", "es") to how that language's
captions are cut into tokens for the model, written back as people write them, and the words they are
hedged, warned about, advised with (when the photo itself is the problem) and spoken with (``sentence.py`` assembles what a person hears from them).

A model folder's ``config.json`` names its language (``TrainConfig.lang``); training cleans the
captions with ``Language.tokens`` and serving writes the decoder's tokens back with
``Language.write``. English is cleaned and written exactly as it always was (lower-case words, no
punctuation); the other languages keep their letters (accents, umlauts, ß), and are written back as
people write them:

    >>> language("de").write("ein hund läuft über die wiese", {"hund": "Hund", "wiese": "Wiese"})
    'Ein Hund läuft über die Wiese.'
    >>> language("zh").write("一个 女孩 在 跑")
    '一个女孩在跑。'
    >>> language("fr").write("l' homme fait du vélo")
    "L'homme fait du vélo."

Chinese is modelled per word, segmented by jieba (``docs/LANGUAGES.md`` gives the measurement behind
the choice; serving needs no segmenter, since words are written back without spaces); German is
modelled in lower case and its capitals restored from the training captions' own spelling
(``truecase_table``), which the model folder keeps as ``truecase.json``.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

DEFAULT_LANG = "en"
I18N_CAPTIONS = "i18n/{code}/Flickr8k.token.txt"  # beside the English captions, in the dataset folder

_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*'?")  # letters (any script), inner hyphens, an elision's apostrophe
_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN_OR_LATIN = re.compile(rf"[{_HAN}]|[a-z]+")


class LanguageError(ValueError):
    """A language code this project has no captions, model or voice for."""


def english_tokens(text: str) -> list[str]:
    """Lower-case, drop apostrophes and punctuation, keep every a-z word (articles too).

    >>> english_tokens("A dog's ball, in 2 parks!")
    ['a', 'dogs', 'ball', 'in', 'parks']
    """
    return re.findall(r"[a-z]+", text.lower().replace("'", ""))


def alphabetic_tokens(text: str) -> list[str]:
    """Lower-case words of any alphabet, accents kept; hyphenated words stay one token; an elided article
    keeps its apostrophe as a token of its own.

    >>> alphabetic_tokens("L’homme porte un T-shirt, à 3 heures. Straße!")
    ["l'", 'homme', 'porte', 'un', 't-shirt', 'à', 'heures', 'straße']
    """
    text = unicodedata.normalize("NFC", text).replace("’", "'").replace("`", "'").lower()
    return _WORD.findall(text)


def chinese_words(text: str) -> list[str]:
    """Chinese words as jieba segments them (Latin words whole, lower-cased); punctuation and digits dropped.

    >>> chinese_words("两只狗在草地上奔跑。")
    ['两只', '狗', '在', '草地', '上', '奔跑']
    """
    import jieba

    jieba.setLogLevel(60)  # no "Building prefix dict" chatter on stderr
    words = ("".join(chinese_tokens(w)) for w in jieba.lcut(unicodedata.normalize("NFKC", text).lower()))
    return [w for w in words if w]


def chinese_tokens(text: str) -> list[str]:
    """One token per Chinese character (Latin words whole, lower-cased); punctuation and digits dropped.

    >>> chinese_tokens("两只狗在草地上奔跑。")
    ['两', '只', '狗', '在', '草', '地', '上', '奔', '跑']
    """
    return _HAN_OR_LATIN.findall(unicodedata.normalize("NFKC", text).lower())


@dataclass(frozen=True)
class Language:
    """Everything language-specific about captions, in one value."""

    code: str  # ISO 639-1, as in config.json's "lang" and the JSON records' "lang"
    name: str  # in English
    native: str  # as its speakers write it (the page's picker shows both)
    tokenize: Callable[[str], list[str]]  # a raw caption -> the model's tokens
    espeak_voice: str  # the bundled espeak-ng voice (it calls Mandarin "cmn")
    gtts_lang: str  # Google's code for the online voice
    hedges: Mapping[str, str]  # band -> wording around "{text}"
    out_of_domain_warning: str
    separator: str = " "  # between written words ("" for Chinese)
    full_stop: str = ""  # appended to a written caption ("" keeps English as it has always been)
    capitalise: bool = False  # capital first letter when written
    restores_case: bool = False  # modelled in lower case; capitals restored from the training captions
    references_per_image: str = "5"  # what the dataset gives (for docs and cards)
    tokenisation: str = "lower-case words"  # how BLEU/CIDEr tokens are made, stated beside the figures
    photo_advice: Mapping[str, str] = field(default_factory=dict)  # problem (quality.PROBLEMS) -> what to do
    # Words for text read in the picture (sentence.py): "says" around the quoted "{text}", "more" the lines
    # left out, "comma" between lines, one lead per mostly-text kind (reading.py KINDS: document, sign).
    reading: Mapping[str, str] = field(default_factory=dict)

    @property
    def captions_file(self) -> str:
        """The caption file, relative to the dataset folder."""
        return "Flickr8k.token.txt" if self.code == DEFAULT_LANG else I18N_CAPTIONS.format(code=self.code)

    def clean(self, text: str) -> str:
        """A raw caption -> its tokens joined by single spaces (the form vocabularies and metrics use)."""
        return " ".join(self.tokenize(text))

    def write(self, tokens: str, truecase: Mapping[str, str] | None = None) -> str:
        """The decoder's space-separated tokens -> the caption as people write it in this language."""
        words = tokens.split()
        if not words:
            return ""
        if self.restores_case and truecase:
            words = [truecase.get(w, w) for w in words]
        if self.separator:
            text = re.sub(r"' ", "'", self.separator.join(words))  # "l' homme" -> "l'homme"
        else:  # Chinese: no spaces, except between two Latin words
            text = "".join(w if i == 0 or not (w[0].isascii() and words[i - 1][-1].isascii()) else f" {w}"
                           for i, w in enumerate(words))
        if self.capitalise and len(text[:1].upper()) == 1:  # "ß".upper() is "SS": leave such a letter be
            text = text[:1].upper() + text[1:]
        return text + self.full_stop


def truecase_table(raw_captions: Iterable[str], language: Language) -> dict[str, str]:
    """lower-case token -> its most frequent written form in ``raw_captions`` where that differs (German
    nouns: "hund" -> "Hund"). A caption's first word is left out of the count (it is capitalised
    whatever it is), and so are captions written entirely in lower case (some crowd workers did)."""
    forms: dict[str, Counter] = defaultdict(Counter)
    for caption in raw_captions:
        text = unicodedata.normalize("NFC", caption).replace("’", "'")
        words = _WORD.findall(text)
        if not any(w[:1].isupper() for w in words[1:]):
            continue
        for word in words[1:]:
            forms[word.lower()][word] += 1
    table = {}
    for lower, counts in forms.items():
        best = max(counts, key=lambda w: (counts[w], w == lower))
        if best != lower:
            table[lower] = best
    return table


LANGUAGES: dict[str, Language] = {lang.code: lang for lang in (
    Language("en", "English", "English", english_tokens, "en", "en",
             {"high": "{text}", "medium": "Probably {text}", "low": "Maybe {text}"},
             "This doesn't look like the photos I learned from (people, animals, outdoor scenes), "
             "so this description may be wrong.",
             photo_advice={
                 "blurry": "The photo is blurred: hold the phone still with both hands, tap the screen to focus "
                           "and try again.",
                 "dark": "The photo is too dark: turn on a light or move to a window and try again.",
                 "bright": "The photo is too bright: turn away from the light or the sun and try again."},
             reading={"says": 'It says: "{text}".', "more": "There are {n} more lines of text.", "more1": "There is one more line of text.",
                      "comma": ", ",
                      "document": "A page of text.", "sign": "A sign or label."}),
    Language("de", "German", "Deutsch", alphabetic_tokens, "de", "de",
             {"high": "{text}", "medium": "Wahrscheinlich: {text}", "low": "Vielleicht: {text}"},
             "Dieses Bild sieht nicht aus wie die Fotos, von denen ich gelernt habe (Menschen, Tiere, "
             "Szenen im Freien), deshalb kann diese Beschreibung falsch sein.",
             full_stop=".", capitalise=True, restores_case=True,
             tokenisation="lower-case words (capitals restored only for display)",
             photo_advice={
                 "blurry": "Das Foto ist unscharf: Halten Sie das Handy mit beiden Händen ruhig, tippen Sie zum "
                           "Scharfstellen auf den Bildschirm und versuchen Sie es noch einmal.",
                 "dark": "Das Foto ist zu dunkel: Schalten Sie ein Licht ein oder gehen Sie an ein Fenster und "
                         "versuchen Sie es noch einmal.",
                 "bright": "Das Foto ist zu hell: Wenden Sie sich vom Licht oder von der Sonne ab und versuchen "
                           "Sie es noch einmal."},
             reading={"says": "Darauf steht: „{text}“.", "more": "Dazu kommen {n} weitere Zeilen Text.", "more1": "Dazu kommt eine weitere Zeile Text.",
                      "comma": ", ",
                      "document": "Eine Seite mit Text.", "sign": "Ein Schild oder Etikett."}),
    Language("zh", "Chinese", "中文", chinese_words, "cmn", "zh-CN",
             {"high": "{text}", "medium": "大概是：{text}", "low": "也许是：{text}"},
             "这张图片不像我学习过的照片（人物、动物、户外场景），所以这个描述可能是错的。",
             separator="", full_stop="。", tokenisation="words, segmented by jieba 0.42.1",
             photo_advice={
                 "blurry": "照片模糊：请用双手拿稳手机，点一下屏幕对焦，然后再拍一次。",
                 "dark": "照片太暗：请打开灯或走到窗边，然后再拍一次。",
                 "bright": "照片太亮：请不要对着灯光或太阳拍，然后再拍一次。"},
             reading={"says": "上面写着：“{text}”。", "more": "还有{n}行文字。", "more1": "还有一行文字。", "comma": "，",
                      "document": "一页文字。", "sign": "一个标牌或标签。"}),
    Language("fr", "French", "Français", alphabetic_tokens, "fr", "fr",
             {"high": "{text}", "medium": "Probablement : {text}", "low": "Peut-être : {text}"},
             "Cette image ne ressemble pas aux photos sur lesquelles j'ai appris (personnes, animaux, "
             "scènes en extérieur) : cette description peut donc être fausse.",
             full_stop=".", capitalise=True, references_per_image="1",
             photo_advice={
                 "blurry": "La photo est floue : tenez le téléphone immobile à deux mains, touchez l'écran pour "
                           "faire la mise au point et réessayez.",
                 "dark": "La photo est trop sombre : allumez une lumière ou approchez-vous d'une fenêtre, puis "
                         "réessayez.",
                 "bright": "La photo est trop claire : détournez-vous de la lumière ou du soleil, puis réessayez."},
             reading={"says": "On peut y lire : « {text} ».", "more": "Il y a encore {n} lignes de texte.", "more1": "Il y a encore une ligne de texte.",
                      "comma": ", ",
                      "document": "Une page de texte.", "sign": "Un panneau ou une étiquette."}),
    Language("es", "Spanish", "Español", alphabetic_tokens, "es", "es",
             {"high": "{text}", "medium": "Probablemente: {text}", "low": "Quizás: {text}"},
             "Esta imagen no se parece a las fotos con las que aprendí (personas, animales, escenas al "
             "aire libre), así que esta descripción puede ser incorrecta.",
             full_stop=".", capitalise=True, references_per_image="1",
             photo_advice={
                 "blurry": "La foto está borrosa: sujete el teléfono quieto con las dos manos, toque la pantalla "
                           "para enfocar y vuelva a intentarlo.",
                 "dark": "La foto está demasiado oscura: encienda una luz o acérquese a una ventana y vuelva a "
                         "intentarlo.",
                 "bright": "La foto tiene demasiada luz: no apunte hacia la luz ni hacia el sol y vuelva a "
                           "intentarlo."},
             reading={"says": "Dice: «{text}».", "more": "Hay {n} líneas de texto más.", "more1": "Hay una línea de texto más.",
                      "comma": ", ",
                      "document": "Una página de texto.", "sign": "Un cartel o una etiqueta."}),
)}


def language(code: str | None) -> Language:
    """The Language for ``code`` (None: English); LanguageError naming the known codes otherwise."""
    code = (code or DEFAULT_LANG).strip().lower()
    if code not in LANGUAGES:
        raise LanguageError(f"no captions in language {code!r}: choose one of {', '.join(LANGUAGES)}")
    return LANGUAGES[code]
