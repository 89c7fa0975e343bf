"""How sure is the caption? A calibrated confidence, a band said in words, and the out-of-domain warning.

For every caption the serving side computes a few **signals** (``assessment.Signals``, by
``compute_signals``):

* ``score``: the caption's length-normalised log-probability (beam search's ranking score);
* ``consensus``: CIDEr-D of the caption against the reference captions of the 25 training photos whose
  Xception features are nearest to the picture's (``neighbours.NeighbourIndex``; Devlin et al. 2015): a
  caption that says what people said about similar photos is usually right, one that says something
  else usually is not. The index holds those references as hashed n-gram counts, not as text;
* ``distance`` and ``in_domain``: the out-of-domain check (``domain.py``).

A ``calibrator.Calibrator`` (logistic regression over the standardised signals, fitted by
``pipeline/calibrate.py`` on training images held out from training, stored as JSON) maps them to
``confidence``: the chance that the caption is a *good* description, where good is defined against
the references (see ``pipeline/calibrate.py``). Thresholds on it give the **band**: "high" (the caption
as it is), "medium" ("Probably ..."), "low" ("Maybe ..."). A picture the domain check flags is always
"low" and its caption is said after the out-of-domain warning (``sentence.py`` writes the words).

This module is the facade that puts the parts of one model folder together (``ConfidenceModel``);
each part lives in its own module: ``assessment.py`` (Signals, Assessment, ConfidenceError),
``cider.py`` (CIDEr-D), ``neighbours.py`` (the neighbour index), ``calibrator.py`` (the calibrator),
``domain.py`` (the domain check), ``jsonfiles.py`` (their file formats). Serving needs numpy only.

    model = ConfidenceModel.load("models/merge-ensemble")
    [a] = model.assess(pooled_features, [caption])      # caption: a Caption (text and score)
    a.to_json()  # {"confidence": 0.71, "band": "high", "in_domain": true, "reason": null}
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .assessment import Assessment, ConfidenceError, Signals
from .calibrator import Calibrator
from .domain import DomainCheck, DomainError, domain_digest
from .model_folder import CONFIDENCE_FILE, DOMAIN_FILE
from .neighbours import REBUILD_NEIGHBOURS, NeighbourIndex

__all__ = ["Assessment", "Calibrator", "ConfidenceError", "ConfidenceModel", "NeighbourIndex", "Signals",
           "compute_signals"]


def compute_signals(features: np.ndarray, captions: Sequence, domain: DomainCheck,
                    neighbours: NeighbourIndex | None = None) -> list[Signals]:
    """Signals for B pictures, no calibrator needed: ``features`` (B, 2048) pooled or (B, g, g, 2048)
    grids, each picture's chosen caption (a ``Caption``, or any object with ``text`` and ``score``; its
    ``tokens`` when it has them, since the references are stored in the model's tokenisation), the domain
    check, and the neighbour index (None: consensus 0)."""
    distances = domain.distance(features)
    texts = [getattr(c, "tokens", None) or c.text for c in captions]
    if neighbours is not None:
        consensus = neighbours.consensus(texts, domain.project(features))
    else:
        consensus = np.zeros(len(texts))
    return [Signals(float(c.score), float(k), float(d), bool(d <= domain.threshold))
            for c, k, d in zip(captions, consensus, distances)]


@dataclass
class ConfidenceModel:
    """Everything a model folder needs to assess its captions: calibrator, domain check, neighbours."""

    calibrator: Calibrator
    domain: DomainCheck
    neighbours: NeighbourIndex | None = None  # required when the calibrator uses "consensus"

    def __post_init__(self) -> None:
        """The parts must fit together: an index when the calibrator uses it, in the domain check's space."""
        if "consensus" in self.calibrator.features and self.neighbours is None:
            raise ConfidenceError("the calibrator uses the neighbour consensus but no neighbour index was given")
        if self.neighbours is not None and self.neighbours.coords.shape[1] != self.domain.components.shape[0]:
            raise ConfidenceError(f"the neighbour index has {self.neighbours.coords.shape[1]}-d coordinates but the "
                                  f"domain check projects to {self.domain.components.shape[0]}")

    @classmethod
    def load(cls, model_dir: str | Path) -> "ConfidenceModel":
        """``model_dir/confidence.json`` plus the domain check and neighbour index it names (relative paths)."""
        model_dir = Path(model_dir)
        path = model_dir / CONFIDENCE_FILE
        if not path.is_file():
            raise ConfidenceError(f"{path}: missing; fit it with `python -m captioner calibrate "
                                  f"--model {model_dir}`")
        calibrator = Calibrator.load(path)
        try:
            domain = DomainCheck.load((model_dir / calibrator.domain_file).resolve())
        except DomainError as err:
            raise ConfidenceError(str(err)) from err
        neighbours = None
        if "consensus" in calibrator.features:
            neighbours = NeighbourIndex.load((model_dir / calibrator.neighbours_file).resolve())
        digest = domain_digest(domain)
        expected = calibrator.info.get("domain_digest")
        if neighbours is not None:  # an index without a digest (older files) is trusted as before
            built_for = neighbours.info.get("domain_digest")
            if built_for and built_for != digest:
                raise ConfidenceError(f"{calibrator.neighbours_file}: built for another {DOMAIN_FILE} (digest "
                                      f"{built_for[:12]}…, not {digest[:12]}…); rebuild it with "
                                      f"`{REBUILD_NEIGHBOURS}`")
        if expected and expected != digest:
            raise ConfidenceError(f"{path}: fitted with a different {DOMAIN_FILE} (digest {expected[:12]}…); "
                                  "refit the calibration")
        return cls(calibrator, domain, neighbours)

    def signals(self, features: np.ndarray, captions: Sequence) -> list[Signals]:
        """``compute_signals`` with this model's domain check and neighbour index."""
        return compute_signals(features, captions, self.domain, self.neighbours)

    def assess(self, features: np.ndarray, captions: Sequence) -> list[Assessment]:
        """One Assessment (confidence, band, in_domain, reason) per picture."""
        out = []
        for s in self.signals(features, captions):
            reason = None if s.in_domain else self.domain.verdict(s.distance).reason
            out.append(self.calibrator.assess(s, reason))
        return out
