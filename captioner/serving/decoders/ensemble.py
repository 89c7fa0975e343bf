"""A small ensemble: several decoders trained on the same vocabulary vote on every next word.

It is itself a step model (``initial_state``, ``step``, ``reorder``), so greedy and beam search run
over it unchanged. Each step averages the members' next-word *probabilities* (not log-probabilities:
a word one member rules out is not vetoed by it): ``vote``, written once against the ops of ``ops.py``
and used by every engine (here on NumPy and TensorFlow, in ``portable.py`` on NumPy and OpenVINO). When
every member is a compiled stepper, their steps are fused into one TensorFlow function (one call per
step, not one per member plus NumPy glue).
"""
from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from ..decoding import reorder_state
from .ops import NUMPY
from .stepping import CompiledStepper, tf_constant


def vote(ops, log_probs: Sequence):
    """The members' (B, V) next-word log-probs -> (B, V) log of their mean probability, computed as
    ``peak + log(mean(exp(log_p - peak)))`` with the element-wise peak over members (no overflow). A word
    every member rules out (-inf) stays at -inf, without NaNs: its peak is taken as 0."""
    if len(log_probs) == 1:
        return log_probs[0]
    peak = ops.finite_or(functools.reduce(ops.maximum, log_probs), 0.0)
    total = functools.reduce(ops.add, [ops.exp(ops.subtract(lp, peak)) for lp in log_probs])
    return ops.add(peak, ops.log(ops.multiply(total, ops.constant(1.0 / len(log_probs)))))


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

        from .ops import tensorflow_ops

        compiled = [m.compiled_step for m in self.members]  # (step function, state specs) per member
        sizes = [len(specs) for _, specs in compiled]
        specs = [spec for _, member_specs in compiled for spec in member_specs]
        steps = [step for step, _ in compiled]

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), *specs], autograph=False)
        def step(words, *state):
            log_probs, new_state, i = [], [], 0
            for member_step, n in zip(steps, sizes):
                member_log_probs, *rest = member_step(words, *state[i:i + n])  # extras after the state dropped
                log_probs.append(member_log_probs)
                new_state += rest[:n]
                i += n
            return (vote(tensorflow_ops(), log_probs), *new_state)

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
        mean = vote(NUMPY, [np.asarray(lp, np.float32) for lp, _ in outputs])
        return mean, tuple(s for _, s in outputs)

    def reorder(self, state: tuple, rows: Sequence[int]) -> tuple:
        if self._fused:
            return tuple(self._fused[1](tf_constant(rows, np.int32), *state))
        return tuple(reorder_state(m, s, rows) for m, s in zip(self.members, state))
