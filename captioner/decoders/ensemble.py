"""A small ensemble: several decoders trained on the same vocabulary vote on every next word.

It is itself a step model (``initial_state``, ``step``, ``reorder``), so greedy and beam search run
over it unchanged. Each step averages the members' next-word *probabilities* (not log-probabilities:
a word one member rules out is not vetoed by it).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..decoding import reorder_state


class EnsembleStepper:
    """Members' states are kept side by side as a tuple of per-member state tuples."""

    def __init__(self, members: Sequence):
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = list(members)
        kinds = {bool(getattr(m, "needs_spatial", False)) for m in self.members}
        if len(kinds) > 1:
            raise ValueError("ensemble members must read the same image features (all merge or all attention)")
        self.needs_spatial = kinds.pop()  # the features the members read; no attention maps for the ensemble

    def initial_state(self, features: np.ndarray) -> tuple:
        return tuple(m.initial_state(features) for m in self.members)

    def step(self, words: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        """(B,) words -> ((B, V) log of the members' mean next-word probability, new state)."""
        outputs = [m.step(words, s) for m, s in zip(self.members, state)]
        stacked = np.stack([np.asarray(lp, np.float64) for lp, _ in outputs])  # (K, B, V)
        peak = stacked.max(axis=0)
        with np.errstate(divide="ignore"):  # a word every member rules out stays at -inf
            mean = peak + np.log(np.exp(stacked - peak).mean(axis=0))
        return mean.astype(np.float32), tuple(s for _, s in outputs)

    def reorder(self, state: tuple, rows: Sequence[int]) -> tuple:
        return tuple(reorder_state(m, s, rows) for m, s in zip(self.members, state))
