"""The vocabulary: words <-> integer ids, fit on training captions only, saved as JSON (never pickle)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)  # ids 0..3; 0 is padding (masked everywhere)
FORMAT = "captioner-vocab/1"


class VocabError(ValueError):
    """A vocabulary file that cannot be used."""


def word_counts(captions: Iterable[str]) -> Counter:
    """How often each word occurs in the given (cleaned) captions."""
    counts: Counter = Counter()
    for caption in captions:
        counts.update(caption.split())
    return counts


class Vocabulary:
    """Maps words to ids and back. ``words[i]`` is the word with id ``i``."""

    def __init__(self, words: Sequence[str]):
        if tuple(words[:4]) != SPECIAL_TOKENS:
            raise VocabError(f"vocabulary must start with {SPECIAL_TOKENS}, got {tuple(words[:4])}")
        if len(set(words)) != len(words):
            raise VocabError("vocabulary has duplicate words")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.pad_id, self.start_id, self.end_id, self.unk_id = range(4)

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.words == other.words

    @classmethod
    def fit(cls, training_captions: Iterable[str], min_count: int = 5) -> "Vocabulary":
        """Keep words seen at least ``min_count`` times; order by frequency, then alphabetically."""
        counts = word_counts(training_captions)
        kept = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIAL_TOKENS),
                      key=lambda w: (-counts[w], w))
        return cls([*SPECIAL_TOKENS, *kept])

    def encode(self, caption: str, max_words: int | None = None) -> list[int]:
        """``"a dog runs"`` -> ``[start, a, dog, runs, end]`` ids; unknown words become ``<unk>``."""
        words = caption.split()[:max_words] if max_words else caption.split()
        return [self.start_id, *(self.index.get(w, self.unk_id) for w in words), self.end_id]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text, stopping at ``<end>`` and leaving out start/pad markers."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            words.append(self.words[i] if 0 <= i < len(self.words) else UNK)
        return " ".join(words)

    def to_json(self) -> dict:
        return {"format": FORMAT, "words": self.words}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise VocabError(f"{path}: vocabulary file not found") from err
        except (OSError, ValueError) as err:
            raise VocabError(f"{path}: not a readable JSON vocabulary ({err})") from err
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("words"), list):
            raise VocabError(f"{path}: not a captioner vocabulary (expected format {FORMAT!r})")
        try:
            return cls(data["words"])
        except VocabError as err:
            raise VocabError(f"{path}: {err}") from err
