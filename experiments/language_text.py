"""How each language's text is cut into tokens, measured on the data (no training): the choices behind
``captioner/serving/languages.py``.

- Chinese: one token per character against jieba's word segmentation (what the shipped model uses):
  vocabulary size at the training threshold, how much of dev the vocabulary covers, tokens per caption.
- German: lower-case tokens with capitals restored for display (what the models use) against keeping the
  written case: vocabulary size and dev coverage, and how often the restored spelling equals the one the
  dev references were written with.

    pip install jieba   # only for this measurement
    python experiments/language_text.py [--data ../shared/flickr8k] [--json docs/language-text.json]
"""
from __future__ import annotations

import argparse
import sys
import unicodedata
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.report import emit  # noqa: E402

from captioner.pipeline.data import _read_token_file, load_dataset, resolve_data_dir  # noqa: E402
from captioner.serving.languages import _WORD, language, truecase_table  # noqa: E402

MIN_COUNT = 5  # TrainConfig.min_word_count


def coverage(train: list[list[str]], dev: list[list[str]]) -> dict:
    """Vocabulary (tokens seen >= MIN_COUNT times in training) and how much of dev it covers."""
    counts = Counter(t for caption in train for t in caption)
    vocab = {t for t, c in counts.items() if c >= MIN_COUNT}
    dev_tokens = [t for caption in dev for t in caption]
    return {"vocabulary": len(vocab),
            "dev_tokens_covered": round(sum(t in vocab for t in dev_tokens) / len(dev_tokens), 4),
            "dev_captions_fully_covered": round(sum(all(t in vocab for t in c) for c in dev) / len(dev), 4),
            "tokens_per_caption": round(sum(map(len, dev)) / len(dev), 2)}


def raw_captions(root: Path, code: str) -> dict[str, list[str]]:
    raw, _, _ = _read_token_file(root / language(code).captions_file)
    return raw


def chinese(root: Path) -> dict:
    import jieba

    jieba.setLogLevel(60)
    data = load_dataset(root, "zh")
    raw = raw_captions(root, "zh")
    train, dev = data.split_names("train"), data.split_names("dev")
    spec = language("zh")

    def words(text: str) -> list[str]:
        return [w for w in jieba.lcut(unicodedata.normalize("NFKC", text).lower()) if spec.tokenize(w)]

    return {"characters": coverage([spec.tokenize(c) for n in train for c in raw[n]],
                                   [spec.tokenize(c) for n in dev for c in raw[n]]),
            "jieba_words": coverage([words(c) for n in train for c in raw[n]], [words(c) for n in dev for c in raw[n]]),
            "jieba": jieba.__version__}


def german(root: Path) -> dict:
    data = load_dataset(root, "de")
    raw = raw_captions(root, "de")
    train, dev = data.split_names("train"), data.split_names("dev")
    spec = language("de")

    def cased(text: str) -> list[str]:
        return _WORD.findall(unicodedata.normalize("NFC", text).replace("’", "'"))

    table = truecase_table((c for n in train for c in raw[n]), spec)
    restored = same = 0
    lower_captions = 0
    for caption in (c for n in dev for c in raw[n]):
        written = cased(caption)[1:]  # the first word is capitalised whatever it is
        if not any(w[:1].isupper() for w in written):
            lower_captions += 1  # written all in lower case: no spelling to compare with
            continue
        for word in written:
            restored += 1
            same += table.get(word.lower(), word.lower()) == word
    return {"lower_case_tokens": coverage([spec.tokenize(c) for n in train for c in raw[n]],
                                          [spec.tokenize(c) for n in dev for c in raw[n]]),
            "written_case_tokens": coverage([cased(c) for n in train for c in raw[n]],
                                            [cased(c) for n in dev for c in raw[n]]),
            "restored_spelling_matches_dev": round(same / restored, 4), "dev_words_compared": restored,
            "dev_captions_all_lower_case": lower_captions, "truecase_entries": len(table)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    root = resolve_data_dir(args.data)
    figures = {"zh": chinese(root), "de": german(root), "min_count": MIN_COUNT, "split": "train (vocabulary), dev (coverage)",
               "command": "python experiments/language_text.py"}
    return emit(figures, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
