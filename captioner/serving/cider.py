"""CIDEr-D per caption (Vedantam et al. 2015), exactly as pycocoevalcap computes it but with document
frequencies from a fixed corpus, in pure Python (serving needs numpy only).

One implementation for every use: the neighbour consensus of the confidence (``neighbours.py``, with
n-grams keyed by hash), the definition of a "good" caption when calibrating (``pipeline/calibrate.py``)
and the SCST reward (``pipeline/scst.py``). ``tests/test_cider.py`` checks it against pycocoevalcap.

    cider = CiderD(training_reference_sets)
    cider.score("a dog runs on the grass", cider.prepare(image_references))
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Mapping, Sequence

NGRAM_ORDERS = 4  # CIDEr-D compares 1- to 4-grams


def ngram_counts(words: Sequence[str], key=tuple) -> list[Counter]:
    """Counts of the 1- to 4-grams of ``words``, one Counter per order, each in first-occurrence order;
    ``key`` maps an n-gram's words to its dictionary key (the words as a tuple, or a hash)."""
    return [Counter(key(words[i:i + n]) for i in range(len(words) - n + 1)) for n in range(1, NGRAM_ORDERS + 1)]


class CiderD:
    """Per-caption CIDEr-D exactly as pycocoevalcap computes it (n = 1..4, sigma 6, clipped counts, x10),
    but with document frequencies from a fixed corpus of reference sets, so a caption's score never
    depends on which other captions are scored with it (nor, for SCST, on which images share a batch).

    N-grams are dictionary keys made by ``key`` from their words: the words themselves (a tuple, the
    default) or a hash (``from_document_frequency``, as the neighbour index stores its references)."""

    def __init__(self, corpus_references: Sequence[Sequence[str]], sigma: float = 6.0, key=tuple):
        """Document frequencies from ``corpus_references``: one list of reference captions per image."""
        self.sigma = sigma
        self.key = key
        self.document_frequency: Mapping = Counter()
        for refs in corpus_references:  # one "document" = one image's set of references
            self.document_frequency.update({g for r in refs for grams in self.counts(r) for g in grams})
        self.log_documents = math.log(float(max(len(corpus_references), 1)))

    @classmethod
    def from_document_frequency(cls, document_frequency: Mapping, documents: int, key, sigma: float = 6.0) -> "CiderD":
        """A scorer from stored statistics: ``document_frequency`` maps keys to the number of documents
        (images) whose references hold the n-gram (absent = 0), out of ``documents``."""
        scorer = cls((), sigma, key)
        scorer.document_frequency = document_frequency
        scorer.log_documents = math.log(float(max(documents, 1)))
        return scorer

    def counts(self, text: str) -> list[Counter]:
        """The n-gram counts of a caption (words separated by spaces), keyed by ``key``."""
        return ngram_counts(text.split(), self.key)

    def _vector(self, counts: Sequence[Mapping]):
        """TF-IDF vectors, their norms, and the length (in bigrams, as pycocoevalcap measures it)."""
        vec, norm, length = [defaultdict(float) for _ in range(NGRAM_ORDERS)], [0.0] * NGRAM_ORDERS, 0
        for n, grams in enumerate(counts):
            for gram, tf in grams.items():
                vec[n][gram] = tf * (self.log_documents - math.log(max(1.0, self.document_frequency.get(gram, 0))))
                norm[n] += vec[n][gram] ** 2
                if n == 1:
                    length += tf  # pycocoevalcap measures length in bigrams; kept for identical scores
        return vec, [math.sqrt(x) for x in norm], length

    def prepare(self, references: Sequence[str]) -> list:
        """Reference vectors of one image, computed once and reused for every candidate."""
        return [self._vector(self.counts(r)) for r in references]

    def prepare_counts(self, references: Sequence[Sequence[Mapping]]) -> list:
        """``prepare`` for references given as n-gram counts (one mapping key -> count per order)."""
        return [self._vector(c) for c in references]

    def score(self, candidate: str, prepared_refs: list) -> float:
        """The candidate's CIDEr-D against one image's prepared references (0 when there are none)."""
        if not prepared_refs:
            return 0.0
        vec, norm, length = self._vector(self.counts(candidate))
        total = 0.0
        for ref_vec, ref_norm, ref_length in prepared_refs:
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * self.sigma ** 2))
            for n in range(NGRAM_ORDERS):
                value = sum(min(v, ref_vec[n].get(g, 0.0)) * ref_vec[n].get(g, 0.0) for g, v in vec[n].items())
                if norm[n] and ref_norm[n]:
                    value /= norm[n] * ref_norm[n]
                total += value * penalty / 4
        return 10.0 * total / len(prepared_refs)
