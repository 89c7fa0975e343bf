"""Consensus reranking: of the beam's captions, say the one that agrees most with what people said about
the most similar training photos (Devlin et al. 2015, "Exploring nearest neighbor approaches for image
captioning"; the same neighbour consensus the confidence reads, ``neighbours.py``).

The decoder's own ranking (length-normalised log-probability) favours safe, frequent phrasings; among
the beam's few fluent captions, the neighbours' references pick the one that names what such photos
show. Ties keep the beam's order. Which ranking a model folder uses by default is chosen on its
held-out training images (``pipeline.evaluate.tune_rerank``) and stored in its ``decoding.json``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .domain import DomainCheck, pooled_features
from .neighbours import NeighbourIndex


@dataclass
class ConsensusRanker:
    """Orders candidate captions by their neighbour consensus (CIDEr-D against the references of the
    ``neighbours.k`` nearest training photos in the domain check's subspace)."""

    domain: DomainCheck
    neighbours: NeighbourIndex

    def consensus(self, features: np.ndarray, candidates: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Each picture's candidates' consensus: ``features`` (B, ...) as the decoder reads them, B lists of
        token strings -> B arrays, one value per candidate."""
        coords = self.domain.project(pooled_features(features))  # (B, k)
        return [self.neighbours.consensus(list(texts), np.repeat(coords[b:b + 1], len(texts), axis=0))
                if texts else np.zeros(0) for b, texts in enumerate(candidates)]

    def order(self, features: np.ndarray, candidates: Sequence[Sequence[str]]) -> list[list[int]]:
        """B permutations: each picture's candidate indices, highest consensus first (ties: beam order)."""
        return [sorted(range(len(values)), key=lambda i: -values[i])
                for values in self.consensus(features, candidates)]


__all__ = ["ConsensusRanker"]
