"""The calibrator: logistic regression over a caption's standardised signals, giving the confidence (the
chance the caption is a *good* description), and thresholds on it giving the band.

``confidence = sigmoid(intercept + sum_i coef_i * (T_i(signal_i) - center_i) / scale_i)``, with every
coefficient positive, so the confidence rises with each signal for fixed others. Bands: "high" (the caption
as it is), "medium" ("Probably ..."), "low" ("Maybe ..."); a picture the domain check flags is always "low"
(its confidence is capped at the low threshold). Fitted by ``pipeline/calibrate.py`` (which builds its
design matrix with ``signal_matrix`` and ``transform_signals`` from here); stored as each model folder's
``confidence.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .assessment import Assessment, ConfidenceError, Signals
from .jsonfiles import read_json, require_format
from .model_folder import DOMAIN_FILE, NEIGHBOURS_FILE

CONFIDENCE_FORMAT = "captioner-confidence"
VERSION = 1  # of the calibration files
TRANSFORMS = {"identity": lambda x: x, "log1p": np.log1p}


def signal_matrix(signals: Sequence[Signals], features: Sequence[str]) -> np.ndarray:
    """(B, n) raw values of the Signals fields named by ``features``, in that order."""
    return np.array([[float(getattr(s, f)) for f in features] for s in signals], np.float64).reshape(
        len(signals), len(features))


def transform_signals(values: np.ndarray, transforms: Sequence[str]) -> np.ndarray:
    """(B, n) ``T_i(values[:, i])`` for the named transforms; log1p first clips negative values to 0 (a
    consensus is never negative; the clip keeps a bad input finite)."""
    values = np.asarray(values, np.float64)
    out = np.empty_like(values)
    for i, t in enumerate(transforms):
        x = values[:, i]
        if t == "log1p":
            x = np.maximum(x, 0.0)
        out[:, i] = TRANSFORMS[t](x)
    return out


@dataclass
class Calibrator:
    """``confidence = sigmoid(intercept + sum_i coef_i * (T_i(signal_i) - center_i) / scale_i)``, then bands.

    ``features`` names Signals fields; ``transforms`` gives each one's T ("identity" or "log1p").
    Every coefficient must be positive: the confidence never falls when a signal rises.
    """

    features: list[str]
    transforms: list[str]
    center: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    high: float  # confidence >= high: band "high"
    low: float  # confidence < low: band "low" (and every out-of-domain picture)
    good: dict = field(default_factory=dict)  # what "good" means (metric, threshold, why)
    info: dict = field(default_factory=dict)  # how it was fitted, held-out figures
    domain_file: str = f"../{DOMAIN_FILE}"  # relative to the model folder
    neighbours_file: str = f"../{NEIGHBOURS_FILE}"

    def __post_init__(self) -> None:
        """Refuses calibrators that could not be applied or whose confidence could fall as a signal rises."""
        n = len(self.features)
        if not n or any(len(x) != n for x in (self.transforms, self.center, self.scale, self.coef)):
            raise ConfidenceError("features, transforms, center, scale and coef must have one entry per signal")
        unknown = [f for f in self.features if f not in Signals.__dataclass_fields__ or f == "in_domain"]
        if unknown:
            raise ConfidenceError(f"unknown signals {unknown}")
        if any(t not in TRANSFORMS for t in self.transforms):
            raise ConfidenceError(f"transforms must be among {sorted(TRANSFORMS)}, not {self.transforms}")
        if any(not (c > 0) for c in self.coef) or any(not (s > 0) for s in self.scale):
            raise ConfidenceError(f"every coefficient and scale must be positive (so confidence rises with each "
                                  f"signal), not coef={self.coef}, scale={self.scale}")
        if not 0 <= self.low <= self.high <= 1:
            raise ConfidenceError(f"band thresholds must satisfy 0 <= low <= high <= 1, not {self.low}, {self.high}")

    def matrix(self, signals: Sequence[Signals]) -> np.ndarray:
        """(B, n) raw signal values, in ``features`` order."""
        return signal_matrix(signals, self.features)

    def confidence_from_matrix(self, values: np.ndarray, in_domain: np.ndarray | None = None) -> np.ndarray:
        """(B,) confidences in [0, 1] from (B, n) raw signal values (and optional (B,) in-domain flags)."""
        z = (transform_signals(values, self.transforms) - np.asarray(self.center, np.float64)) / \
            np.asarray(self.scale, np.float64)
        logit = self.intercept + z @ np.asarray(self.coef, np.float64)
        conf = 1.0 / (1.0 + np.exp(-np.clip(np.nan_to_num(logit, nan=-50.0), -50.0, 50.0)))
        if in_domain is not None:
            conf = np.where(np.asarray(in_domain, bool), conf, np.minimum(conf, self.low))
        return conf

    def confidence(self, signals: Signals | Sequence[Signals]) -> float | np.ndarray:
        """The confidence of one Signals (a float) or of several (a (B,) array)."""
        single = isinstance(signals, Signals)
        batch = [signals] if single else list(signals)
        conf = self.confidence_from_matrix(self.matrix(batch), np.array([s.in_domain for s in batch], bool))
        return float(conf[0]) if single else conf

    def band(self, confidence: float, in_domain: bool = True) -> str:
        """"high", "medium" or "low" for a confidence; "low" whenever the picture is out of domain."""
        if not in_domain or confidence < self.low:
            return "low"
        return "high" if confidence >= self.high else "medium"

    def assess(self, signals: Signals, reason: str | None = None) -> Assessment:
        """The Assessment of one caption's signals (``reason``: the domain check's, kept when flagged)."""
        conf = float(self.confidence(signals))
        return Assessment(conf, self.band(conf, signals.in_domain), signals.in_domain,
                          None if signals.in_domain else reason, signals)

    def to_json(self) -> dict:
        """The stored form (a model folder's ``confidence.json``), numbers rounded to 6 decimals."""
        return {"format": CONFIDENCE_FORMAT, "version": VERSION, "model": "logistic regression",
                "features": self.features, "transforms": self.transforms,
                "center": [round(float(x), 6) for x in self.center], "scale": [round(float(x), 6) for x in self.scale],
                "coef": [round(float(x), 6) for x in self.coef], "intercept": round(float(self.intercept), 6),
                "bands": {"high": round(float(self.high), 4), "low": round(float(self.low), 4)},
                "good": self.good, "info": self.info,
                "domain_file": self.domain_file, "neighbours_file": self.neighbours_file}

    @classmethod
    def from_json(cls, data: dict, source: str = "calibrator") -> "Calibrator":
        """The calibrator stored in ``data``; ConfidenceError naming ``source`` when it cannot be used."""
        require_format(data, CONFIDENCE_FORMAT, VERSION, "calibration file", source, ConfidenceError)
        try:
            return cls(list(data["features"]), list(data["transforms"]), [float(x) for x in data["center"]],
                       [float(x) for x in data["scale"]], [float(x) for x in data["coef"]], float(data["intercept"]),
                       float(data["bands"]["high"]), float(data["bands"]["low"]), dict(data.get("good", {})),
                       dict(data.get("info", {})), str(data.get("domain_file", f"../{DOMAIN_FILE}")),
                       str(data.get("neighbours_file", f"../{NEIGHBOURS_FILE}")))
        except ConfidenceError as err:
            raise ConfidenceError(f"{source}: {err}") from err
        except (KeyError, TypeError, ValueError) as err:
            raise ConfidenceError(f"{source}: unreadable ({type(err).__name__}: {err})") from err

    @classmethod
    def load(cls, path: str | Path) -> "Calibrator":
        """The calibrator stored at ``path`` (ConfidenceError when unreadable)."""
        return cls.from_json(read_json(path, "calibration", ConfidenceError), str(path))

    def save(self, path: str | Path) -> None:
        """Write the calibrator as JSON."""
        from ..config import save_json

        save_json(self.to_json(), Path(path))
