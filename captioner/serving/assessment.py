"""What the confidence of a caption is computed from and what it says: ``Signals`` in, ``Assessment``
out, and ``ConfidenceError`` for calibration or neighbour files that cannot be used. Plain values with no
behaviour beyond their JSON, so the neighbour index, the calibrator and the ``ConfidenceModel`` that
combines them (``confidence.py``) all build on them without importing one another."""
from __future__ import annotations

from dataclasses import asdict, dataclass


class ConfidenceError(ValueError):
    """A calibration or neighbour file that cannot be used; the message names the file and the problem."""


@dataclass
class Signals:
    """One caption's signals (``confidence.compute_signals``), the calibrator's inputs."""

    score: float  # length-normalised log-probability of the caption
    consensus: float  # CIDEr-D against the nearest training photos' references (0 when unknown)
    distance: float = 0.0  # out-of-domain distance
    in_domain: bool = True

    def to_json(self) -> dict:
        """The signals rounded to 4 decimals (for reports)."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class Assessment:
    """How sure a caption is: the calibrated confidence, its band, and the domain check's verdict."""

    confidence: float  # in [0, 1]: the chance the caption is a good description
    band: str  # "high" / "medium" / "low"
    in_domain: bool
    reason: str | None = None  # why the picture was flagged (None when in domain)
    signals: Signals | None = None

    def to_json(self) -> dict:
        """The JSON fields every output carries: confidence (a float), band, in_domain, reason."""
        return {"confidence": round(float(self.confidence), 3), "band": self.band, "in_domain": bool(self.in_domain),
                "reason": self.reason}
