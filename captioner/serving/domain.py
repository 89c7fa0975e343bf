"""Is this picture like the photos the model learned from? A check on the pooled Xception features.

The captioner learned from Flickr photos (people, animals, outdoor scenes); on a document, a chart,
a screenshot, a flat colour or a barcode it still writes a confident-sounding caption. This check
flags such pictures so the caption can be shown under a plain warning.

How: each pooled feature (2048-d, non-negative) is scaled to unit length, and its distance is the
residual after projecting it onto the 128 principal directions of the training photos' unit features,
``|| z - mean - P^T P (z - mean) ||`` (the part of the picture's description that no combination of
typical photo directions explains; between 0 and about 1.4). Photos have small residuals; text, charts,
UI, codes and noise have large ones. (A Mahalanobis distance *within* the principal subspace was
tried too and separates worse: non-photos excite the photo directions weakly and land near the mean.)

The principal directions are fitted on the training photos only (``pipeline/calibrate.py`` with
scikit-learn's PCA); the threshold is chosen on held-out training photos against a generated set of
non-photos (``pipeline/nonphotos.py``, ``THRESHOLD_SEED``), never on dev. Applying the check needs only
numpy and the stored JSON (``models/domain.json``; no pickle), so it serves every model folder that
shares the Xception encoder.

    check = DomainCheck.load("models/domain.json")
    check.distance(pooled)            # (B,) residual distances
    check.check(pooled)               # [(in_domain, reason), ...]
    check.project(pooled)             # (B, k) coordinates, for the nearest-neighbour consensus
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .jsonfiles import decode_array, encode_array, read_json, require_format

FORMAT = "captioner-domain-check"
VERSION = 1
IN_DOMAIN_REASON = "looks like the photos the model learned from"
OUT_OF_DOMAIN_REASON = ("unlike the photos the model learned from (distance {distance:.3f} from the training "
                        "photos, above the threshold {threshold:.3f})")


class DomainError(ValueError):
    """A domain-check file that cannot be used; the message names the file and the problem."""


class Verdict(NamedTuple):
    in_domain: bool
    reason: str


def pooled_features(features: np.ndarray) -> np.ndarray:
    """(B, 2048) pooled features as float32; (B, g, g, 2048) region grids are averaged over the grid
    (exactly the encoder's global average pooling); a single (2048,) vector becomes (1, 2048)."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim == 1:
        features = features[None]
    if features.ndim == 4:
        features = features.mean(axis=(1, 2))
    if features.ndim != 2:
        raise ValueError(f"expected (B, D) pooled or (B, g, g, D) grid features, got shape {features.shape}")
    return features


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (an all-zero row stays zero)."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


# -------------------------------------------------------------------------------------- the check

@dataclass
class DomainCheck:
    """Principal directions of the training photos' unit features, and the flagging threshold."""

    mean: np.ndarray  # (D,) mean unit feature of the training photos
    components: np.ndarray  # (k, D) orthonormal principal directions
    threshold: float  # residual distance above which a picture is flagged
    encoder: str = ""  # the encoder weights' cache key the features came from ("" = unchecked)
    info: dict = field(default_factory=dict)  # how it was fitted and chosen (counts, rates, rule)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def project(self, features: np.ndarray) -> np.ndarray:
        """(B, k) coordinates of the unit features in the principal subspace."""
        z = unit_rows(pooled_features(features)) - self.mean
        return z @ self.components.T

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(B,) residual distances: how much of each picture's unit feature the photo directions miss."""
        z = unit_rows(pooled_features(features)) - self.mean
        if z.shape[1] != self.dim:
            raise ValueError(f"features have {z.shape[1]} dimensions; this domain check expects {self.dim}")
        residual = z - (z @ self.components.T) @ self.components
        return np.linalg.norm(residual, axis=1)

    def check(self, features: np.ndarray) -> list[Verdict]:
        """One ``Verdict(in_domain, reason)`` per picture."""
        return [self.verdict(float(d)) for d in self.distance(features)]

    def verdict(self, distance: float) -> Verdict:
        if distance > self.threshold:
            return Verdict(False, OUT_OF_DOMAIN_REASON.format(distance=distance, threshold=self.threshold))
        return Verdict(True, IN_DOMAIN_REASON)

    # ------------------------------------------------------------------------------------ storage

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "method": "unit-norm pooled features, PCA residual",
                "encoder": self.encoder, "threshold": round(float(self.threshold), 5),
                "mean": encode_array(self.mean, "float32"), "components": encode_array(self.components, "float16"),
                "info": self.info}

    @classmethod
    def from_json(cls, data: dict, source: str = "domain check") -> "DomainCheck":
        require_format(data, FORMAT, VERSION, "domain-check file", source, DomainError)
        try:
            mean, components = decode_array(data["mean"]), decode_array(data["components"])
            threshold = float(data["threshold"])
        except (KeyError, TypeError, ValueError) as err:  # StoredArrayError is a ValueError
            raise DomainError(f"{source}: unreadable ({err})") from err
        if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != mean.shape[0]:
            raise DomainError(f"{source}: mean {mean.shape} and components {components.shape} do not match")
        if not np.isfinite(threshold) or threshold <= 0:
            raise DomainError(f"{source}: threshold must be a positive number, not {threshold}")
        return cls(mean, components, threshold, str(data.get("encoder", "")), dict(data.get("info", {})))

    @classmethod
    def load(cls, path: str | Path) -> "DomainCheck":
        return cls.from_json(read_json(path, "domain check", DomainError), str(path))

    def save(self, path: str | Path) -> None:
        from ..config import save_json

        save_json(self.to_json(), Path(path))


def domain_digest(check: DomainCheck) -> str:
    """Identifies a domain check's subspace as stored (the neighbour coordinates and the calibrations
    fitted on them depend on it): SHA-256 of its mean's and directions' stored base64."""
    data = check.to_json()
    return hashlib.sha256((data["mean"]["base64"] + data["components"]["base64"]).encode("ascii")).hexdigest()
