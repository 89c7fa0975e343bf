"""Choosing decoding settings on held-out training images."""
from __future__ import annotations

import pytest

from captioner.pipeline.evaluate import balanced_scores


def test_balanced_length_choice_prefers_near_best_on_every_metric():
    sweep = {"0.7": {"BLEU-1": 0.60, "BLEU-4": 0.19, "METEOR": 0.20, "CIDEr": 0.50},
             "1.3": {"BLEU-1": 0.55, "BLEU-4": 0.19, "METEOR": 0.20, "CIDEr": 0.51}}
    scores = balanced_scores(sweep)
    assert scores["0.7"] > scores["1.3"]  # CIDEr alone would pick 1.3
    assert scores["0.7"] == pytest.approx((1 + 1 + 1 + 0.50 / 0.51) / 4, abs=1e-4)
