"""Settings for training and decoding: one place, documented defaults, JSON round trip.

Every field can be overridden on the command line (``--field value``); see ``cli.py``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_SIZE = 299  # Xception's native input side; training and serving both use it.
FEATURE_DIM = 2048  # pooled Xception-notop output width.
GRID_SIZE = 10  # Xception-notop's spatial output is GRID_SIZE x GRID_SIZE regions at 299 input.


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (saved as ``config.json`` beside the checkpoint)."""

    lang: str = "en"  # caption language (serving/languages.py: en, de, zh, fr, es); other than en reads i18n/<lang>/Flickr8k.token.txt
    init_from: str = ""  # a model folder whose layers of the same name and shape start this decoder (e.g. the English decoder's image and RNN layers for another language); "" = random
    decoder: str = "merge"  # a family in serving/decoders/registry.py: "merge" = pooled features added to the RNN output; "attention" = soft attention over regions
    rnn: str = "lstm"  # "lstm" or "gru"
    embedding_dim: int = 256  # word-embedding width
    embedding_init: str = "random"  # "random" or "word2vec" (skip-gram vectors learned from the training captions; still trained)
    units: int = 512  # RNN units and width of the merge layers
    dropout: float = 0.5  # on the image features, the word embeddings and the merged vector
    attention_grid: int = 5  # attention decoder: regions per side (Xception's 10x10 grid average-pooled; 10 = none)
    attention_units: int = 256  # attention decoder: width of the additive attention layer
    attention_reg: float = 0.05  # attention decoder: weight of the doubly stochastic penalty (0 = off)
    augment: float = 0.0  # merge decoder: chance a training caption is shown with its image's augmented copy (flip with left/right swapped, crop, brightness) instead of the original; 0 = off
    label_smoothing: float = 0.0  # share of each target's probability spread over the whole vocabulary
    min_word_count: int = 5  # words seen fewer times in *training* captions become <unk>
    max_caption_words: int = 32  # longer captions are cut for the loss (evaluation references never are)
    epochs: int = 30  # upper bound; early stopping usually ends sooner
    select_on: str = "tune_cider"  # keep the epoch with the best "tune_cider" (greedy CIDEr on the held-out training images) or "dev_loss"
    patience: int = 3  # epochs without improvement (of select_on) before stopping
    average_best: int = 3  # also try the average of the best N epochs' weights; kept only if it scores better (1 = off)
    lr_patience: int = 1  # epochs without improvement before the learning rate is halved (0 = never)
    tune_images: int = 300  # training images held out to choose decoding settings (at most 10%; never dev; with --init-from, only images that folder held out too)
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 42
    storage: str = "float32"  # precision of decoder.keras's weights on disk: "float16" halves the file (loaded back as float32)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build from a dict, ignoring keys this version does not know (forward compatible)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def validate(self) -> None:
        """Raise ValueError with a specific message for settings that cannot work."""
        from .serving.languages import language

        language(self.lang)  # LanguageError (a ValueError) naming the known languages
        if self.rnn not in ("lstm", "gru"):
            raise ValueError(f"rnn must be 'lstm' or 'gru', not {self.rnn!r}")
        from .serving.decoders.registry import family

        decoder = family(self.decoder)  # ValueError naming the known families
        if self.embedding_init not in ("random", "word2vec"):
            raise ValueError(f"embedding_init must be 'random' or 'word2vec', not {self.embedding_init!r}")
        if not 0.0 <= self.augment <= 1.0:
            raise ValueError(f"augment must be a probability in [0, 1], not {self.augment}")
        if self.augment and decoder.feature_kind != "pooled":
            raise ValueError(f"augment needs a decoder that reads pooled features (the merge decoder, say), not {self.decoder!r}: set augment=0 or decoder='merge'")
        if self.storage not in ("float32", "float16"):
            raise ValueError(f"storage must be 'float32' or 'float16', not {self.storage!r}")
        if self.select_on not in ("tune_cider", "dev_loss"):
            raise ValueError(f"select_on must be 'tune_cider' or 'dev_loss', not {self.select_on!r}")
        if self.attention_grid not in (1, 2, 5, 10):
            raise ValueError(f"attention_grid must divide Xception's 10x10 grid (1, 2, 5 or 10), not {self.attention_grid}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), not {self.label_smoothing}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        for name in ("embedding_dim", "units", "min_word_count", "max_caption_words", "epochs", "batch_size",
                     "attention_units", "average_best"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")


RERANKINGS = ("auto", "score", "consensus")  # DecodeConfig.rerank's values


@dataclass
class DecodeConfig:
    """How captions are generated at inference time."""

    beam_width: int = 3  # 1 = greedy
    n_best: int = 1  # how many captions to return per image
    max_words: int = 30  # hard cap on generated words
    length_alpha: float = 0.7  # length normalisation: score = log p / len ** alpha (0 = none)
    block_ngram: int = 3  # never repeat one of the caption's own n-grams ("a man in a man in"); 0 = allow, else >= 2
    allow_unk: bool = False  # let captions contain <unk> (the rare-word token); off for people, on for diagnostics
    wording: str = "neutral"  # how captions are written: "neutral" (person words without gender: "a person", "their"; serving/neutral.py) or "as-learned" (the decoder's own words); tokens stay the decoder's
    read_text: str = "auto"  # read the text in the picture (serving/reading.py): "auto" when a quick look finds text, "on" always, "off" never
    rerank: str = "auto"  # how the beam's captions are ordered: "score" (the decoder's length-normalised log-probability), "consensus" (agreement with what people said about the most similar training photos; serving/rerank.py), "auto" (the model folder's choice in decoding.json, else "score")

    def validate(self) -> None:
        if not 1 <= self.beam_width <= 20:
            raise ValueError(f"beam width must be between 1 and 20, not {self.beam_width}")
        if not 1 <= self.n_best <= self.beam_width:
            raise ValueError(f"n_best must be between 1 and the beam width ({self.beam_width}), not {self.n_best}")
        check_block_ngram(self.block_ngram)
        if not (isinstance(self.length_alpha, (int, float)) and 0 <= self.length_alpha <= 3):  # NaN fails too
            raise ValueError(f"length_alpha must be a number between 0 and 3, not {self.length_alpha}")
        if not 1 <= self.max_words <= 100:
            raise ValueError(f"max_words must be between 1 and 100, not {self.max_words}")
        from .serving.neutral import check_wording

        check_wording(self.wording)
        if self.read_text not in ("auto", "on", "off"):
            raise ValueError(f"read_text must be one of auto, on, off, not {self.read_text!r}")
        if self.rerank not in RERANKINGS:
            raise ValueError(f"rerank must be one of {', '.join(RERANKINGS)}, not {self.rerank!r}")


def check_block_ngram(n: int) -> None:
    """ValueError unless ``n`` is 0 (no blocking) or at least 2. 1 is refused rather than read as "off":
    blocking repeated 1-grams would forbid any word twice ("a dog chases a ball"), which nobody wants."""
    if n < 0 or n == 1:
        raise ValueError(f"block_ngram must be 0 (off) or at least 2, not {n}")


def save_json(data: dict[str, Any], path: Path) -> None:
    """Write JSON atomically (a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def field_help() -> dict[str, str]:
    """Help text for each TrainConfig field, taken from the comments above (for argparse)."""
    import inspect
    import re

    source = inspect.getsource(TrainConfig)
    helps: dict[str, str] = {}
    for line in source.splitlines():
        m = re.match(r"\s+(\w+): \w+ = ([^#]+?)\s*(?:#\s*(.*))?$", line)
        if m:
            helps[m.group(1)] = (m.group(3) or "") + f" (default {m.group(2).strip()})"
    return helps


__all__ = ["TrainConfig", "DecodeConfig", "RERANKINGS", "check_block_ngram", "save_json", "field_help", "IMAGE_SIZE", "FEATURE_DIM", "GRID_SIZE"]
