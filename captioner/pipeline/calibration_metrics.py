"""How well confidences are calibrated: equal-width confidence bins, the reliability table over them, and
the expected calibration error (ECE). Measured by ``calibrate.py`` on held-out images and on dev; serving
never needs them."""
from __future__ import annotations

import math

import numpy as np


def confidence_bins(confidence: np.ndarray, bins: int = 10) -> np.ndarray:
    """Each confidence's bin among ``bins`` equal-width bins of [0, 1] (1.0 falls in the last bin)."""
    return np.minimum((np.asarray(confidence, float) * bins).astype(int), bins - 1)


def expected_calibration_error(confidence: np.ndarray, outcome: np.ndarray, bins: int = 10) -> float:
    """ECE: the share-weighted mean |predicted - observed| over ``bins`` equal-width confidence bins."""
    confidence, outcome = np.asarray(confidence, float), np.asarray(outcome, float)
    index = confidence_bins(confidence, bins)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += mask.mean() * abs(confidence[mask].mean() - outcome[mask].mean())
    return float(total) if math.isfinite(total) else float("nan")


def reliability(conf: np.ndarray, good: np.ndarray, bins: int = 10) -> list[dict]:
    """The reliability table: per bin its range, image count, mean predicted confidence and observed
    share of good captions (None for an empty bin)."""
    index = confidence_bins(conf, bins)
    rows = []
    for b in range(bins):
        mask = index == b
        rows.append({"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "n": int(mask.sum()),
                     "predicted": round(float(conf[mask].mean()), 4) if mask.any() else None,
                     "observed": round(float(good[mask].mean()), 4) if mask.any() else None})
    return rows
