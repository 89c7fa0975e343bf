"""Neutral wording: captions that say "a person", "a child", "two people", "their" instead of guessing a
gender from a photo ("a man", "a girl", "his").

``neutral(tokens, lang)`` rewrites a caption in the model's tokens (lower-case words joined by spaces; jieba
words for Chinese), so the decoder's tokens and the written caption say the same thing; the languages with
grammatical gender get their articles, adjectives and possessives agreed with the new noun:

    >>> neutral("a man in his car", "en")
    'a person in their car'
    >>> neutral("ein junger mann mit seinem hund", "de")
    'eine junge person mit ihrem hund'
    >>> neutral("un homme assis et une petite fille", "fr")
    'une personne assise et un petit enfant'
    >>> neutral("un hombre sentado", "es")
    'una persona sentada'
    >>> neutral("一个 小女孩 和 她 的 狗", "zh")
    '一个 小孩 和 自己 的 狗'

``genders(tokens, lang)`` says which genders a caption names ({"m"}, {"f"}, both or none), which
is how gender mistakes are counted against the references (``experiments/neutral_wording.py``).

Chosen words, per language: English person / people / child / children / parent / sibling / partner;
German Person (f) / Personen / Kind (n) / Kinder / Elternteil; Chinese 人 / 孩子 / 小孩 / 家长; French
personne (f) / enfant / parent; Spanish persona (f) / joven / infante / progenitor. Words a rule does not
know are kept; ``GENDERED`` lists what each language's rules remove.
"""
from __future__ import annotations

import re
from typing import Mapping

WORDINGS = ("as-learned", "neutral")  # DecodeConfig.wording: the decoder's own words, or no gender guesses
DEFAULT_WORDING = "neutral"  # no worse on dev in any language (docs/LANGUAGES.md), and no gender guesses


def check_wording(wording: str) -> str:
    """``wording`` if it is one of WORDINGS; ValueError naming them otherwise."""
    if wording not in WORDINGS:
        raise ValueError(f"wording must be one of {', '.join(WORDINGS)}, not {wording!r}")
    return wording


# -- English ---------------------------------------------------------------------------------------------
_EN_NOUNS = {  # word -> (replacement, gender it named, kind of person for a later "he"/"she")
    "man": ("person", "m"), "men": ("people", "m"), "woman": ("person", "f"), "women": ("people", "f"),
    "boy": ("child", "m"), "boys": ("children", "m"), "girl": ("child", "f"), "girls": ("children", "f"),
    "guy": ("person", "m"), "guys": ("people", "m"), "lady": ("person", "f"), "ladies": ("people", "f"),
    "gentleman": ("person", "m"), "gentlemen": ("people", "m"), "fellow": ("person", "m"),
    "mans": ("persons", "m"), "womans": ("persons", "f"),  # "man's" without its apostrophe
    "mother": ("parent", "f"), "father": ("parent", "m"), "mom": ("parent", "f"), "dad": ("parent", "m"),
    "mothers": ("parents", "f"), "fathers": ("parents", "m"), "mum": ("parent", "f"),
    "son": ("child", "m"), "daughter": ("child", "f"), "sons": ("children", "m"), "daughters": ("children", "f"),
    "brother": ("sibling", "m"), "sister": ("sibling", "f"), "brothers": ("siblings", "m"),
    "sisters": ("siblings", "f"), "husband": ("partner", "m"), "wife": ("partner", "f"),
    "boyfriend": ("partner", "m"), "girlfriend": ("partner", "f"), "bride": ("newlywed", "f"),
    "groom": ("newlywed", "m"), "groomsmen": ("wedding guests", "m"), "bridesmaids": ("wedding guests", "f"),
    "grandmother": ("grandparent", "f"), "grandfather": ("grandparent", "m"),
    "policeman": ("police officer", "m"), "policemen": ("police officers", "m"),
    "policewoman": ("police officer", "f"), "fireman": ("firefighter", "m"), "firemen": ("firefighters", "m"),
    "fisherman": ("angler", "m"), "fishermen": ("anglers", "m"), "cameraman": ("camera operator", "m"),
    "businessman": ("businessperson", "m"), "businessmen": ("businesspeople", "m"),
    "cowboy": ("rider", "m"), "cowboys": ("riders", "m"), "cowgirl": ("rider", "f"), "cowgirls": ("riders", "f"),
    "baseman": ("base player", "m"), "batsman": ("batter", "m"), "sportsman": ("athlete", "m"),
    "male": ("", "m"), "female": ("", "f"),
}
_EN_PRONOUNS = {"he": "m", "she": "f", "his": "m", "her": "f", "him": "m", "hers": "f",
                "himself": "m", "herself": "f"}
_EN_CHILD = {"child", "children"}
# after "her", these mean it is an object ("saw her in the park"), not a possessive ("her hat")
_EN_NOT_NOUN_START = {"a", "an", "the", "in", "on", "at", "to", "with", "and", "while", "as", "into", "from",
                      "by", "for", "of", "up", "down", "out", "off", "over", "back", "around", "through"}
_EN_KEEP_COWBOY = {"hat", "hats", "boots", "boot", "outfit", "costume"}  # "cowboy hat" -> "western hat"


def _en(words: list[str]) -> list[str]:
    out: list[str] = []
    antecedent = "person"  # what "he"/"she" refers back to, as a neutral noun phrase
    for i, w in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w in ("cowboy", "cowgirl") and nxt in _EN_KEEP_COWBOY:
            out.append("western")
        elif w == "bride" and nxt == "and" and words[i + 2:i + 3] == ["groom"]:
            out.append("couple")
            words[i + 2] = ""  # "bride and groom" -> "couple"; the rest is skipped below
            words[i + 1] = ""
        elif w == "" and i > 0:
            continue
        elif w in _EN_NOUNS:
            new = _EN_NOUNS[w][0]
            if not new:  # "a female runner" -> "a runner"; a bare "male"/"female" becomes "person"
                new = "" if nxt and nxt not in _EN_NOT_NOUN_START else "person"
            if new:
                out.extend(new.split())
                antecedent = "child" if new in _EN_CHILD else "person"
        elif w in ("he", "she"):
            out.extend(["the", antecedent])  # "the person runs": singular "they" would need "run"
        elif w == "her":
            out.append("them" if not nxt or nxt in _EN_NOT_NOUN_START else "their")
        elif w == "his":
            out.append("their")
        elif w == "hers":
            out.append("theirs")
        elif w == "him":
            out.append("them")
        elif w in ("himself", "herself"):
            out.append("themselves")
        else:
            out.append(w)
    text = " ".join(x for x in out if x)
    return re.sub(r"\ban (?=[^aeiou\s])", "a ", text).split()  # "an" left before a consonant


# -- German ----------------------------------------------------------------------------------------------
# noun -> (replacement, gender of the old noun, gender of the new one, named gender); "pl" = plural
_DE_NOUNS = {
    "mann": ("person", "m", "f", "m"), "mannes": ("person", "m", "f", "m"), "herr": ("person", "m", "f", "m"),
    "herrn": ("person", "m", "f", "m"), "frau": ("person", "f", "f", "f"), "dame": ("person", "f", "f", "f"),
    "bräutigam": ("person", "m", "f", "m"), "braut": ("person", "f", "f", "f"),
    "mädchen": ("kind", "n", "n", "f"), "mädchens": ("kind", "n", "n", "f"), "junge": ("kind", "m", "n", "m"),
    "jungen": ("kind", "m", "n", "m"), "sohn": ("kind", "m", "n", "m"), "tochter": ("kind", "f", "n", "f"),
    "vater": ("elternteil", "m", "n", "m"), "mutter": ("elternteil", "f", "n", "f"),
    "bruder": ("geschwisterkind", "m", "n", "m"), "schwester": ("geschwisterkind", "f", "n", "f"),
    "männer": ("personen", "pl", "pl", "m"), "männern": ("personen", "pl", "pl", "m"),
    "frauen": ("personen", "pl", "pl", "f"), "damen": ("personen", "pl", "pl", "f"),
    "herren": ("personen", "pl", "pl", "m"), "jungs": ("kinder", "pl", "pl", "m"),
    "töchter": ("kinder", "pl", "pl", "f"), "söhne": ("kinder", "pl", "pl", "m"),
}
_DE_PLURAL_OF = {"kind": "kinder", "person": "personen"}
_DE_DATIVE_PLURAL = {"kinder": "kindern"}
# the article (or contraction) before a noun of gender g -> its case
_DE_CASE = {
    "m": {"ein": "nom", "der": "nom", "einen": "acc", "den": "acc", "einem": "dat", "dem": "dat", "eines": "gen",
          "des": "gen", "im": "dat", "am": "dat", "zum": "dat", "vom": "dat", "beim": "dat", "kein": "nom",
          "keinen": "acc"},
    "f": {"eine": "acc", "die": "acc", "einer": "dat", "der": "dat", "zur": "dat", "keine": "acc"},
    "n": {"ein": "acc", "das": "acc", "einem": "dat", "dem": "dat", "eines": "gen", "des": "gen", "im": "dat",
          "am": "dat", "zum": "dat", "vom": "dat", "beim": "dat", "kein": "acc"},
}
_DE_ARTICLE = {  # (new gender, definite?, case) -> article
    ("f", False, "nom"): "eine", ("f", False, "acc"): "eine", ("f", False, "dat"): "einer", ("f", False, "gen"): "einer",
    ("f", True, "nom"): "die", ("f", True, "acc"): "die", ("f", True, "dat"): "der", ("f", True, "gen"): "der",
    ("n", False, "nom"): "ein", ("n", False, "acc"): "ein", ("n", False, "dat"): "einem", ("n", False, "gen"): "eines",
    ("n", True, "nom"): "das", ("n", True, "acc"): "das", ("n", True, "dat"): "dem", ("n", True, "gen"): "des",
}
_DE_DEFINITE = {"der", "den", "dem", "des", "die", "das"}
_DE_CONTRACTION_F = {"im": "in der", "am": "an der", "zum": "zur", "vom": "von der", "beim": "bei der"}
_DE_NEGATIVE = {"kein", "keinen", "keine", "keinem", "keiner"}
_DE_ADJ = re.compile(r"^[^\W\d_]{2,}?(e|er|es|en|em)$")
_DE_NOT_ADJ = {"eine", "einer", "einen", "einem", "eines", "keine", "keiner", "keinen", "keinem", "der", "den",
               "dem", "des", "die", "über", "unter", "hinter", "neben", "vor", "sehr", "seine", "seinem", "seinen",
               "seiner", "seines", "ihre", "ihrem", "ihren", "ihrer", "ihres", "zwei", "drei", "vier", "fünf",
               "mehrere", "viele", "einige", "andere", "alle", "beide", "gegen", "ohne", "oben", "unten",
               "hinten", "vorne", "innen", "außen", "wieder", "gerade", "ebene", "lange"}
_DE_POSSESSIVE = re.compile(r"^(sein|ihr)(e|em|en|er|es)?$")
_DE_DATIVE_PREP = {"mit", "von", "bei", "zu", "aus", "nach", "seit", "gegenüber"}


def _de_adjective(word: str, new: str, definite: bool, case: str, article: bool) -> str:
    """``word``'s ending for a noun of gender ``new`` in ``case`` after a definite/indefinite/no article."""
    stem = re.sub(r"(e|er|es|en|em)$", "", word)
    if case in ("dat", "gen"):
        return stem + ("en" if article else ("er" if new == "f" else "em"))
    if new == "f":
        return stem + "e"
    return stem + ("e" if definite else "es")  # neuter nominative/accusative: "das kleine", "ein kleines"


def _de_is_noun_junge(words: list[str], i: int, nouns: set[str]) -> bool:
    """Is ``junge``/``jungen`` at ``i`` the noun (a boy) rather than the adjective (young ...)? The adjective
    is followed, across other adjectives, by a noun, or comes after a feminine article ("eine junge ...")."""
    if i > 0 and words[i - 1] in ("eine", "einer", "keine", "keiner"):
        return False
    for w in words[i + 1:i + 4]:
        if _DE_IN.match(w):  # "eine junge Läuferin"
            return False
        if w in _DE_NOUNS or w in nouns or w in NEW_WRITTEN_FORMS["de"] or w in ("menschen", "leute", "paar"):
            return False
        if not (_DE_ADJ.match(w) and w not in _DE_NOT_ADJ):
            return True
    return True


def _de(words: list[str], nouns: set[str]) -> list[str]:
    out = list(words)
    antecedent = None  # the new gender ("f", "n", "pl") of the last person noun rewritten
    for i, w in enumerate(words):
        if w in ("junge", "jungen") and not _de_is_noun_junge(words, i, nouns):
            continue
        if w in _DE_NOUNS:
            new_word, old, new, _ = _DE_NOUNS[w]
            j = i - 1
            while j >= 0 and i - j <= 3 and _DE_ADJ.match(words[j]) and words[j] not in _DE_NOT_ADJ and \
                    words[j] not in nouns and (words[j] not in _DE_NOUNS or words[j] in ("junge", "jungen")):
                j -= 1  # the adjectives before the noun ("Dame" is a noun, "junge" here the adjective)
            article = words[j] if j >= 0 else ""
            dative_den = article == "den" and j >= 1 and words[j - 1] in _DE_DATIVE_PREP  # "mit den Jungen"
            if old == "pl" or (w == "mädchen" and article not in _DE_CASE["n"]) or \
                    (w == "jungen" and (article not in _DE_CASE["m"] or dative_den)):
                # plural (also "zwei Mädchen", "die Jungen"): no article or adjective changes
                plural = new_word if old == "pl" else _DE_PLURAL_OF[new_word]
                dative = article in ("den",) or (j >= 0 and words[j] in _DE_DATIVE_PREP) or \
                    (j >= 1 and words[j - 1] in _DE_DATIVE_PREP)
                out[i] = _DE_DATIVE_PLURAL.get(plural, plural) if dative else plural
                antecedent = "pl"
                continue
            case = _DE_CASE[old].get(article, "nom")
            if old == "f" and article in ("die", "eine", "keine"):
                case = "nom"
            out[i] = new_word
            antecedent = new
            definite = article in _DE_DEFINITE
            has_article = article in _DE_CASE[old] and article not in _DE_CONTRACTION_F
            for k in range(j + 1, i):
                out[k] = _de_adjective(words[k], new, definite, case,
                                       has_article or article in _DE_CONTRACTION_F or article == "zur")
                if article in ("ein", "kein") and new == "n" and case in ("nom", "acc"):
                    out[k] = re.sub(r"e$", "es", out[k]) if not out[k].endswith("es") else out[k]
            if j >= 0 and article in _DE_CASE[old]:
                if article in _DE_CONTRACTION_F:
                    out[j] = _DE_CONTRACTION_F[article] if new == "f" else article
                elif article in _DE_NEGATIVE:
                    out[j] = "k" + _DE_ARTICLE[(new, False, case)]
                elif article != "zur":
                    out[j] = _DE_ARTICLE[(new, definite, case)]
                else:
                    out[j] = "zur" if new == "f" else "zum"
        elif w == "er" and antecedent in ("f", "n"):
            out[i] = "sie" if antecedent == "f" else "es"
        elif antecedent and _DE_POSSESSIVE.match(w):
            m = _DE_POSSESSIVE.match(w)
            out[i] = ("sein" if antecedent == "n" else "ihr") + (m.group(2) or "")
    return " ".join(out).split()


def _predicate(words: list[str], i: int, copulas: set[str]) -> int | None:
    """Index of the word after the first copula following the noun at ``i`` ("una persona con una camisa roja
    está sentada"), or None when a conjunction or another copula's clause comes first."""
    for k in range(i + 1, min(i + 8, len(words) - 1)):
        if words[k] in ("y", "et", "und", "mientras", "pendant", "qui", "que"):
            return None
        if words[k] in copulas:
            return k + 1
    return None


# -- French ----------------------------------------------------------------------------------------------
_FR_NOUNS = {  # noun -> (replacement, old gender, new gender, named gender)
    "homme": ("personne", "m", "f", "m"), "hommes": ("personnes", "m", "f", "m"),
    "femme": ("personne", "f", "f", "f"), "femmes": ("personnes", "f", "f", "f"),
    "dame": ("personne", "f", "f", "f"), "dames": ("personnes", "f", "f", "f"),
    "monsieur": ("personne", "m", "f", "m"), "messieurs": ("personnes", "m", "f", "m"),
    "gars": ("personne", "m", "f", "m"),
    "garçon": ("enfant", "m", "m", "m"), "garçons": ("enfants", "m", "m", "m"),
    "fille": ("enfant", "f", "m", "f"), "filles": ("enfants", "f", "m", "f"),
    "fillette": ("enfant", "f", "m", "f"), "fillettes": ("enfants", "f", "m", "f"),
    "père": ("parent", "m", "m", "m"), "mère": ("parent", "f", "m", "f"),
}
_FR_M2F = {"un": "une", "le": "la", "l'": "la", "du": "de la", "au": "à la", "ce": "cette", "cet": "cette",
           "son": "sa", "mon": "ma", "ton": "ta", "petit": "petite", "grand": "grande", "vieux": "vieille",
           "vieil": "vieille", "gros": "grosse", "beau": "belle", "bel": "belle", "seul": "seule",
           "petits": "petites", "grands": "grandes", "gros_pl": "grosses", "beaux": "belles", "seuls": "seules",
           "noir": "noire", "noirs": "noires", "blanc": "blanche", "blancs": "blanches", "blond": "blonde",
           "blonds": "blondes", "brun": "brune", "bruns": "brunes", "âgé": "âgée", "âgés": "âgées",
           "assis": "assise", "accroupi": "accroupie", "accroupis": "accroupies", "vêtu": "vêtue",
           "vêtus": "vêtues", "barbu": "barbue", "barbus": "barbues", "nu": "nue", "asiatique": "asiatique",
           "tous": "toutes", "autres": "autres", "plusieurs": "plusieurs", "certains": "certaines"}
_FR_F2M = {v: k for k, v in _FR_M2F.items() if not k.endswith("_pl") and k not in ("vieil", "bel", "cet", "l'")}
_FR_F2M.update({"la": "le", "de la": "du", "vieille": "vieux", "belle": "beau", "cette": "ce", "grosses": "gros"})
_FR_STOP = {"et", "en", "avec", "qui", "sur", "dans", "de", "à", "portant", "tenant", "debout", "lui", "il", "elle"}


def _fr_agree(word: str, to: str, plural: bool = False) -> str:
    """An article or adjective agreed with a noun now of gender ``to`` ("m" or "f"), plural or not (only
    "assis", "gros" and the like look the same in both numbers)."""
    table = _FR_M2F if to == "f" else _FR_F2M
    if word in table:
        agreed = table[word]
        return agreed + "s" if plural and to == "f" and word.endswith("s") and not agreed.endswith("s") else agreed
    if to == "f" and re.search(r"é(s?)$", word):
        return re.sub(r"é(s?)$", r"ée\1", word)
    if to == "m" and re.search(r"ée(s?)$", word):
        return re.sub(r"ée(s?)$", r"é\1", word)
    return word


def _fr(words: list[str]) -> list[str]:
    out = list(words)
    antecedent = None
    for i, w in enumerate(words):
        if w in _FR_NOUNS:
            new_word, old, new, _ = _FR_NOUNS[w]
            out[i] = new_word
            antecedent = new
            if old == new:
                if new_word.startswith("enfant") and i > 0 and words[i - 1] in ("le", "la"):
                    out[i - 1] = "l'"  # "le garçon" -> "l'enfant"
                elif new_word.startswith("enfant") and i > 0 and words[i - 1] in ("ce",):
                    out[i - 1] = "cet"
                continue
            j = i - 1  # articles and adjectives before the noun
            while j >= 0 and i - j <= 3 and (words[j] in _FR_M2F or words[j] in _FR_F2M or words[j] in
                                            ("une", "la", "jeune", "jeunes", "les", "des", "deux", "trois")):
                out[j] = _fr_agree(words[j], new)
                if words[j] in ("un", "une", "le", "la", "l'", "les", "des", "du", "au", "ce", "cette", "son", "sa"):
                    break
                j -= 1
            if new == "m" and new_word.startswith("enfant") and i > 0:  # elision before the vowel of "enfant"
                prev = out[i - 1]
                out[i - 1] = {"le": "l'", "la": "l'", "de la": "de l'", "du": "de l'", "à la": "à l'", "au": "à l'",
                              "ce": "cet", "cette": "cet"}.get(prev, prev)
            after = range(i + 1, min(i + 3, len(words)))
            plural = new_word.endswith("s")
            k = _predicate(words, i, {"est", "sont"} if w.endswith("s") else {"est"})
            if k is not None and k - 1 > i + 1:  # "une personne en maillot de bain est assise"
                out[k] = _fr_agree(words[k], new, plural)
            elif k is not None:  # "la personne est assise"
                after = range(k, min(k + 1, len(words)))
            for k in after:  # adjectives and participles after it
                if words[k] in _FR_STOP:
                    break
                agreed = _fr_agree(words[k], new, plural)
                if agreed == words[k] and words[k] not in _FR_M2F and words[k] not in _FR_F2M:
                    break
                out[k] = agreed
        elif w in ("il", "elle") and antecedent:
            out[i] = "elle" if antecedent == "f" else "il"
        elif w in ("ils", "elles") and antecedent:
            out[i] = "elles" if antecedent == "f" else "ils"
    return " ".join(out).split()


# -- Spanish ---------------------------------------------------------------------------------------------
_ES_NOUNS = {
    "hombre": ("persona", "m", "f", "m"), "hombres": ("personas", "m", "f", "m"),
    "mujer": ("persona", "f", "f", "f"), "mujeres": ("personas", "f", "f", "f"),
    "señor": ("persona", "m", "f", "m"), "señora": ("persona", "f", "f", "f"),
    "señores": ("personas", "m", "f", "m"), "señoras": ("personas", "f", "f", "f"),
    "dama": ("persona", "f", "f", "f"), "damas": ("personas", "f", "f", "f"),
    "caballero": ("persona", "m", "f", "m"), "caballeros": ("personas", "m", "f", "m"),
    "chico": ("joven", "m", "m", "m"), "chicos": ("jóvenes", "m", "m", "m"),
    "chica": ("joven", "f", "m", "f"), "chicas": ("jóvenes", "f", "m", "f"),
    "muchacho": ("joven", "m", "m", "m"), "muchachos": ("jóvenes", "m", "m", "m"),
    "muchacha": ("joven", "f", "m", "f"), "muchachas": ("jóvenes", "f", "m", "f"),
    "niño": ("infante", "m", "m", "m"), "niños": ("infantes", "m", "m", "m"),
    "niña": ("infante", "f", "m", "f"), "niñas": ("infantes", "f", "m", "f"),
    "padre": ("progenitor", "m", "m", "m"), "madre": ("progenitor", "f", "m", "f"),
}
_ES_M2F = {"un": "una", "el": "la", "del": "de la", "al": "a la", "este": "esta", "ese": "esa",
           "aquel": "aquella", "unos": "unas", "los": "las", "estos": "estas", "otro": "otra", "otros": "otras",
           "todos": "todas", "muchos": "muchas", "algunos": "algunas", "dos_": "dos"}
_ES_F2M = {v: k for k, v in _ES_M2F.items() if not k.endswith("_")}
_ES_ADJ_O = {"pequeño", "viejo", "alto", "bajo", "rubio", "moreno", "solo", "blanco", "negro", "gordo", "delgado",
             "mojado", "vestido", "sentado", "parado", "acostado", "tumbado", "asiático", "mismo", "rojo"}
_ES_STOP = {"y", "con", "en", "de", "que", "a", "sobre", "mientras"}


def _es_agree(word: str, to: str) -> str:
    """An article or adjective agreed with a noun now of gender ``to``."""
    table = _ES_M2F if to == "f" else _ES_F2M
    if word in table:
        return table[word]
    base = re.sub(r"[oa](s?)$", r"o\1", word)
    if base.rstrip("s") in _ES_ADJ_O or re.search(r"(ad|id)[oa]s?$", word):
        return re.sub(r"[oa](s?)$", (r"a\1" if to == "f" else r"o\1"), word)
    return word


def _es(words: list[str]) -> list[str]:
    out = list(words)
    antecedent = None
    for i, w in enumerate(words):
        if w not in _ES_NOUNS:
            if w in ("él", "ella") and antecedent:
                out[i] = "ella" if antecedent == "f" else "él"
            continue
        new_word, old, new, _ = _ES_NOUNS[w]
        out[i] = new_word
        antecedent = new
        if old == new:
            continue
        j = i - 1
        while j >= 0 and i - j <= 3:
            agreed = _es_agree(words[j], new)
            if agreed == words[j] and words[j] not in ("joven", "jóvenes", "gran", "dos", "tres"):
                break
            out[j] = agreed
            j -= 1
        k = _predicate(words, i, {"están", "son", "estaban"} if w.endswith("s") else {"está", "es", "estaba"})
        if k is not None:  # "una persona con una camisa roja está sentada"
            out[k] = _es_agree(words[k], new)
        for k in range(i + 1, min(i + 3, len(words))):
            if words[k] in _ES_STOP or words[k].endswith("ndo"):
                break
            agreed = _es_agree(words[k], new)
            if agreed == words[k] and words[k] not in ("joven", "jóvenes", "mayor", "mayores"):
                break
            out[k] = agreed
    return " ".join(out).split()


# -- Chinese ---------------------------------------------------------------------------------------------
_ZH_WORDS = {  # jieba word -> (replacement, named gender)
    "男人": ("人", "m"), "女人": ("人", "f"), "男子": ("人", "m"), "女子": ("人", "f"), "男士": ("人", "m"),
    "女士": ("人", "f"), "男性": ("人", "m"), "女性": ("人", "f"), "美女": ("人", "f"), "先生": ("人", "m"),
    "妇女": ("人", "f"), "中年男人": ("中年人", "m"), "中年男子": ("中年人", "m"), "中年女人": ("中年人", "f"),
    "中年妇女": ("中年人", "f"), "胖女人": ("胖子", "f"), "胖男人": ("胖子", "m"), "老人家": ("老人家", ""),
    "男孩": ("孩子", "m"), "女孩": ("孩子", "f"), "男孩子": ("孩子", "m"), "女孩子": ("孩子", "f"),
    "男生": ("孩子", "m"), "女生": ("孩子", "f"), "男孩儿": ("孩子", "m"), "女孩儿": ("孩子", "f"),
    "小男孩": ("小孩", "m"), "小女孩": ("小孩", "f"), "小女生": ("小孩", "f"), "小男生": ("小孩", "m"),
    "小姑娘": ("小孩", "f"), "姑娘": ("人", "f"), "小伙子": ("人", "m"), "一个男孩": ("一个孩子", "m"),
    "一个女孩": ("一个孩子", "f"), "男女": ("人", "mf"), "一男一女": ("两个人", "mf"),
    "母亲": ("家长", "f"), "父亲": ("家长", "m"), "妈妈": ("家长", "f"), "爸爸": ("家长", "m"),
    "女儿": ("孩子", "f"), "儿子": ("孩子", "m"), "母子": ("亲子", "mf"), "母女": ("亲子", "f"),
    "父子": ("亲子", "m"), "父女": ("亲子", "mf"), "新娘": ("新人", "f"), "新郎": ("新人", "m"),
    "她们": ("他们", "f"),  # 他们 is the plural for mixed or unknown groups
}
_ZH_PRONOUNS = {"他": "m", "她": "f"}


def _zh(words: list[str]) -> list[str]:
    out = []
    for i, w in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w in _ZH_WORDS:
            out.append(_ZH_WORDS[w][0])
        elif w in _ZH_PRONOUNS:
            out.append("自己" if nxt == "的" else "这个人")  # "和她的狗" -> "和自己的狗"
        elif w in ("男", "女"):  # a bare 男/女 before a noun is an adjective ("女 运动员"): dropped
            if not nxt or nxt in ("的", "和", "在", "。"):
                out.append("人")
        else:
            out.append(w)
    return out


# -- every language --------------------------------------------------------------------------------------
GENDERED: dict[str, dict[str, str]] = {  # lang -> gendered person word -> the gender it names ("m", "f", "mf")
    "en": {**{w: g for w, (_, g) in _EN_NOUNS.items()}, **_EN_PRONOUNS},
    "de": {w: v[3] for w, v in _DE_NOUNS.items()},  # "er" is left out: it is as often a dog ("der Hund")
    "fr": {w: v[3] for w, v in _FR_NOUNS.items()},
    "es": {w: v[3] for w, v in _ES_NOUNS.items()},
    "zh": {**{w: g for w, (_, g) in _ZH_WORDS.items() if g}, **_ZH_PRONOUNS, "男": "m", "女": "f"},
}
_DE_IN = re.compile(r"^[^\W\d_]{3,}(er|ist|aner)in(nen)?$")  # Radfahrerin, Polizistin: feminine agent nouns
NEW_WRITTEN_FORMS = {"de": {"person": "Person", "personen": "Personen", "kind": "Kind", "kinder": "Kinder",
                            "kindern": "Kindern", "elternteil": "Elternteil", "geschwisterkind": "Geschwisterkind"}}


def genders(tokens: str, lang: str, nouns: set[str] | None = None) -> set[str]:
    """The genders ("m", "f") the caption's person words name (German "junge" only where it is the noun;
    German feminine agent nouns such as "radfahrerin" count as "f")."""
    table = GENDERED.get(lang, {})
    words = tokens.split()
    found: set[str] = set()
    for i, w in enumerate(words):
        g = table.get(w)
        if lang == "de" and w in ("junge", "jungen") and not _de_is_noun_junge(words, i, nouns or set()):
            g = None
        if lang == "en" and w in ("cowboy", "cowgirl") and i + 1 < len(words) and words[i + 1] in _EN_KEEP_COWBOY:
            g = None
        if lang == "de" and g is None and _DE_IN.match(w) and w not in ("termin", "benzin"):
            g = "f"
        if g:
            found.update(g)
    return found


# "a man and a woman" becomes "a person and a person" word by word: said as a pair it is "two people".
# (article, noun) twice, joined by the language's "and" -> the plural with "two" (tokens, lower case).
_PAIRS = {
    "en": (r"(?:a|the) (person|child) and (?:a|the) \1", {"person": "two people", "child": "two children"}),
    "de": (r"(?:eine|die) (person) und (?:eine|die) \1|(?:ein|das) (kind) und (?:ein|das) \2",
           {"person": "zwei personen", "kind": "zwei kinder"}),
    "fr": (r"(?:une|la) (personne) et (?:une|la) \1|(?:un|l') (enfant) et (?:un|l') \2",
           {"personne": "deux personnes", "enfant": "deux enfants"}),
    "es": (r"(?:una|la) (persona) y (?:una|la) \1|(?:un|el) (infante) y (?:un|el) \2",
           {"persona": "dos personas", "infante": "dos infantes"}),
    "zh": (r"一个 (人|小孩|孩子) 和 一个 \1", {"人": "两个 人", "小孩": "两个 小孩", "孩子": "两个 孩子"}),
}


_PAIR_MARK = "\x00"  # marks where a pair was joined (tokens never hold it), so only what follows it is agreed
_PAIR_AGREEMENT = {  # (the pair's plural noun -> its gender, how a plural's word agrees, plural copulas, stops)
    "fr": ({"personnes": "f", "enfants": "m"}, lambda word, to: _fr_agree(word, to, plural=True), {"sont"},
           _FR_STOP),
    "es": ({"personas": "f", "infantes": "m"}, _es_agree, {"están", "son", "estaban"}, _ES_STOP),
}


def _pairs(text: str, lang: str) -> str:
    """Two neutral person words joined by "and" said as a pair: "a person and a person" -> "two people";
    in French and Spanish what is said of the pair agrees with its noun ("un homme et une femme sont assis"
    -> "deux personnes sont assises")."""
    if lang not in _PAIRS:
        return text
    pattern, plural = _PAIRS[lang]
    mark = _PAIR_MARK if lang in _PAIR_AGREEMENT else ""
    paired = re.sub(rf"(?<!\S){pattern}(?!\S)", lambda m: mark + plural[next(g for g in m.groups() if g)], text)
    if not mark:
        return paired
    genders_of, agree, copulas, stop = _PAIR_AGREEMENT[lang]
    words = paired.split()
    out = [w.replace(_PAIR_MARK, "") for w in words]
    for i, w in enumerate(words):
        if not (w.startswith(_PAIR_MARK) and i + 1 < len(words) and words[i + 1] in genders_of):
            continue
        gender = genders_of[words[i + 1]]
        k = _predicate(out, i + 1, copulas)
        for j in ([k] if k is not None else range(i + 2, min(i + 4, len(out)))):
            if out[j] in stop:
                break
            out[j] = agree(out[j], gender)
    return " ".join(out)


def neutral(tokens: str, lang: str, nouns: set[str] | None = None) -> str:
    """``tokens`` (a caption in the model's tokens) with gendered person words replaced by neutral ones, the
    sentence kept grammatical. ``nouns`` (German): the lower-case words written with a capital, which tells
    the adjective "junge" (young) from the noun "Junge" (boy); the model folder's truecase table gives them."""
    words = tokens.split()
    if not words:
        return tokens
    rewrite = {"en": _en, "fr": _fr, "es": _es, "zh": _zh}.get(lang)
    if lang == "de":
        return _pairs(" ".join(_de(words, nouns or set())), lang)
    return _pairs(" ".join(rewrite(words)), lang) if rewrite else tokens


def german_nouns(truecase: Mapping[str, str]) -> set[str]:
    """The lower-case words a truecase table writes with a capital (German nouns)."""
    return {w for w, form in truecase.items() if form[:1].isupper()}


def written_forms(lang: str, truecase: Mapping[str, str]) -> dict[str, str]:
    """The truecase table plus the written forms of the words neutral wording brings in ("person" ->
    "Person"), so they are capitalised even where the training captions never used them."""
    return {**NEW_WRITTEN_FORMS.get(lang, {}), **truecase}


__all__ = ["WORDINGS", "DEFAULT_WORDING", "check_wording", "neutral", "genders", "GENDERED", "german_nouns",
           "written_forms"]
