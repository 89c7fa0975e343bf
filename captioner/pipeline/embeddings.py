"""Word-embedding initialisation: Word2Vec vectors learned from the *training* captions only.

The decoder's embedding table can start from these instead of random numbers (``--embedding-init
word2vec``); it stays trainable. gensim does the Word2Vec training: a well-tested implementation of
skip-gram with negative sampling that would be a few hundred lines to write (and get right) here.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..serving.vocab import Vocabulary


def word2vec_matrix(training_captions: Iterable[str], vocab: Vocabulary, dim: int, seed: int = 42,
                    epochs: int = 20, window: int = 5) -> tuple[np.ndarray, float]:
    """-> (embedding table (len(vocab), dim) float32, share of vocabulary words that got a vector).

    Skip-gram Word2Vec over the training captions (one sentence each). Words without a vector (the
    special tokens, or words too rare for Word2Vec) get small random rows with the same spread as the
    learned ones; the padding row is zero. One worker thread, so a seed gives the same table.
    """
    try:
        from gensim.models import Word2Vec
    except ImportError as err:  # pragma: no cover - gensim is in requirements.txt
        raise RuntimeError("--embedding-init word2vec needs gensim: pip install -r requirements.txt") from err

    sentences = [caption.split() for caption in training_captions]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise ValueError("no training captions to learn Word2Vec vectors from")
    w2v = Word2Vec(sentences, vector_size=dim, window=window, min_count=1, sg=1, negative=5, workers=1,
                   seed=seed, epochs=epochs)
    learned = [w for w in vocab.words if w in w2v.wv.key_to_index]
    scale = float(np.std(w2v.wv.vectors)) if len(w2v.wv.vectors) else 0.05
    table = np.random.default_rng(seed).normal(0.0, scale, (len(vocab), dim)).astype(np.float32)
    for word in learned:
        table[vocab.index[word]] = w2v.wv[word]
    table[vocab.pad_id] = 0.0
    return table, len(learned) / max(1, len(vocab) - 4)
