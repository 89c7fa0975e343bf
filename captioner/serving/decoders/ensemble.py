"""A small ensemble: several decoders trained on the same vocabulary vote on every next word.

It is itself a step model (``initial_state``, ``step``, ``reorder``), so greedy and beam search run
over it unchanged. Each step averages the members' next-word *probabilities* (not log-probabilities:
a word one member rules out is not vetoed by it). When every member is a compiled stepper, their steps
are fused into one TensorFlow function (one call per step, not one per member plus NumPy glue).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..decoding import reorder_state
from .stepping import CompiledStepper, tf_constant


class EnsembleStepper:
    """Members' states are kept side by side: a tuple of per-member state tuples, or one flat tuple of
    tensors when the members' steps are fused."""

    def __init__(self, members: Sequence):
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = list(members)
        kinds = {getattr(m, "feature_kind", "pooled") for m in self.members}
        if len(kinds) > 1:
            raise ValueError("ensemble members must read the same image features (all merge or all attention)")
        self.feature_kind = kinds.pop()  # the features the members read; no attention maps for an ensemble
        self._fused = None
        if all(isinstance(m, CompiledStepper) for m in self.members):
            self._fuse()

    def _fuse(self) -> None:
        """One concrete function for the whole ensemble step, and one for reordering every state."""
        import tensorflow as tf

        compiled = [m.compiled_step for m in self.members]  # (step function, state specs) per member
        sizes = [len(specs) for _, specs in compiled]
        specs = [spec for _, member_specs in compiled for spec in member_specs]
        steps = [step for step, _ in compiled]
        log_k = float(np.log(len(self.members)))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), *specs])
        def step(words, *state):
            log_probs, new_state, i = [], [], 0
            for member_step, n in zip(steps, sizes):
                member_log_probs, *rest = member_step(words, *state[i:i + n])  # extras after the state dropped
                log_probs.append(member_log_probs)
                new_state += rest[:n]
                i += n
            mean = tf.reduce_logsumexp(tf.stack(log_probs), axis=0) - log_k  # (B, V): log of the mean probability
            return (mean, *new_state)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), *specs])
        def reorder(rows, *state):
            return tuple(tf.gather(s, rows) for s in state)

        self._fused = (step.get_concrete_function(), reorder.get_concrete_function())

    def initial_state(self, features: np.ndarray) -> tuple:
        states = tuple(m.initial_state(features) for m in self.members)
        return tuple(s for state in states for s in state) if self._fused else states

    def step(self, words: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        """(B,) words -> ((B, V) log of the members' mean next-word probability, new state)."""
        if self._fused:
            log_probs, *new_state = self._fused[0](tf_constant(words, np.int32), *state)
            return log_probs.numpy(), tuple(new_state)
        outputs = [m.step(words, s) for m, s in zip(self.members, state)]
        stacked = np.stack([np.asarray(lp, np.float64) for lp, _ in outputs])  # (K, B, V)
        peak = stacked.max(axis=0)
        peak = np.where(np.isfinite(peak), peak, 0.0)  # a word every member rules out: no -inf - -inf
        with np.errstate(divide="ignore"):  # ... and it stays at -inf
            mean = peak + np.log(np.exp(stacked - peak).mean(axis=0))
        return mean.astype(np.float32), tuple(s for _, s in outputs)

    def reorder(self, state: tuple, rows: Sequence[int]) -> tuple:
        if self._fused:
            return tuple(self._fused[1](tf_constant(rows, np.int32), *state))
        return tuple(reorder_state(m, s, rows) for m, s in zip(self.members, state))
