"""The tutorial way of captioning, written plainly as the benchmarks' baseline.

Every generated word costs one ``model.predict`` call on the whole prefix, re-padded to the maximum
length each time; beam search calls it once per beam per word. It plugs into the same search code as
ours (so both must produce the same captions), only the step is done the slow way.
"""
from __future__ import annotations

import numpy as np


class PredictPerWordStepper:
    """Step interface whose state is the prefix itself; each step re-pads it and calls predict."""

    def __init__(self, model, max_len: int = 40):
        self.model = model
        self.max_len = max_len

    def initial_state(self, features):
        features = np.asarray(features, np.float32)
        prefix = np.zeros((features.shape[0], 0), np.int32)
        return (features, prefix)

    def step(self, words, state):
        features, prefix = state
        prefix = np.concatenate([prefix, np.asarray(words, np.int32)[:, None]], axis=1)  # (B, t)
        rows = []
        for b in range(prefix.shape[0]):  # one predict per beam, as the tutorials do
            padded = np.zeros((1, self.max_len), np.int32)
            padded[0, :prefix.shape[1]] = prefix[b]
            logits = self.model.predict([features[b:b + 1], padded], verbose=0)  # (1, T, V)
            rows.append(logits[0, prefix.shape[1] - 1])
        logits = np.stack(rows).astype(np.float64)
        log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
        return log_probs, (features, prefix)
