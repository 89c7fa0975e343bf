"""What every compiled stepper shares: concrete functions, and state that stays in TensorFlow."""
from __future__ import annotations

import numpy as np


def tf_constant(values, dtype):
    """A tensor from an array-like, converted once (the compiled functions take tensors)."""
    import tensorflow as tf

    return tf.constant(np.asarray(values, dtype))


class CompiledStepper:
    """The step interface (``initial_state``, ``step``, ``reorder``) over two ``tf.function`` s.

    Subclasses pass ``initial_state(features) -> state`` and ``step(words, *state) -> (log_probs,
    *state, *extras)``; outputs after the state (e.g. attention weights) are dropped by ``step``.
    Concrete functions are called directly: that skips tf.function's per-call signature matching,
    which is most of the cost of a step this small. State stays in TensorFlow between steps and
    beam search's reshuffle is a compiled gather.
    """

    def _compile(self, initial_state, step, state_specs) -> None:
        import tensorflow as tf

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), *state_specs])
        def reorder(rows, *state):
            return tuple(tf.gather(s, rows) for s in state)

        self._initial_state = initial_state.get_concrete_function()
        self._step = step.get_concrete_function()
        self._reorder = reorder.get_concrete_function()
        self._n_state = len(state_specs)
        self._state_specs = list(state_specs)

    @property
    def compiled_step(self) -> tuple:
        """(concrete step function, state specs): what an ensemble needs to fuse this stepper's step
        with others' into one TensorFlow function. The function returns ``(log_probs, *state, *extras)``."""
        return self._step, tuple(self._state_specs)

    def initial_state(self, features: np.ndarray) -> tuple:
        """(B, ...) features -> state tuple (tensors, batch first)."""
        return tuple(self._initial_state(tf_constant(features, np.float32)))

    def step(self, words: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        """(B,) previous word ids + state -> ((B, V) next-word log-probs as NumPy, new state)."""
        log_probs, *rest = self._step(tf_constant(words, np.int32), *state)
        return log_probs.numpy(), tuple(rest[:self._n_state])

    def reorder(self, state: tuple, rows) -> tuple:
        """Rows ``rows`` of every state tensor, gathered inside TensorFlow."""
        return tuple(self._reorder(tf_constant(rows, np.int32), *state))
